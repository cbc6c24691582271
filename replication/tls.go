package replication

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// A node's certificate must speak for its Raft address, so that one node's
// certificate cannot pass for another's (a stolen key of node 2 cannot
// receive node 3's traffic, nor send batches in node 3's name):
//
//   - a certificate with URI SANs of the scheme replog speaks exactly for
//     the addresses they name: replog://host:port, the address spelt as in
//     Options.Peers. This binds nodes that share a host;
//   - a certificate with no such URI speaks for every port of the hosts in
//     its DNS and IP SANs, as in ordinary TLS: enough when each host runs
//     one node, and what an existing PKI issues.
//
// A dialler checks that the peer speaks for the address it dialled; a
// listener checks each message batch's source address (dragonboat routes
// replies to it). Snapshot chunks carry no address: they are accepted from
// any certificate of the CA, and dragonboat checks their deployment id.

// certURIScheme is the URI SAN scheme that binds a certificate to a Raft
// address (see internal/certs.CA.IssueNode).
const certURIScheme = "replog"

// ErrPeerIdentity reports a certificate that does not speak for the
// address its holder was dialled at or claims as its own.
var ErrPeerIdentity = errors.New("replog: certificate does not speak for the address")

// certSpeaksFor returns nil if cert may act as the node at addr.
func certSpeaksFor(cert *x509.Certificate, addr string) error {
	var bound []string
	for _, u := range cert.URIs {
		if u.Scheme != certURIScheme {
			continue
		}
		if u.Host == addr && u.Path == "" && u.Opaque == "" && u.User == nil {
			return nil
		}
		bound = append(bound, u.String())
	}
	if len(bound) > 0 {
		return fmt.Errorf("%w: certificate %q is for %s, not %s", ErrPeerIdentity, cert.Subject.CommonName, strings.Join(bound, ", "), addr)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPeerIdentity, err)
	}
	if err := cert.VerifyHostname(host); err != nil {
		return fmt.Errorf("%w: certificate %q, address %s: %v", ErrPeerIdentity, cert.Subject.CommonName, addr, err)
	}
	return nil
}

// peerIdentity is the certificate of an inbound connection's peer and the
// last source address it was found to speak for. Used by one goroutine.
type peerIdentity struct {
	cert    *x509.Certificate
	checked string
}

func (p *peerIdentity) check(addr string) error {
	if addr == p.checked {
		return nil
	}
	if err := certSpeaksFor(p.cert, addr); err != nil {
		return err
	}
	p.checked = addr
	return nil
}

// CheckTLS loads the files as [Open] will and checks that the certificate
// speaks for the node's own Raft address self, which every peer will check.
func CheckTLS(f *TLSFiles, self string) error {
	_, err := loadTLS(f, self)
	return err
}

// tlsConfig holds a node's mutual-TLS settings for [tcpTransport].
type tlsConfig struct {
	server *tls.Config
	cert   tls.Certificate
	roots  *x509.CertPool
}

// loadTLS reads the CA, the node's certificate and its key, and checks that
// the certificate speaks for self (unless self is empty).
func loadTLS(f *TLSFiles, self string) (*tlsConfig, error) {
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("replog: TLS: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("replog: TLS: no certificate in %s", f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("replog: TLS: %w", err)
	}
	if cert.Leaf == nil {
		return nil, errors.New("replog: TLS: certificate did not parse")
	}
	if self != "" {
		if err := certSpeaksFor(cert.Leaf, self); err != nil {
			return nil, fmt.Errorf("replog: TLS: this node's own %w", err)
		}
	}
	return &tlsConfig{
		cert:  cert,
		roots: roots,
		server: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    roots,
		},
	}, nil
}

// client returns the configuration for dialling target: the peer must speak
// for target.
func (c *tlsConfig) client(target string) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("replog: TLS: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.cert},
		RootCAs:      c.roots,
		ServerName:   host,
		// Runs after the chain and host name were verified.
		VerifyConnection: func(cs tls.ConnectionState) error {
			return certSpeaksFor(cs.PeerCertificates[0], target)
		},
	}, nil
}
