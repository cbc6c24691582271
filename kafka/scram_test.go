package replogkafka

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/replog/replog"
)

func testCredentials(t testing.TB) func(mechanism, user string) (ScramCredential, bool) {
	t.Helper()
	creds, err := PasswordCredentials(map[string]string{"alice": "s3cret", "bob,=eq": "pa=ss,word"})
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func newTestSession(t testing.TB, mechanism string) saslSession {
	t.Helper()
	s := &Server{opts: Options{SASL: &SASLOptions{Credentials: testCredentials(t)}}, fakeKey: []byte("fake")}
	return s.newSASLSession(mechanism)
}

// exchange drives franz-go's client mechanism against a server session,
// as a connection would, and returns the first error on either side.
func exchange(t *testing.T, client sasl.Mechanism, server saslSession) error {
	t.Helper()
	sess, msg, err := client.Authenticate(context.Background(), "127.0.0.1:9092")
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		resp, done, err := server.Next(msg)
		if err != nil {
			return err
		}
		cdone, next, err := sess.Challenge(resp)
		if err != nil {
			return err
		}
		if done != cdone {
			t.Fatalf("server done %v, client done %v", done, cdone)
		}
		if done {
			return nil
		}
		msg = next
	}
	t.Fatal("exchange did not end")
	return nil
}

// TestSASLExchanges checks the server sides of SCRAM and PLAIN against
// franz-go's clients: the right password authenticates (and the client
// verifies the server's signature), a wrong one or an unknown user does
// not, with the same error.
func TestSASLExchanges(t *testing.T) {
	for _, tc := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"right", "alice", "s3cret", true},
		{"escaped name", "bob,=eq", "pa=ss,word", true},
		{"wrong password", "alice", "secret", false},
		{"unknown user", "mallory", "s3cret", false},
	} {
		for _, mech := range []string{ScramSHA256, ScramSHA512, Plain} {
			t.Run(tc.name+"/"+mech, func(t *testing.T) {
				var client sasl.Mechanism
				switch mech {
				case ScramSHA256:
					client = scram.Auth{User: tc.user, Pass: tc.pass}.AsSha256Mechanism()
				case ScramSHA512:
					client = scram.Auth{User: tc.user, Pass: tc.pass}.AsSha512Mechanism()
				default:
					client = plain.Auth{User: tc.user, Pass: tc.pass}.AsMechanism()
				}
				server := newTestSession(t, mech)
				err := exchange(t, client, server)
				if tc.ok {
					if err != nil {
						t.Fatal(err)
					}
					if server.User() != tc.user {
						t.Fatalf("user %q, want %q", server.User(), tc.user)
					}
					return
				}
				if !errors.Is(err, errSASL) {
					t.Fatalf("got %v, want errSASL", err)
				}
				if !strings.Contains(err.Error(), "invalid credentials") {
					t.Fatalf("got %v: an unknown user and a wrong password must fail alike", err)
				}
			})
		}
	}
}

// TestScramMalformed: every malformed client message is an errSASL, never
// a panic, and ends the exchange.
func TestScramMalformed(t *testing.T) {
	const first = "n,,n=alice,r=abc"
	for _, tc := range []struct {
		name         string
		first, final string // final is sent only if first is accepted
	}{
		{"empty", "", ""},
		{"no gs2 header", "n=alice,r=abc", ""},
		{"channel binding", "p=tls-unique,,n=alice,r=abc", ""},
		{"bad cbind flag", "x,,n=alice,r=abc", ""},
		{"no user", "n,,r=abc", ""},
		{"empty user", "n,,n=,r=abc", ""},
		{"bad escape", "n,,n=al=ice,r=abc", ""},
		{"truncated escape", "n,,n=alice=2,r=abc", ""},
		{"mandatory extension", "n,,m=x,n=alice,r=abc", ""},
		{"no nonce", "n,,n=alice", ""},
		{"empty nonce", "n,,n=alice,r=", ""},
		{"nonce with control byte", "n,,n=alice,r=a\x01b", ""},
		{"other authzid", "n,a=bob,n=alice,r=abc", ""},
		{"bad authzid", "n,x=alice,n=alice,r=abc", ""},
		{"token auth", "n,,n=alice,r=abc,tokenauth=true", ""},
		{"not utf-8", "n,,n=\xff,r=abc", ""},
		{"final empty", first, ""},
		{"final no proof", first, "c=biws,r=abc"},
		{"final short", first, "p=AAAA"},
		{"final no cbind", first, "x=biws,r=abc,p=AAAA"},
		{"final wrong cbind", first, "c=eSws,r=abc,p=AAAA"},
		{"final bad base64 cbind", first, "c=!!!,r=abc,p=AAAA"},
		{"final wrong nonce", first, "c=biws,r=abd,p=AAAA"},
		{"final bad proof base64", first, "c=biws,r=NONCE,p=!!"},
		{"final short proof", first, "c=biws,r=NONCE,p=AAAA"},
		{"final wrong proof", first, "c=biws,r=NONCE,p=" + strings.Repeat("A", 43) + "="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSession(t, ScramSHA256).(*scramServer)
			resp, done, err := s.Next([]byte(tc.first))
			if tc.first != first {
				if !errors.Is(err, errSASL) || done {
					t.Fatalf("client-first %q: got %v, done %v; want errSASL", tc.first, err, done)
				}
				return
			}
			if err != nil {
				t.Fatalf("client-first: %v", err)
			}
			nonce := strings.TrimPrefix(strings.Split(string(resp), ",")[0], "r=")
			final := strings.ReplaceAll(tc.final, "NONCE", nonce)
			if _, done, err := s.Next([]byte(final)); !errors.Is(err, errSASL) || done {
				t.Fatalf("client-final %q: got %v, done %v; want errSASL", final, err, done)
			}
			if _, _, err := s.Next([]byte(final)); !errors.Is(err, errSASL) {
				t.Fatalf("after the end: got %v, want errSASL", err)
			}
		})
	}
}

// TestPlainMalformed: malformed PLAIN messages fail, never panic.
func TestPlainMalformed(t *testing.T) {
	for _, msg := range []string{"", "alice", "\x00alice", "\x00alice\x00", "\x00\x00pw", "bob\x00alice\x00s3cret", "\x00alice\x00s3cret\x00", "\x00al\xffice\x00s3cret"} {
		if _, done, err := newTestSession(t, Plain).Next([]byte(msg)); !errors.Is(err, errSASL) || done {
			t.Errorf("%q: got %v, done %v; want errSASL", msg, err, done)
		}
	}
}

// TestScramCredentialOptions: bad arguments are ErrInvalidConfig.
func TestScramCredentialOptions(t *testing.T) {
	for _, tc := range []struct {
		mech  string
		iters int
	}{{"SCRAM-SHA-1", 0}, {ScramSHA256, 100}, {ScramSHA512, 1 << 20}} {
		if _, err := NewScramCredential(tc.mech, "pw", tc.iters); !errors.Is(err, replog.ErrInvalidConfig) {
			t.Errorf("%s, %d iterations: got %v, want ErrInvalidConfig", tc.mech, tc.iters, err)
		}
	}
	for _, pw := range []map[string]string{{"": "pw"}, {"alice": ""}, {"\xff": "pw"}} {
		if _, err := PasswordCredentials(pw); !errors.Is(err, replog.ErrInvalidConfig) {
			t.Errorf("%q: got %v, want ErrInvalidConfig", pw, err)
		}
	}
	c, err := NewScramCredential(ScramSHA512, "pw", 8192)
	if err != nil || c.Iterations != 8192 || len(c.Salt) != 32 || len(c.StoredKey) != 64 || len(c.ServerKey) != 64 {
		t.Fatalf("got %+v, %v", c, err)
	}
}

// FuzzScramServer feeds arbitrary client-first and client-final messages
// to the SCRAM server: it must never panic, and must never authenticate
// (no fuzzer finds a SHA-256 preimage).
func FuzzScramServer(f *testing.F) {
	f.Add([]byte("n,,n=alice,r=abc"), []byte("c=biws,r=abc,p=AAAA"))
	f.Add([]byte("y,a=alice,n=alice,r=x,ext=1"), []byte("c=eSxhPWFsaWNlLA==,r=x,p="))
	f.Add([]byte("n,,n=mallory,r=abc"), []byte(""))
	creds := testCredentials(f)
	f.Fuzz(func(t *testing.T, first, final []byte) {
		s := &scramServer{mechanism: ScramSHA256, lookup: creds, fakeKey: []byte("k")}
		s.h, _ = scramHash(ScramSHA256)
		resp, _, err := s.Next(first)
		if err != nil {
			return
		}
		// Put the server's nonce where the client's final names it.
		nonce := strings.TrimPrefix(strings.Split(string(resp), ",")[0], "r=")
		final = []byte(strings.ReplaceAll(string(final), "r=abc", "r="+nonce))
		if _, done, err := s.Next(final); done || err == nil {
			t.Fatalf("authenticated with %q, %q", first, final)
		}
	})
}

// TestScramLibrdkafkaNonce: librdkafka's client-final repeats its own
// nonce before the one server-first sent, and authenticates with Kafka;
// it must here too, and its proof must still be checked.
func TestScramLibrdkafkaNonce(t *testing.T) {
	for _, tc := range []struct {
		pass string
		ok   bool
	}{{"s3cret", true}, {"secret", false}} {
		s := newTestSession(t, ScramSHA256).(*scramServer)
		const cnonce = "rOprNGfwEbeRWgbNEkqO"
		bare := "n=alice,r=" + cnonce
		sf, _, err := s.Next([]byte("n,," + bare))
		if err != nil {
			t.Fatal(err)
		}
		attrs := strings.Split(string(sf), ",")
		nonce := strings.TrimPrefix(attrs[0], "r=")
		salt, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(attrs[1], "s="))
		if err != nil {
			t.Fatal(err)
		}
		iters, err := strconv.Atoi(strings.TrimPrefix(attrs[2], "i="))
		if err != nil {
			t.Fatal(err)
		}
		salted, err := pbkdf2.Key(sha256.New, tc.pass, salt, iters, sha256.Size)
		if err != nil {
			t.Fatal(err)
		}
		withoutProof := "c=biws,r=" + cnonce + nonce // as librdkafka builds it
		authMsg := bare + "," + string(sf) + "," + withoutProof
		clientKey := hmacOf(sha256.New, salted, "Client Key")
		proof := hmacOf(sha256.New, hashOf(sha256.New, clientKey), authMsg)
		for i := range proof {
			proof[i] ^= clientKey[i]
		}
		sfinal, done, err := s.Next([]byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)))
		if !tc.ok {
			if !errors.Is(err, errSASL) || !strings.Contains(err.Error(), "invalid credentials") {
				t.Fatalf("password %q: got %v, want invalid credentials", tc.pass, err)
			}
			continue
		}
		want := "v=" + base64.StdEncoding.EncodeToString(hmacOf(sha256.New, hmacOf(sha256.New, salted, "Server Key"), authMsg))
		if err != nil || !done || string(sfinal) != want {
			t.Fatalf("got %q, %v, %v; want %q", sfinal, done, err, want)
		}
	}
}
