package replogkafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// saslAPIs are the SASL requests, served whether or not SASL is
// configured (as Kafka lists them on every listener); without SASL they
// are answered ILLEGAL_SASL_STATE. SaslHandshake v0 is followed by raw
// tokens (each a 4-byte size and the bytes, no request header), v1 by
// SaslAuthenticate requests (KIP-152).
func saslAPIs() []servedAPI {
	return []servedAPI{
		{kmsg.SASLHandshake.Int16(), versionRange{0, 1}},
		{kmsg.SASLAuthenticate.Int16(), versionRange{0, 2}},
	}
}

// preAuthAPI reports whether a request with this key may come before
// the connection authenticated.
func preAuthAPI(key int16) bool {
	switch kmsg.Key(key) {
	case kmsg.ApiVersions, kmsg.SASLHandshake, kmsg.SASLAuthenticate:
		return true
	}
	return false
}

// maxPreAuthBytes caps a frame (request or raw token) before the
// connection authenticated, as Kafka's sasl.server.max.receive.size.
const maxPreAuthBytes = 512 << 10

// saslState is a connection's SASL progress, read and changed only by its
// readLoop (decode runs there); authed is also read by the authentication
// timer.
type saslState struct {
	mechanism string      // chosen by SaslHandshake; "" before
	raw       bool        // SaslHandshake v0: raw tokens follow
	session   saslSession // started by the first token
	user      string      // once authenticated
}

// saslSession is the server side of one SASL mechanism's exchange.
type saslSession interface {
	// Next takes the client's next token and returns the answer; done
	// once the client is authenticated. An error ends the exchange.
	Next(token []byte) (resp []byte, done bool, err error)
	User() string
}

// authenticated reports whether c may send any request.
func (c *conn) authenticated() bool { return c.s.opts.SASL == nil || c.authed.Load() }

// startAuthTimer closes c unless it authenticates within
// HandshakeTimeout; the caller stops the timer.
func (c *conn) startAuthTimer() *time.Timer {
	return time.AfterFunc(c.s.opts.HandshakeTimeout, func() {
		if !c.authed.Load() {
			c.s.log.Warn("replogkafka: no SASL authentication within the handshake timeout; closing the connection",
				"remote", c.remote(), "timeout", c.s.opts.HandshakeTimeout)
			c.shut()
		}
	})
}

// tlsHandshake completes the TLS handshake of c, if it is a TLS
// connection, within HandshakeTimeout. False: c is closed.
func (c *conn) tlsHandshake() bool {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return true
	}
	tc.SetDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	if err := tc.HandshakeContext(c.ctx); err != nil {
		switch {
		case c.ctx.Err() != nil:
		case errors.Is(err, io.EOF):
			// The client went away before a word: as dropped.
			c.s.log.Debug("replogkafka: connection closed before the TLS handshake", "remote", c.remote())
		default:
			c.s.log.Warn("replogkafka: TLS handshake failed; closing the connection", "remote", c.remote(), "err", err)
		}
		c.shut()
		return false
	}
	tc.SetDeadline(time.Time{})
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		c.s.log.Debug("replogkafka: TLS client certificate", "remote", c.remote(), "subject", certs[0].Subject.String())
	}
	return true
}

// saslHandshake answers SaslHandshake: the mechanism the client wants,
// if offered. Anything else than a first handshake naming an offered
// mechanism closes the connection after the answer, as Kafka does.
func (s *Server) saslHandshake(c *conn, req *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if s.opts.SASL == nil {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		return resp
	}
	resp.SupportedMechanisms = s.opts.SASL.Mechanisms
	switch {
	case c.sasl.mechanism != "" || c.authed.Load():
		resp.ErrorCode = kerr.IllegalSaslState.Code
		c.closeAfterReply = true
		s.log.Warn("replogkafka: second SaslHandshake; closing the connection", "remote", c.remote())
	case !slices.Contains(s.opts.SASL.Mechanisms, req.Mechanism):
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		c.closeAfterReply = true
		s.log.Warn("replogkafka: SASL mechanism not offered; closing the connection", "remote", c.remote(), "mechanism", req.Mechanism)
	default:
		c.sasl.mechanism = req.Mechanism
		c.sasl.raw = req.Version == 0
	}
	return resp
}

// saslAuthenticate answers SaslAuthenticate: the next step of the
// exchange. A failure is answered SASL_AUTHENTICATION_FAILED and closes
// the connection.
func (s *Server) saslAuthenticate(c *conn, req *kmsg.SASLAuthenticateRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if s.opts.SASL == nil || c.sasl.mechanism == "" || c.authed.Load() {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		msg := "SaslAuthenticate needs a SaslHandshake v1 first, and only until authenticated"
		resp.ErrorMessage = &msg
		c.closeAfterReply = s.opts.SASL != nil
		return resp
	}
	token, err := s.saslStep(c, req.SASLAuthBytes)
	if err != nil {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		// Kafka's words; the details (which may name the user) go to
		// the log only.
		msg := fmt.Sprintf("Authentication failed during authentication due to invalid credentials with SASL mechanism %s", c.sasl.mechanism)
		resp.ErrorMessage = &msg
		c.closeAfterReply = true
		return resp
	}
	resp.SASLAuthBytes = token
	return resp
}

// saslRaw takes a raw token (after SaslHandshake v0) and returns the
// answer, or an error: the connection closes without one.
func (s *Server) saslRaw(c *conn, token []byte) ([]byte, error) {
	resp, err := s.saslStep(c, token)
	if c.authed.Load() {
		c.sasl.raw = false // Kafka requests follow
	}
	return resp, err
}

// saslStep feeds a token to the connection's SASL session, starting it
// on the first, and marks the connection authenticated when done.
func (s *Server) saslStep(c *conn, token []byte) ([]byte, error) {
	if c.sasl.session == nil {
		c.sasl.session = s.newSASLSession(c.sasl.mechanism)
	}
	resp, done, err := c.sasl.session.Next(token)
	if err != nil {
		s.log.Warn("replogkafka: SASL authentication failed; closing the connection",
			"remote", c.remote(), "mechanism", c.sasl.mechanism, "err", err)
		return nil, err
	}
	if done {
		c.sasl.user = c.sasl.session.User()
		c.authed.Store(true)
		s.log.Debug("replogkafka: SASL authenticated", "remote", c.remote(), "mechanism", c.sasl.mechanism, "user", c.sasl.user)
	}
	if resp == nil {
		resp = []byte{} // an empty token, not a null one
	}
	return resp, nil
}

// newSASLSession starts the exchange of mechanism, one of those offered.
func (s *Server) newSASLSession(mechanism string) saslSession {
	if mechanism == Plain {
		return &plainServer{lookup: s.opts.SASL.Credentials}
	}
	h, _ := scramHash(mechanism)
	return &scramServer{mechanism: mechanism, h: h, lookup: s.opts.SASL.Credentials, fakeKey: s.fakeKey}
}

// errRawToken: a raw SASL token frame out of bounds.
var errRawToken = errors.New("replogkafka: raw SASL token out of bounds")
