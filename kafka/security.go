package replogkafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"

	"github.com/replog/replog"
)

// ErrInsecureListener is returned (wrapped, with
// [replog.ErrInvalidConfig]) by [Listen] for a non-loopback address
// without TLS, or with TLS but no way to know who the client is (neither
// mutual TLS nor SASL). [Options.InsecureAllowOpenNetwork] lifts it.
var ErrInsecureListener = errors.New("replogkafka: a listener on a non-loopback address needs TLS and client authentication (mutual TLS or SASL)")

// SASLOptions configures SASL authentication (Kafka's SASL_SSL listener,
// or SASL_PLAINTEXT without TLS). With it, a connection may send only
// ApiVersions, SaslHandshake and SaslAuthenticate until it has
// authenticated; any other request closes it, as Kafka does. A failed
// authentication is answered SASL_AUTHENTICATION_FAILED and the
// connection closed.
type SASLOptions struct {
	// Credentials returns the SCRAM credential of user for mechanism
	// ([ScramSHA256] or [ScramSHA512]), and false if the user has none.
	// [PasswordCredentials] makes one from fixed passwords. Required.
	// It is called from connections' goroutines, possibly at once, so it
	// must be safe for concurrent use; it delays only the connection
	// authenticating, but should not block for long.
	Credentials func(mechanism, user string) (ScramCredential, bool)
	// Mechanisms are those offered, as Kafka's sasl.enabled.mechanisms.
	// Default: [ScramSHA512] and [ScramSHA256]. [Plain] is allowed only
	// with [Options.TLS].
	Mechanisms []string
}

// ServerTLSConfig loads a server certificate and key (PEM files) into a
// TLS configuration for [Options.TLS]. With clientCAFile, clients must
// present a certificate that this CA signed (mutual TLS); without it,
// clients are not asked for one. TLS 1.2 at least. Errors wrap
// [replog.ErrInvalidConfig].
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: TLS certificate: %v", replog.ErrInvalidConfig, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pool, err := loadCertPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: TLS CA: %v", replog.ErrInvalidConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: TLS CA %s holds no PEM certificate", replog.ErrInvalidConfig, file)
	}
	return pool, nil
}

// checkSecurity validates the TLS and SASL options, and refuses a
// non-loopback addr without TLS and client authentication, unless
// InsecureAllowOpenNetwork. It fills the default SASL mechanisms into o.
func (o *Options) checkSecurity(addr string) error {
	if o.TLS != nil {
		if len(o.TLS.Certificates) == 0 && o.TLS.GetCertificate == nil && o.TLS.GetConfigForClient == nil {
			return fmt.Errorf("%w: Options.TLS has no certificate", replog.ErrInvalidConfig)
		}
		// Ours to change (ALPN, say) without touching the caller's.
		o.TLS = o.TLS.Clone()
	}
	if o.SASL != nil {
		s := *o.SASL
		if s.Credentials == nil {
			return fmt.Errorf("%w: SASLOptions.Credentials is nil", replog.ErrInvalidConfig)
		}
		if len(s.Mechanisms) == 0 {
			s.Mechanisms = []string{ScramSHA512, ScramSHA256}
		}
		s.Mechanisms = slices.Clone(s.Mechanisms)
		for _, m := range s.Mechanisms {
			switch m {
			case ScramSHA256, ScramSHA512:
			case Plain:
				if o.TLS == nil {
					return fmt.Errorf("%w: SASL PLAIN sends passwords as they are: it needs Options.TLS", replog.ErrInvalidConfig)
				}
			default:
				return fmt.Errorf("%w: SASL mechanism %q (want %s, %s or %s)", replog.ErrInvalidConfig, m, ScramSHA256, ScramSHA512, Plain)
			}
		}
		o.SASL = &s
	}
	if o.InsecureAllowOpenNetwork || loopbackAddr(addr) || o.secured() {
		return nil
	}
	if o.TLS == nil {
		return fmt.Errorf("%w: %w: %q without Options.TLS", replog.ErrInvalidConfig, ErrInsecureListener, addr)
	}
	return fmt.Errorf("%w: %w: %q with TLS that does not verify client certificates (ClientAuth %v) and no SASL", replog.ErrInvalidConfig, ErrInsecureListener, addr, o.TLS.ClientAuth)
}

// secured: TLS, and clients authenticated by certificate or SASL.
func (o *Options) secured() bool {
	return o.TLS != nil && (o.SASL != nil || o.TLS.ClientAuth == tls.RequireAndVerifyClientCert)
}

// checkBound checks the address ln is bound to, in case a name such as
// "localhost" resolved off loopback, and warns of an open one.
func (o *Options) checkBound(ln net.Listener, addr string, logger *slog.Logger) error {
	if o.secured() || boundLoopback(ln.Addr()) {
		return nil
	}
	if !o.InsecureAllowOpenNetwork {
		return fmt.Errorf("%w: %w: %q is bound to %s", replog.ErrInvalidConfig, ErrInsecureListener, addr, ln.Addr())
	}
	logger.Warn("replogkafka: serving a non-loopback address without TLS or client authentication (InsecureAllowOpenNetwork): anyone who reaches it can read and change every topic",
		"addr", ln.Addr().String())
	return nil
}

// loopbackAddr reports whether addr (host:port) can only be reached from
// this machine: a loopback IP (127.0.0.0/8, ::1) or "localhost". An empty
// host, 0.0.0.0 and :: bind every interface and are not loopback; nor is
// any other name, since it may resolve to anything.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// boundLoopback reports whether a listener bound to a is on loopback: the
// check after binding, in case "localhost" resolved elsewhere.
func boundLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
