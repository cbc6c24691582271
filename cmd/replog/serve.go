package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// serve runs one durable node with a Kafka listener until ctx ends (a
// signal), then closes the listener and the Log, in that order, so no
// request is served by a closing Log.
func serve(ctx context.Context, args []string, e env) error {
	fs := newFlags("serve", e)
	dir := fs.String("dir", "", "data `directory` of the node (created if missing; required)")
	addr := fs.String("kafka", "127.0.0.1:9092", "`host:port` to serve Kafka clients on")
	advertised := fs.String("advertised", "", "`host:port` that Metadata tells clients to connect to (default: the -kafka address as bound)")
	autoCreate := fs.Bool("auto-create", true, "create a topic (1 partition) when a client asks for one that does not exist, as Kafka's auto.create.topics.enable")
	level := fs.String("log-level", "info", "least level logged to stderr: debug, info, warn or error")
	var sec serveSecurity
	sec.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "no argument"); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("serve needs -dir")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(*level))); err != nil {
		return usagef("-log-level %q: want debug, info, warn or error", *level)
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lv}))

	kopts := &replogkafka.Options{
		Logger:            logger,
		AutoCreateTopics:  *autoCreate,
		AdvertisedAddress: *advertised,
	}
	if err := sec.apply(kopts, logger); err != nil {
		return err
	}

	l, err := replog.Open(*dir, &replog.Options{Logger: logger})
	if err != nil {
		return fmt.Errorf("open %s: %w", *dir, err)
	}
	srv, err := replogkafka.Listen(l, *addr, kopts)
	if errors.Is(err, replogkafka.ErrInsecureListener) {
		err = fmt.Errorf("%w\n(give -tls-cert and -tls-key, with -tls-client-ca or -sasl-users; or serve on 127.0.0.1; or, on a network secured otherwise, -insecure-allow-open-network)", err)
	}
	if err != nil {
		return errors.Join(err, l.Close())
	}
	// The listening socket accepts from here on: connections queue in the
	// kernel until the accept loop takes them.
	fmt.Fprintf(e.stdout, "replog: listening for Kafka clients on %s\n", srv.Addr())

	var failed error
	select {
	case <-ctx.Done():
		logger.Info("replog: stopping")
	case <-l.Done():
		failed = errors.New("the log closed by itself")
	}
	return errors.Join(failed, srv.Close(), l.Close())
}
