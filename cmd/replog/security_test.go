package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/certs"
	replogkafka "github.com/replog/replog/kafka"
)

// runEnv runs the command line in-process with stdin and the given
// environment.
func runEnv(t *testing.T, vars map[string]string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, env{strings.NewReader(stdin), &out, &errb, func(k string) string { return vars[k] }})
	return result{code, out.String(), errb.String()}
}

// testCerts writes a CA with a server certificate for loopback and a
// client certificate.
func testCerts(t *testing.T) (server, client certs.Files) {
	t.Helper()
	ca, err := certs.NewCA(t.TempDir(), "kafka")
	if err != nil {
		t.Fatal(err)
	}
	if server, err = ca.Issue("server", "127.0.0.1", "localhost"); err != nil {
		t.Fatal(err)
	}
	if client, err = ca.Issue("client"); err != nil {
		t.Fatal(err)
	}
	return server, client
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadUsers(t *testing.T) {
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		file string
		want map[string]string // nil: an error
	}{
		{"alice:s3cret\n# a comment\n\n  bob : pass word:with colon\r\n", map[string]string{"alice": "s3cret", "bob": " pass word:with colon"}},
		{"alice\n", nil},
		{":pw\n", nil},
		{"alice:\n", nil},
		{"alice:a\nalice:b\n", nil},
		{"# nobody\n", nil},
	} {
		got, err := readUsers(writeFile(t, tc.file), discard)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q: no error, got %q", tc.file, got)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("%q: got %q, %v; want %q", tc.file, got, err, tc.want)
		}
	}
	if _, err := readUsers(filepath.Join(t.TempDir(), "missing"), discard); err == nil {
		t.Error("a missing file: no error")
	}
}

func TestServeSecurityFlags(t *testing.T) {
	server, _ := testCerts(t)
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"-kafka", "0.0.0.0:0"}, exitError, "-insecure-allow-open-network"},
		{[]string{"-kafka", ":0", "-tls-cert", server.Cert, "-tls-key", server.Key}, exitError, "client authentication"},
		{[]string{"-tls-cert", server.Cert}, exitUsage, "-tls-key"},
		{[]string{"-sasl-users", filepath.Join(t.TempDir(), "missing")}, exitError, "-sasl-users"},
		{[]string{"-sasl-users", writeFile(t, "alice:pw\n"), "-sasl-mechanisms", "PLAIN"}, exitError, "needs Options.TLS"},
	} {
		args := append([]string{"serve", "-dir", t.TempDir()}, tc.args...)
		r := runEnv(t, nil, "", args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.says) {
			t.Errorf("replog %q: exit %d, stderr %q; want exit %d saying %q", args, r.code, r.stderr, tc.code, tc.says)
		}
	}
}

// TestSecuredClientCommands: the client subcommands reach a listener
// with TLS and SCRAM, and one with mutual TLS, through their flags.
func TestSecuredClientCommands(t *testing.T) {
	server, client := testCerts(t)
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	listen := func(o replogkafka.Options) string {
		t.Helper()
		srv, err := replogkafka.Listen(l, "127.0.0.1:0", &o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		return srv.Addr().String()
	}
	creds, err := replogkafka.PasswordCredentials(map[string]string{"alice": "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := replogkafka.ServerTLSConfig(server.Cert, server.Key, "")
	if err != nil {
		t.Fatal(err)
	}
	scramAddr := listen(replogkafka.Options{AutoCreateTopics: true, TLS: tlsCfg, SASL: &replogkafka.SASLOptions{Credentials: creds}})
	mtlsCfg, err := replogkafka.ServerTLSConfig(server.Cert, server.Key, server.CA)
	if err != nil {
		t.Fatal(err)
	}
	mtlsAddr := listen(replogkafka.Options{AutoCreateTopics: true, TLS: mtlsCfg})

	scramEnv := map[string]string{"REPLOG_BROKERS": scramAddr, "REPLOG_SASL_PASSWORD": "s3cret"}
	scram := []string{"-tls-ca", server.CA, "-sasl-mechanism", "SCRAM-SHA-512", "-sasl-user", "alice"}
	must := func(vars map[string]string, stdin string, args ...string) string {
		t.Helper()
		r := runEnv(t, vars, stdin, args...)
		if r.code != exitOK {
			t.Fatalf("replog %q: exit %d\nstderr: %s", args, r.code, r.stderr)
		}
		return r.stdout
	}
	must(scramEnv, "", append([]string{"topic", "create", "sec"}, scram...)...)
	must(scramEnv, "one\ntwo\n", append([]string{"produce", "sec"}, scram...)...)
	if out := must(scramEnv, "", append([]string{"consume", "sec", "-from", "earliest", "-n", "2"}, scram...)...); !strings.Contains(out, "one") || !strings.Contains(out, "two") {
		t.Fatalf("consumed %q", out)
	}
	pwFile := writeFile(t, "s3cret\nignored\n")
	must(map[string]string{"REPLOG_BROKERS": scramAddr}, "", "topic", "list", "-tls-ca", server.CA, "-sasl-mechanism", "SCRAM-SHA-256", "-sasl-user", "alice", "-sasl-password-file", pwFile)

	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
		code int
		says string
	}{
		{"wrong password", map[string]string{"REPLOG_BROKERS": scramAddr, "REPLOG_SASL_PASSWORD": "secret"}, scram, exitError, "SASL_AUTHENTICATION_FAILED"},
		{"no password", map[string]string{"REPLOG_BROKERS": scramAddr}, scram, exitUsage, "REPLOG_SASL_PASSWORD"},
		{"unknown mechanism", scramEnv, []string{"-tls", "-sasl-mechanism", "GSSAPI", "-sasl-user", "alice"}, exitUsage, "GSSAPI"},
		{"no certificate", map[string]string{"REPLOG_BROKERS": mtlsAddr}, []string{"-tls-ca", server.CA}, exitError, ""},
		{"half a certificate", map[string]string{"REPLOG_BROKERS": mtlsAddr}, []string{"-tls-cert", client.Cert}, exitUsage, "-tls-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var out, errb bytes.Buffer
			args := append([]string{"topic", "list"}, tc.args...)
			code := run(ctx, args, env{strings.NewReader(""), &out, &errb, func(k string) string { return tc.vars[k] }})
			if code != tc.code || !strings.Contains(errb.String(), tc.says) {
				t.Fatalf("exit %d, stderr %q; want exit %d saying %q", code, errb.String(), tc.code, tc.says)
			}
		})
	}
	mtls := []string{"-tls-ca", server.CA, "-tls-cert", client.Cert, "-tls-key", client.Key}
	mtlsEnv := map[string]string{"REPLOG_BROKERS": mtlsAddr}
	must(mtlsEnv, "three\n", append([]string{"produce", "sec"}, mtls...)...)
	if out := must(mtlsEnv, "", append([]string{"consume", "sec", "-from", "earliest", "-n", "3"}, mtls...)...); !strings.Contains(out, "three") {
		t.Fatalf("consumed %q", out)
	}
}

// TestServeSecured runs "replog serve" with TLS and SCRAM users, and the
// client subcommands against it.
func TestServeSecured(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the command")
	}
	server, _ := testCerts(t)
	users := writeFile(t, "alice:s3cret\n")
	n := startServe(t, t.TempDir(), "-tls-cert", server.Cert, "-tls-key", server.Key, "-sasl-users", users)
	vars := map[string]string{"REPLOG_BROKERS": n.addr, "REPLOG_SASL_USER": "alice", "REPLOG_SASL_PASSWORD": "s3cret"}
	flags := []string{"-tls-ca", server.CA, "-sasl-mechanism", "SCRAM-SHA-256"}
	if r := runEnv(t, vars, "hello\n", append([]string{"produce", "greet"}, flags...)...); r.code != exitOK {
		t.Fatalf("produce: exit %d, stderr %s\nserver:\n%s", r.code, r.stderr, n.stderr)
	}
	if r := runEnv(t, vars, "", append([]string{"consume", "greet", "-from", "earliest", "-n", "1"}, flags...)...); r.code != exitOK || !strings.Contains(r.stdout, "hello") {
		t.Fatalf("consume: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	vars["REPLOG_SASL_PASSWORD"] = "wrong"
	if r := runEnv(t, vars, "", append([]string{"topic", "list"}, flags...)...); r.code != exitError || !strings.Contains(r.stderr, "SASL_AUTHENTICATION_FAILED") {
		t.Fatalf("wrong password: exit %d, stderr %s", r.code, r.stderr)
	}
	if code := n.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, n.stderr)
	}
}
