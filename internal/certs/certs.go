// Package certs writes a throwaway certificate authority and node
// certificates for mutual TLS between replog nodes: for the cluster example
// and for tests. Production deployments bring their own PKI.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Files are the PEM files of one node (or of the CA, with Key and Cert).
type Files struct {
	CA, Cert, Key string
}

// CA is a certificate authority that can issue node certificates.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	CAFile  string
	dir     string
	counter int64
}

// NewCA creates a CA in dir (its certificate in dir/ca.pem).
func NewCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{cert: cert, key: key, CAFile: filepath.Join(dir, name+"-ca.pem"), dir: dir, counter: 1}
	return ca, writePEM(ca.CAFile, "CERTIFICATE", der)
}

// Issue writes a certificate and key for a node, valid for serving and as a
// client, for the given hosts (IP addresses or DNS names). Such a
// certificate speaks for any port of its hosts: replog binds it to a node
// only when one node runs per host.
func (ca *CA) Issue(name string, hosts ...string) (Files, error) {
	return ca.issue(name, hosts, nil)
}

// IssueNode writes a certificate and key that speak for exactly one Raft
// address (host:port, as in Options.Peers): a URI SAN replog://ADDR, which
// replog's transport checks against the address a peer was dialled at or
// claims as its source, plus the address's host as an IP or DNS SAN for
// ordinary TLS verification. Nodes sharing a host (and a CA) thus cannot
// pass for each other.
func (ca *CA) IssueNode(name, addr string) (Files, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return Files{}, fmt.Errorf("certs: %w", err)
	}
	return ca.issue(name, []string{host}, []*url.URL{{Scheme: "replog", Host: addr}})
}

func (ca *CA) issue(name string, hosts []string, uris []*url.URL) (Files, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, err
	}
	ca.counter++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.counter),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         uris,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Files{}, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Files{}, err
	}
	f := Files{CA: ca.CAFile, Cert: filepath.Join(ca.dir, name+".pem"), Key: filepath.Join(ca.dir, name+"-key.pem")}
	if err := writePEM(f.Cert, "CERTIFICATE", der); err != nil {
		return Files{}, err
	}
	return f, writePEM(f.Key, "EC PRIVATE KEY", kb)
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
