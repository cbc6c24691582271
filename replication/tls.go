package replication

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// tlsConfig holds a node's mutual-TLS settings for [tcpTransport].
type tlsConfig struct {
	server *tls.Config
	cert   tls.Certificate
	roots  *x509.CertPool
}

// loadTLS reads the CA, the node's certificate and its key.
func loadTLS(f *TLSFiles) (*tlsConfig, error) {
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

// client returns the configuration for dialling target.
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
	}, nil
}
