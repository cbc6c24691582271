package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	replogkafka "github.com/replog/replog/kafka"
)

// serveSecurity are serve's TLS and SASL flags.
type serveSecurity struct {
	cert, key, clientCA string
	users               string
	mechanisms          string
	insecure            bool
}

func (s *serveSecurity) register(fs *flag.FlagSet) {
	fs.StringVar(&s.cert, "tls-cert", "", "PEM `file` of the listener's TLS certificate (with -tls-key: serve TLS)")
	fs.StringVar(&s.key, "tls-key", "", "PEM `file` of the listener's TLS private key")
	fs.StringVar(&s.clientCA, "tls-client-ca", "", "PEM `file` of the CA that signs client certificates: clients must present one (mutual TLS)")
	fs.StringVar(&s.users, "sasl-users", "", "`file` of user:password lines (# starts a comment): clients must authenticate with SASL as one of them")
	fs.StringVar(&s.mechanisms, "sasl-mechanisms", replogkafka.ScramSHA512+","+replogkafka.ScramSHA256, "comma-separated SASL `mechanisms` offered with -sasl-users: SCRAM-SHA-256, SCRAM-SHA-512, PLAIN (PLAIN needs TLS)")
	fs.BoolVar(&s.insecure, "insecure-allow-open-network", false, "serve a non-loopback -kafka address without TLS or without client authentication: anyone who reaches it can read and change every topic")
}

// apply sets the listener's security options from the flags.
func (s *serveSecurity) apply(o *replogkafka.Options, logger *slog.Logger) error {
	o.InsecureAllowOpenNetwork = s.insecure
	switch {
	case s.cert != "" && s.key != "":
		cfg, err := replogkafka.ServerTLSConfig(s.cert, s.key, s.clientCA)
		if err != nil {
			return err
		}
		o.TLS = cfg
	case s.cert != "" || s.key != "" || s.clientCA != "":
		return usagef("TLS needs both -tls-cert and -tls-key (and -tls-client-ca for mutual TLS)")
	}
	if s.users == "" {
		return nil
	}
	passwords, err := readUsers(s.users, logger)
	if err != nil {
		return err
	}
	creds, err := replogkafka.PasswordCredentials(passwords)
	if err != nil {
		return fmt.Errorf("-sasl-users %s: %w", s.users, err)
	}
	o.SASL = &replogkafka.SASLOptions{Credentials: creds, Mechanisms: splitList(s.mechanisms)}
	return nil
}

// readUsers reads user:password lines. The password is everything after
// the first colon, spaces included.
func readUsers(path string, logger *slog.Logger) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-sasl-users: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		logger.Warn("replog: the -sasl-users file is readable by other users than its owner; chmod 600 it", "file", path, "mode", fi.Mode().Perm().String())
	}
	users := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		user, pass, ok := strings.Cut(line, ":")
		user = strings.TrimSpace(user)
		if !ok || user == "" || pass == "" {
			return nil, fmt.Errorf("-sasl-users %s line %d: want user:password", path, n)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("-sasl-users %s line %d: user %q again", path, n, user)
		}
		users[user] = pass
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("-sasl-users %s: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("-sasl-users %s: no user", path)
	}
	return users, nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// clientSecurity are the client subcommands' TLS and SASL flags. The
// password never appears on the command line: it comes from
// $REPLOG_SASL_PASSWORD or a file.
type clientSecurity struct {
	tls             bool
	ca, cert, key   string
	serverName      string
	mechanism, user string
	passwordFile    string
	getenv          func(string) string
}

func (c *clientSecurity) register(fs *flag.FlagSet, e env) {
	c.getenv = e.getenv
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS, trusting the system's CAs (implied by the other -tls flags)")
	fs.StringVar(&c.ca, "tls-ca", "", "PEM `file` of the CA that signs the brokers' certificates")
	fs.StringVar(&c.cert, "tls-cert", "", "PEM `file` of a client certificate, for mutual TLS (with -tls-key)")
	fs.StringVar(&c.key, "tls-key", "", "PEM `file` of the client certificate's private key")
	fs.StringVar(&c.serverName, "tls-server-name", "", "`name` the brokers' certificates must hold (default: the host dialled)")
	fs.StringVar(&c.mechanism, "sasl-mechanism", "", "authenticate with SASL `mechanism` SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (the password from $REPLOG_SASL_PASSWORD or -sasl-password-file)")
	fs.StringVar(&c.user, "sasl-user", e.getenv("REPLOG_SASL_USER"), "SASL `user` (default $REPLOG_SASL_USER)")
	fs.StringVar(&c.passwordFile, "sasl-password-file", "", "`file` whose first line is the SASL password (default: $REPLOG_SASL_PASSWORD)")
}

// opts are the franz-go options of the flags.
func (c *clientSecurity) opts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if c.tls || c.ca != "" || c.cert != "" || c.key != "" || c.serverName != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName}
		if c.ca != "" {
			pem, err := os.ReadFile(c.ca)
			if err != nil {
				return nil, fmt.Errorf("-tls-ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("-tls-ca %s holds no PEM certificate", c.ca)
			}
		}
		if (c.cert == "") != (c.key == "") {
			return nil, usagef("a client certificate needs both -tls-cert and -tls-key")
		}
		if c.cert != "" {
			cert, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				return nil, fmt.Errorf("-tls-cert: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if c.mechanism == "" {
		return opts, nil
	}
	if c.user == "" {
		return nil, usagef("-sasl-mechanism needs -sasl-user (or $REPLOG_SASL_USER)")
	}
	pass := c.getenv("REPLOG_SASL_PASSWORD")
	if c.passwordFile != "" {
		b, err := os.ReadFile(c.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("-sasl-password-file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		pass = strings.TrimRight(line, "\r")
	}
	if pass == "" {
		return nil, usagef("-sasl-mechanism needs a password in $REPLOG_SASL_PASSWORD or -sasl-password-file")
	}
	switch strings.ToUpper(c.mechanism) {
	case replogkafka.ScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.user, Pass: pass}.AsSha256Mechanism()))
	case replogkafka.ScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.user, Pass: pass}.AsSha512Mechanism()))
	case replogkafka.Plain:
		opts = append(opts, kgo.SASL(plain.Auth{User: c.user, Pass: pass}.AsMechanism()))
	default:
		return nil, usagef("-sasl-mechanism %q: want SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN", c.mechanism)
	}
	return opts, nil
}
