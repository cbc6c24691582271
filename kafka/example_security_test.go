package replogkafka_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// Clients authenticate with SCRAM-SHA-512 before anything else. Off
// loopback, Options.TLS would be required as well (see ServerTLSConfig).
func ExampleListen_sasl() {
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	creds, err := replogkafka.PasswordCredentials(map[string]string{"alice": "s3cret"})
	if err != nil {
		panic(err)
	}
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", &replogkafka.Options{
		SASL: &replogkafka.SASLOptions{Credentials: creds},
	})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, pass := range []string{"s3cret", "guess"} {
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(srv.Addr().String()),
			kgo.SASL(scram.Auth{User: "alice", Pass: pass}.AsSha512Mechanism()),
		)
		if err != nil {
			panic(err)
		}
		err = cl.Ping(ctx)
		cl.Close()
		fmt.Printf("%s: ok %v, refused %v\n", pass, err == nil, errors.Is(err, kerr.SaslAuthenticationFailed))
	}

	// A plaintext listener on every interface is refused.
	_, err = replogkafka.Listen(l, "0.0.0.0:9092", nil)
	fmt.Println(errors.Is(err, replogkafka.ErrInsecureListener))
	// Output:
	// s3cret: ok true, refused false
	// guess: ok false, refused true
	// true
}
