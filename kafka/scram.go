package replogkafka

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/replog/replog"
)

// SASL mechanism names, as Kafka spells them (sasl.enabled.mechanisms).
const (
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
	// Plain is SASL/PLAIN: the password travels as it is, so [Listen]
	// offers it only over TLS. It is checked against the user's SCRAM
	// credential, so no password is ever stored.
	Plain = "PLAIN"
)

// SCRAM iteration counts: Kafka's bounds for a SCRAM credential (it
// refuses fewer than 4096 or more than 16384 iterations). franz-go's client
// refuses a server that asks for fewer than 4096.
const (
	DefaultScramIterations = 4096
	maxScramIterations     = 16384
)

// ScramCredential is what a server keeps of a user's password for one
// SCRAM mechanism (RFC 5802 section 3), as Kafka's own ScramCredential,
// which "kafka-configs --add-config 'SCRAM-SHA-256=[password=...]'"
// stores: the password itself is not in it and cannot be recovered from
// it. Make one with [NewScramCredential].
type ScramCredential struct {
	Salt       []byte
	Iterations int    // PBKDF2 iterations, 4096 to 16384
	StoredKey  []byte // H(HMAC(SaltedPassword, "Client Key"))
	ServerKey  []byte // HMAC(SaltedPassword, "Server Key")
}

// NewScramCredential derives the credential of password for mechanism
// ([ScramSHA256] or [ScramSHA512]) with a random 32-byte salt and
// iterations rounds (0 means [DefaultScramIterations]). The error wraps
// [replog.ErrInvalidConfig] for an unknown mechanism or an iteration count
// out of range.
func NewScramCredential(mechanism, password string, iterations int) (ScramCredential, error) {
	h, ok := scramHash(mechanism)
	if !ok {
		return ScramCredential{}, fmt.Errorf("%w: SCRAM mechanism %q (want %s or %s)", replog.ErrInvalidConfig, mechanism, ScramSHA256, ScramSHA512)
	}
	if iterations == 0 {
		iterations = DefaultScramIterations
	}
	if iterations < DefaultScramIterations || iterations > maxScramIterations {
		return ScramCredential{}, fmt.Errorf("%w: SCRAM iterations %d (want %d to %d)", replog.ErrInvalidConfig, iterations, DefaultScramIterations, maxScramIterations)
	}
	salt := make([]byte, 32)
	rand.Read(salt) // never fails (crypto/rand)
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		// Only in FIPS 140-3 mode, for a short password.
		return ScramCredential{}, fmt.Errorf("%w: %v", replog.ErrInvalidConfig, err)
	}
	return ScramCredential{
		Salt:       salt,
		Iterations: iterations,
		StoredKey:  hashOf(h, hmacOf(h, salted, "Client Key")),
		ServerKey:  hmacOf(h, salted, "Server Key"),
	}, nil
}

// PasswordCredentials derives [ScramSHA256] and [ScramSHA512] credentials
// (see [NewScramCredential]) for each user's password and returns them as
// a lookup for [SASLOptions.Credentials]; the passwords are not kept. For
// a fixed set of users known at start; a program whose users change
// writes its own lookup over its own store of credentials.
func PasswordCredentials(passwords map[string]string) (func(mechanism, user string) (ScramCredential, bool), error) {
	creds := make(map[[2]string]ScramCredential, 2*len(passwords))
	for user, pass := range passwords {
		if user == "" || !utf8.ValidString(user) {
			return nil, fmt.Errorf("%w: SCRAM user name %q", replog.ErrInvalidConfig, user)
		}
		if pass == "" {
			return nil, fmt.Errorf("%w: empty password for SCRAM user %q", replog.ErrInvalidConfig, user)
		}
		for _, m := range []string{ScramSHA256, ScramSHA512} {
			c, err := NewScramCredential(m, pass, 0)
			if err != nil {
				return nil, err
			}
			creds[[2]string{m, user}] = c
		}
	}
	return func(mechanism, user string) (ScramCredential, bool) {
		c, ok := creds[[2]string{mechanism, user}]
		return c, ok
	}, nil
}

func scramHash(mechanism string) (func() hash.Hash, bool) {
	switch mechanism {
	case ScramSHA256:
		return sha256.New, true
	case ScramSHA512:
		return sha512.New, true
	}
	return nil, false
}

func hmacOf(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func hashOf(h func() hash.Hash, b []byte) []byte {
	d := h()
	d.Write(b)
	return d.Sum(nil)
}

// valid reports whether c can be used with hash h.
func (c ScramCredential) valid(h func() hash.Hash) bool {
	n := h().Size()
	return len(c.Salt) > 0 && c.Iterations >= DefaultScramIterations && c.Iterations <= maxScramIterations &&
		len(c.StoredKey) == n && len(c.ServerKey) == n
}

// errSASL is the cause of a failed SASL exchange: the client gets
// SASL_AUTHENTICATION_FAILED and its connection closes.
var errSASL = errors.New("replogkafka: SASL authentication failed")

// scramServer is the server side of one SCRAM exchange (RFC 5802, RFC
// 7677): client-first, server-first, client-final, server-final. As
// Kafka's, it speaks no channel binding and no authorization identity
// other than the user's own; it refuses delegation tokens (KIP-48's
// tokenauth extension). Not safe for concurrent use: a connection's
// reader drives it.
type scramServer struct {
	mechanism string
	h         func() hash.Hash
	lookup    func(mechanism, user string) (ScramCredential, bool)
	// fakeKey derives a salt for a user who has no credential, so that
	// server-first looks the same for every name and does not tell
	// which users exist (RFC 5802 section 9, "mock" exchange).
	fakeKey []byte

	step            int
	user            string
	cred            ScramCredential
	known           bool // the user has a valid credential
	gs2Header       string
	cnonce          string // the client's nonce
	nonce           string // client nonce + server nonce
	clientFirstBare string
	serverFirst     string
}

// User is the authenticated user, once the exchange succeeded.
func (s *scramServer) User() string { return s.user }

// Next takes the client's next message and returns the server's answer;
// done is true once the client is authenticated. An error (wrapping
// errSASL) ends the exchange: the client failed to authenticate, or sent
// a message that does not parse. It never panics, whatever msg holds.
func (s *scramServer) Next(msg []byte) (resp []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step++
		resp, err = s.clientFirst(msg)
		return resp, false, err
	case 1:
		s.step++
		resp, err = s.clientFinal(msg)
		return resp, err == nil, err
	}
	return nil, false, fmt.Errorf("%w: the SCRAM exchange is over", errSASL)
}

func (s *scramServer) clientFirst(msg []byte) ([]byte, error) {
	if !utf8.Valid(msg) {
		return nil, fmt.Errorf("%w: client-first-message is not UTF-8", errSASL)
	}
	m := string(msg)
	// gs2-header: cbind-flag "," [authzid] ","
	flag, rest, ok1 := strings.Cut(m, ",")
	authzid, bare, ok2 := strings.Cut(rest, ",")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: client-first-message has no GS2 header", errSASL)
	}
	switch {
	case flag == "n", flag == "y":
	case strings.HasPrefix(flag, "p="):
		return nil, fmt.Errorf("%w: channel binding is not supported", errSASL)
	default:
		return nil, fmt.Errorf("%w: bad GS2 channel binding flag %q", errSASL, flag)
	}
	s.gs2Header = m[:len(flag)+1+len(authzid)+1]
	attrs := strings.Split(bare, ",")
	if len(attrs) < 2 {
		return nil, fmt.Errorf("%w: client-first-message-bare has %d attributes, want at least 2", errSASL, len(attrs))
	}
	if strings.HasPrefix(attrs[0], "m=") {
		return nil, fmt.Errorf("%w: mandatory SCRAM extension not supported", errSASL)
	}
	user, ok := strings.CutPrefix(attrs[0], "n=")
	if !ok {
		return nil, fmt.Errorf("%w: client-first-message-bare does not start with n=", errSASL)
	}
	user, err := saslName(user)
	if err != nil {
		return nil, err
	}
	if authzid != "" {
		// Kafka accepts an authorization id only if it names the user.
		az, ok := strings.CutPrefix(authzid, "a=")
		if !ok {
			return nil, fmt.Errorf("%w: bad GS2 authzid %q", errSASL, authzid)
		}
		if az, err = saslName(az); err != nil {
			return nil, err
		}
		if az != user {
			return nil, fmt.Errorf("%w: authorization id %q is not the user %q", errSASL, az, user)
		}
	}
	cnonce, ok := strings.CutPrefix(attrs[1], "r=")
	if !ok || !validNonce(cnonce) {
		return nil, fmt.Errorf("%w: client-first-message-bare has no valid nonce", errSASL)
	}
	for _, ext := range attrs[2:] {
		if ext == "tokenauth=true" {
			return nil, fmt.Errorf("%w: delegation tokens are not supported", errSASL)
		}
	}
	s.user = user
	s.clientFirstBare = bare
	s.cred, s.known = s.lookup(s.mechanism, user)
	if s.known && !s.cred.valid(s.h) {
		return nil, fmt.Errorf("%w: the %s credential of user %q is malformed (salt, iterations or key lengths)", errSASL, s.mechanism, user)
	}
	if !s.known {
		s.cred = ScramCredential{
			Salt:       hmacOf(s.h, s.fakeKey, s.mechanism+"\x00"+user)[:32],
			Iterations: DefaultScramIterations,
		}
	}
	snonce := make([]byte, 24)
	rand.Read(snonce)
	s.cnonce = cnonce
	s.nonce = cnonce + base64.RawStdEncoding.EncodeToString(snonce)
	s.serverFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(s.cred.Salt) + ",i=" + strconv.Itoa(s.cred.Iterations)
	return []byte(s.serverFirst), nil
}

func (s *scramServer) clientFinal(msg []byte) ([]byte, error) {
	m := string(msg)
	i := strings.LastIndex(m, ",p=")
	if i < 0 {
		return nil, fmt.Errorf("%w: client-final-message has no proof", errSASL)
	}
	withoutProof, proof64 := m[:i], m[i+len(",p="):]
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 {
		return nil, fmt.Errorf("%w: client-final-message has %d attributes before the proof, want at least 2", errSASL, len(attrs))
	}
	cbind, ok := strings.CutPrefix(attrs[0], "c=")
	if !ok {
		return nil, fmt.Errorf("%w: client-final-message does not start with c=", errSASL)
	}
	if b, err := base64.StdEncoding.DecodeString(cbind); err != nil || string(b) != s.gs2Header {
		return nil, fmt.Errorf("%w: channel binding does not match the GS2 header", errSASL)
	}
	// RFC 5802 wants the nonce of server-first back. librdkafka sends its
	// own nonce followed by that one, which Kafka accepts (it checks that
	// the nonce ends with the one it sent). Both forms are taken; the
	// proof signs server-first and its fresh nonce either way, so neither
	// lets an exchange be replayed.
	if nonce, ok := strings.CutPrefix(attrs[1], "r="); !ok || nonce != s.nonce && nonce != s.cnonce+s.nonce {
		return nil, fmt.Errorf("%w: client-final-message nonce does not match", errSASL)
	}
	proof, err := base64.StdEncoding.DecodeString(proof64)
	if err != nil || len(proof) != s.h().Size() {
		return nil, fmt.Errorf("%w: client proof is not a base64 %s digest", errSASL, s.mechanism)
	}
	authMsg := s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	// ClientKey := ClientProof XOR HMAC(StoredKey, AuthMessage); the
	// client knows the password if H(ClientKey) == StoredKey. For a user
	// without a credential the work is the same and the compare fails.
	stored := s.cred.StoredKey
	if !s.known {
		stored = make([]byte, len(proof))
	}
	clientKey := hmacOf(s.h, stored, authMsg)
	for i := range clientKey {
		clientKey[i] ^= proof[i]
	}
	if !hmac.Equal(hashOf(s.h, clientKey), stored) || !s.known {
		return nil, fmt.Errorf("%w: invalid credentials for user %q with %s", errSASL, s.user, s.mechanism)
	}
	return []byte("v=" + base64.StdEncoding.EncodeToString(hmacOf(s.h, s.cred.ServerKey, authMsg))), nil
}

// saslName decodes a SCRAM saslname: "=2C" is ",", "=3D" is "=", and no
// other "=" may appear.
func saslName(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty user name", errSASL)
	}
	if !strings.Contains(s, "=") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", fmt.Errorf("%w: bad escape in user name %q", errSASL, s)
		}
		i += 2
	}
	return b.String(), nil
}

// validNonce: printable ASCII but ",", as RFC 5802 says.
func validNonce(n string) bool {
	if n == "" || len(n) > 1024 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 0x21 || n[i] > 0x7e || n[i] == ',' {
			return false
		}
	}
	return true
}

// plainServer checks SASL/PLAIN (RFC 4616: authzid NUL authcid NUL
// passwd) against the user's SCRAM credential: it derives the salted
// password as SCRAM would and compares the stored keys.
type plainServer struct {
	lookup func(mechanism, user string) (ScramCredential, bool)
	user   string
	done   bool
}

func (s *plainServer) User() string { return s.user }

func (s *plainServer) Next(msg []byte) ([]byte, bool, error) {
	if s.done {
		return nil, false, fmt.Errorf("%w: the PLAIN exchange is over", errSASL)
	}
	s.done = true
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 || !utf8.Valid(msg) {
		return nil, false, fmt.Errorf("%w: PLAIN message is not authzid NUL user NUL password", errSASL)
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if user == "" || pass == "" {
		return nil, false, fmt.Errorf("%w: PLAIN user or password empty", errSASL)
	}
	if authz != "" && authz != user {
		return nil, false, fmt.Errorf("%w: authorization id %q is not the user %q", errSASL, authz, user)
	}
	for _, m := range []string{ScramSHA512, ScramSHA256} {
		h, _ := scramHash(m)
		c, ok := s.lookup(m, user)
		if !ok || !c.valid(h) {
			continue
		}
		salted, err := pbkdf2.Key(h, pass, c.Salt, c.Iterations, h().Size())
		if err == nil && hmac.Equal(hashOf(h, hmacOf(h, salted, "Client Key")), c.StoredKey) {
			s.user = user
			return nil, true, nil
		}
		break
	}
	return nil, false, fmt.Errorf("%w: invalid credentials for user %q with PLAIN", errSASL, user)
}
