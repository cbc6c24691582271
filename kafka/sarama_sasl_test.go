package replogkafka_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	replogkafka "github.com/replog/replog/kafka"
)

// saramaScram adapts franz-go's SCRAM client to sarama's SCRAMClient,
// which sarama leaves to the user to provide.
type saramaScram struct {
	mech  func(scram.Auth) sasl.Mechanism
	sess  sasl.Session
	first []byte
	done  bool
}

func (c *saramaScram) Begin(user, pass, authzID string) error {
	sess, first, err := c.mech(scram.Auth{User: user, Pass: pass, Zid: authzID}).Authenticate(context.Background(), "")
	c.sess, c.first = sess, first
	return err
}

func (c *saramaScram) Step(challenge string) (string, error) {
	if c.first != nil {
		first := c.first
		c.first = nil
		return string(first), nil
	}
	done, resp, err := c.sess.Challenge([]byte(challenge))
	c.done = done
	return string(resp), err
}

func (c *saramaScram) Done() bool { return c.done }

// TestSaramaSASL: sarama authenticates with SCRAM-SHA-512 and PLAIN (over
// TLS), through SaslHandshake v0 (raw tokens) and v1 (SaslAuthenticate v0
// with Kafka 1.0's protocol, v2 with 2.5's), and produces; a wrong
// password is refused.
func TestSaramaSASL(t *testing.T) {
	pki := newPKI(t)
	srv := listen(t, openLog(t), &replogkafka.Options{
		AutoCreateTopics: true,
		TLS:              pki.serverTLS(t, false),
		SASL:             saslOptions(t, replogkafka.ScramSHA512, replogkafka.Plain),
	})
	for _, mech := range []sarama.SASLMechanism{sarama.SASLTypeSCRAMSHA512, sarama.SASLTypePlaintext} {
		for _, hs := range []int16{sarama.SASLHandshakeV0, sarama.SASLHandshakeV1} {
			for _, v := range []sarama.KafkaVersion{sarama.V1_0_0_0, sarama.V2_5_0_0} {
				t.Run(fmt.Sprintf("%s/handshake-v%d/%s", mech, hs, v), func(t *testing.T) {
					cfg := func(pass string) *sarama.Config {
						c := sarama.NewConfig()
						c.Version = v
						c.Net.TLS.Enable = true
						c.Net.TLS.Config = &tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS12}
						c.Net.SASL.Enable = true
						c.Net.SASL.Mechanism = mech
						c.Net.SASL.Version = hs
						// sarama's rule: Kafka 0.10's handshake comes
						// before any request, ApiVersions included.
						c.ApiVersionsRequest = hs == sarama.SASLHandshakeV1
						c.Net.SASL.User, c.Net.SASL.Password = "alice", pass
						c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient {
							return &saramaScram{mech: scram.Auth.AsSha512Mechanism}
						}
						c.Producer.Return.Successes = true
						c.Producer.RequiredAcks = sarama.WaitForAll
						c.Metadata.Retry.Max = 0
						return c
					}
					p, err := sarama.NewSyncProducer([]string{srv.Addr().String()}, cfg("s3cret"))
					if err != nil {
						t.Fatal(err)
					}
					defer p.Close()
					if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "sarama-sasl", Value: sarama.StringEncoder("x")}); err != nil {
						t.Fatal(err)
					}
					if bad, err := sarama.NewClient([]string{srv.Addr().String()}, cfg("guess")); err == nil {
						bad.Close()
						t.Fatal("a wrong password got through")
					}
				})
			}
		}
	}
}
