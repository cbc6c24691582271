package replogkafka_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/certs"
	replogkafka "github.com/replog/replog/kafka"
)

// testPKI is a throwaway CA with a server certificate for loopback and a
// client certificate.
type testPKI struct {
	server, client certs.Files
	roots          *x509.CertPool
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA(dir, "kafka")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue("server", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue("client")
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return testPKI{server: server, client: client, roots: roots}
}

// serverTLS is the listener's TLS configuration; mutual asks for client
// certificates signed by the CA.
func (p testPKI) serverTLS(t *testing.T, mutual bool) *tls.Config {
	t.Helper()
	ca := ""
	if mutual {
		ca = p.server.CA
	}
	cfg, err := replogkafka.ServerTLSConfig(p.server.Cert, p.server.Key, ca)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// clientTLS trusts the CA, and presents the client certificate if withCert.
func (p testPKI) clientTLS(t *testing.T, withCert bool) kgo.Opt {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.roots, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(p.client.Cert, p.client.Key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return kgo.DialTLSConfig(cfg)
}

// roundTrip creates a topic, produces a record and reads it back through
// cl: a client that gets through authentication does real work.
func roundTrip(t *testing.T, cl *kgo.Client, topic string) error {
	t.Helper()
	ctx := testCtx(t)
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 1, -1
	req.Topics = append(req.Topics, rt)
	if _, err := req.RequestWith(ctx, cl); err != nil {
		return err
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("secret")}).FirstErr(); err != nil {
		return err
	}
	cl.AddConsumeTopics(topic)
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return err
		}
		if rs := fs.Records(); len(rs) > 0 {
			if string(rs[0].Value) != "secret" {
				t.Fatalf("read %q", rs[0].Value)
			}
			return nil
		}
	}
}

// pingErr is the error of a client's first request, with a short
// timeout: franz-go retries a refused connection until then.
func pingErr(t *testing.T, srv *replogkafka.Server, opts ...kgo.Opt) error {
	t.Helper()
	cl := newClient(t, srv, append(opts, kgo.RequestRetries(0))...)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}

func TestTLS(t *testing.T) {
	pki := newPKI(t)
	srv := listen(t, openLog(t), &replogkafka.Options{TLS: pki.serverTLS(t, false)})
	if err := roundTrip(t, newClient(t, srv, pki.clientTLS(t, false), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), "tls"); err != nil {
		t.Fatal(err)
	}
	if err := pingErr(t, srv); err == nil {
		t.Fatal("a plaintext client got through to a TLS listener")
	}
}

func TestMutualTLS(t *testing.T) {
	pki := newPKI(t)
	srv := listen(t, openLog(t), &replogkafka.Options{TLS: pki.serverTLS(t, true)})
	if err := roundTrip(t, newClient(t, srv, pki.clientTLS(t, true), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), "mtls"); err != nil {
		t.Fatal(err)
	}
	if err := pingErr(t, srv, pki.clientTLS(t, false)); err == nil {
		t.Fatal("a client without a certificate got through mutual TLS")
	}
	// A certificate from another CA is refused too.
	other := newPKI(t)
	other.roots = pki.roots
	if err := pingErr(t, srv, other.clientTLS(t, true)); err == nil {
		t.Fatal("a client with a certificate of another CA got through mutual TLS")
	}
}

func saslOptions(t *testing.T, mechanisms ...string) *replogkafka.SASLOptions {
	t.Helper()
	creds, err := replogkafka.PasswordCredentials(map[string]string{"alice": "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	return &replogkafka.SASLOptions{Credentials: creds, Mechanisms: mechanisms}
}

func TestSASL(t *testing.T) {
	pki := newPKI(t)
	plainSrv := listen(t, openLog(t), &replogkafka.Options{SASL: saslOptions(t)})
	tlsSrv := listen(t, openLog(t), &replogkafka.Options{TLS: pki.serverTLS(t, false), SASL: saslOptions(t, replogkafka.ScramSHA256, replogkafka.ScramSHA512, replogkafka.Plain)})
	mechs := map[string]func(user, pass string) sasl.Mechanism{
		"SCRAM-SHA-256": func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha256Mechanism() },
		"SCRAM-SHA-512": func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha512Mechanism() },
		"PLAIN":         func(u, p string) sasl.Mechanism { return plain.Auth{User: u, Pass: p}.AsMechanism() },
	}
	for name, mech := range mechs {
		t.Run(name, func(t *testing.T) {
			srvs := map[string]*replogkafka.Server{"tls": tlsSrv}
			if name != "PLAIN" {
				srvs["plaintext"] = plainSrv
			}
			for over, srv := range srvs {
				var opts []kgo.Opt
				if over == "tls" {
					opts = append(opts, pki.clientTLS(t, false))
				}
				good := newClient(t, srv, append(opts, kgo.SASL(mech("alice", "s3cret")), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
				if err := roundTrip(t, good, "t-"+name+"-"+over); err != nil {
					t.Fatalf("over %s: %v", over, err)
				}
				for _, bad := range [][2]string{{"alice", "secret"}, {"mallory", "s3cret"}} {
					err := pingErr(t, srv, append(opts, kgo.SASL(mech(bad[0], bad[1])))...)
					if !errors.Is(err, kerr.SaslAuthenticationFailed) {
						t.Errorf("over %s, %s/%s: got %v, want SASL_AUTHENTICATION_FAILED", over, bad[0], bad[1], err)
					}
				}
				checkAlive(t, good)
			}
		})
	}
	// A SASL server refuses a client that does not authenticate.
	if err := pingErr(t, plainSrv); err == nil {
		t.Fatal("a client without SASL got through")
	}
}

// TestSASLStates speaks the protocol by hand: what may come before
// authentication, and what closes the connection.
func TestSASLStates(t *testing.T) {
	srv := listen(t, openLog(t), &replogkafka.Options{SASL: saslOptions(t, replogkafka.ScramSHA256)})
	good := newClient(t, srv, kgo.SASL(scram.Auth{User: "alice", Pass: "s3cret"}.AsSha256Mechanism()))
	checkAlive(t, good)

	handshake := func(mech string, version int16) *kmsg.SASLHandshakeRequest {
		r := kmsg.NewPtrSASLHandshakeRequest()
		r.Mechanism, r.Version = mech, version
		return r
	}
	t.Run("ApiVersions then Metadata", func(t *testing.T) {
		c := dial(t, srv)
		c.Write(frame(kmsg.NewPtrApiVersionsRequest(), 1))
		_, body := readResponse(t, c)
		resp := kmsg.NewPtrApiVersionsResponse()
		if err := resp.ReadFrom(body); err != nil {
			t.Fatal(err)
		}
		keys := map[int16]bool{}
		for _, k := range resp.ApiKeys {
			keys[k.ApiKey] = true
		}
		if !keys[kmsg.SASLHandshake.Int16()] || !keys[kmsg.SASLAuthenticate.Int16()] {
			t.Fatalf("ApiVersions does not list the SASL APIs: %v", resp.ApiKeys)
		}
		c.Write(frame(kmsg.NewPtrMetadataRequest(), 2))
		if !closedByServer(t, c) {
			t.Fatal("Metadata before authentication left the connection open")
		}
	})
	t.Run("Produce before authentication is not read", func(t *testing.T) {
		c := dial(t, srv)
		// Claims 50 MiB: refused on its header, before any body.
		c.Write([]byte{0x03, 0x20, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1})
		if !closedByServer(t, c) {
			t.Fatal("Produce before authentication left the connection open")
		}
	})
	t.Run("unsupported mechanism", func(t *testing.T) {
		c := dial(t, srv)
		c.Write(frame(handshake("GSSAPI", 1), 1))
		_, body := readResponse(t, c)
		resp := kmsg.NewPtrSASLHandshakeResponse()
		resp.Version = 1
		if err := resp.ReadFrom(body); err != nil {
			t.Fatal(err)
		}
		if resp.ErrorCode != kerr.UnsupportedSaslMechanism.Code || len(resp.SupportedMechanisms) != 1 || resp.SupportedMechanisms[0] != "SCRAM-SHA-256" {
			t.Fatalf("got %+v", resp)
		}
		if !closedByServer(t, c) {
			t.Fatal("the connection stayed open")
		}
	})
	t.Run("authenticate before handshake", func(t *testing.T) {
		c := dial(t, srv)
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.Version = 2
		req.SASLAuthBytes = []byte("n,,n=alice,r=abc")
		c.Write(frame(req, 1))
		_, body := readResponse(t, c)
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		resp.Version = 2
		if err := resp.ReadFrom(body[1:]); err != nil { // header v1: tags
			t.Fatal(err)
		}
		if resp.ErrorCode != kerr.IllegalSaslState.Code {
			t.Fatalf("error %d, want ILLEGAL_SASL_STATE", resp.ErrorCode)
		}
		if !closedByServer(t, c) {
			t.Fatal("the connection stayed open")
		}
	})
	t.Run("malformed client-first", func(t *testing.T) {
		c := dial(t, srv)
		c.Write(frame(handshake("SCRAM-SHA-256", 1), 1))
		readResponse(t, c)
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.SASLAuthBytes = []byte("n,,n=al=ice,r=")
		c.Write(frame(req, 2))
		_, body := readResponse(t, c)
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		if err := resp.ReadFrom(body); err != nil {
			t.Fatal(err)
		}
		if resp.ErrorCode != kerr.SaslAuthenticationFailed.Code {
			t.Fatalf("error %d, want SASL_AUTHENTICATION_FAILED", resp.ErrorCode)
		}
		if !closedByServer(t, c) {
			t.Fatal("the connection stayed open")
		}
	})
	t.Run("handshake v0 then raw tokens", func(t *testing.T) {
		c := dial(t, srv)
		c.Write(frame(handshake("SCRAM-SHA-256", 0), 1))
		_, body := readResponse(t, c)
		hresp := kmsg.NewPtrSASLHandshakeResponse()
		if err := hresp.ReadFrom(body); err != nil || hresp.ErrorCode != 0 {
			t.Fatalf("handshake v0: %+v, %v", hresp, err)
		}
		sess, tok, err := scram.Auth{User: "alice", Pass: "s3cret"}.AsSha256Mechanism().Authenticate(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		for done := false; !done; {
			c.Write(append(binaryLen(tok), tok...))
			resp := readToken(t, c)
			if done, tok, err = sess.Challenge(resp); err != nil {
				t.Fatal(err)
			}
		}
		// Authenticated: Kafka requests follow.
		c.Write(frame(kmsg.NewPtrMetadataRequest(), 9))
		if corr, _ := readResponse(t, c); corr != 9 {
			t.Fatalf("correlation %d", corr)
		}
	})
	t.Run("handshake v0 then a bad raw token", func(t *testing.T) {
		c := dial(t, srv)
		c.Write(frame(handshake("SCRAM-SHA-256", 0), 1))
		readResponse(t, c)
		c.Write(append(binaryLen([]byte("garbage")), "garbage"...))
		if !closedByServer(t, c) {
			t.Fatal("the connection stayed open")
		}
	})
	checkAlive(t, good)
}

func binaryLen(b []byte) []byte { return binary.BigEndian.AppendUint32(nil, uint32(len(b))) }

// readToken reads a raw SASL token: size and bytes, no header.
func readToken(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		t.Fatalf("reading a token: %v", err)
	}
	tok := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, tok); err != nil {
		t.Fatalf("reading a token: %v", err)
	}
	return tok
}

func TestSASLHandshakeTimeout(t *testing.T) {
	srv := listen(t, openLog(t), &replogkafka.Options{SASL: saslOptions(t), HandshakeTimeout: 100 * time.Millisecond})
	c := dial(t, srv)
	c.Write(frame(kmsg.NewPtrApiVersionsRequest(), 1))
	readResponse(t, c) // served, but the clock runs on
	if !closedByServer(t, c) {
		t.Fatal("a connection that never authenticated stayed open")
	}
}

func TestListenSecurity(t *testing.T) {
	pki := newPKI(t)
	l := openLog(t)
	creds := saslOptions(t)
	for _, tc := range []struct {
		name string
		addr string
		opts replogkafka.Options
		want error // nil: Listen succeeds
	}{
		{"loopback plaintext", "127.0.0.1:0", replogkafka.Options{}, nil},
		{"127.0.0.2 plaintext", "127.0.0.2:0", replogkafka.Options{}, nil},
		{"localhost plaintext", "localhost:0", replogkafka.Options{}, nil},
		{"all interfaces plaintext", "0.0.0.0:0", replogkafka.Options{}, replogkafka.ErrInsecureListener},
		{"empty host plaintext", ":0", replogkafka.Options{}, replogkafka.ErrInsecureListener},
		{"IPv6 any plaintext", "[::]:0", replogkafka.Options{}, replogkafka.ErrInsecureListener},
		{"host name plaintext", "example.invalid:0", replogkafka.Options{}, replogkafka.ErrInsecureListener},
		{"all interfaces TLS without client auth", "0.0.0.0:0", replogkafka.Options{TLS: pki.serverTLS(t, false)}, replogkafka.ErrInsecureListener},
		{"all interfaces SASL without TLS", "0.0.0.0:0", replogkafka.Options{SASL: creds}, replogkafka.ErrInsecureListener},
		{"all interfaces mutual TLS", "0.0.0.0:0", replogkafka.Options{TLS: pki.serverTLS(t, true)}, nil},
		{"all interfaces TLS and SASL", "0.0.0.0:0", replogkafka.Options{TLS: pki.serverTLS(t, false), SASL: creds}, nil},
		{"all interfaces opted out", "0.0.0.0:0", replogkafka.Options{InsecureAllowOpenNetwork: true}, nil},
		{"PLAIN without TLS", "127.0.0.1:0", replogkafka.Options{SASL: saslOptions(t, replogkafka.Plain)}, replog.ErrInvalidConfig},
		{"unknown mechanism", "127.0.0.1:0", replogkafka.Options{SASL: saslOptions(t, "GSSAPI")}, replog.ErrInvalidConfig},
		{"no credentials", "127.0.0.1:0", replogkafka.Options{SASL: &replogkafka.SASLOptions{}}, replog.ErrInvalidConfig},
		{"TLS without certificate", "127.0.0.1:0", replogkafka.Options{TLS: &tls.Config{}}, replog.ErrInvalidConfig},
		{"negative handshake timeout", "127.0.0.1:0", replogkafka.Options{HandshakeTimeout: -1}, replog.ErrInvalidConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := replogkafka.Listen(l, tc.addr, &tc.opts)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				srv.Close()
				return
			}
			if err == nil {
				srv.Close()
				t.Fatalf("Listen(%q) succeeded, want %v", tc.addr, tc.want)
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, replog.ErrInvalidConfig) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	for _, files := range [][3]string{
		{"missing.pem", pki.server.Key, ""},
		{pki.server.Cert, pki.server.Key, "missing.pem"},
		{pki.server.Cert, pki.server.Key, pki.server.Key}, // a key, not a certificate
	} {
		if _, err := replogkafka.ServerTLSConfig(files[0], files[1], files[2]); !errors.Is(err, replog.ErrInvalidConfig) {
			t.Errorf("ServerTLSConfig%q: got %v, want ErrInvalidConfig", files, err)
		}
	}
}

// TestTLSHandshakeTimeout: a client that connects to a TLS listener and
// never starts the handshake is closed.
func TestTLSHandshakeTimeout(t *testing.T) {
	pki := newPKI(t)
	srv := listen(t, openLog(t), &replogkafka.Options{TLS: pki.serverTLS(t, false), HandshakeTimeout: 100 * time.Millisecond})
	if !closedByServer(t, dial(t, srv)) {
		t.Fatal("a connection without a TLS handshake stayed open")
	}
}

// TestSASLWithoutSASL: a listener without SASL answers the SASL requests
// ILLEGAL_SASL_STATE, as Kafka's PLAINTEXT listener does, and keeps
// serving the connection.
func TestSASLWithoutSASL(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	c := dial(t, srv)
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, "SCRAM-SHA-256"
	c.Write(frame(hs, 1))
	_, body := readResponse(t, c)
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.Version = 1
	if err := resp.ReadFrom(body); err != nil || resp.ErrorCode != kerr.IllegalSaslState.Code {
		t.Fatalf("got %+v, %v; want ILLEGAL_SASL_STATE", resp, err)
	}
	c.Write(frame(kmsg.NewPtrMetadataRequest(), 2))
	if corr, _ := readResponse(t, c); corr != 2 {
		t.Fatalf("correlation %d", corr)
	}
}
