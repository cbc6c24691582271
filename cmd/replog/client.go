package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// defaultBrokers is where client subcommands look without -brokers or
// $REPLOG_BROKERS: serve's default address.
const defaultBrokers = "127.0.0.1:9092"

// clientFlags are the flags every client subcommand shares.
type clientFlags struct {
	brokers string
	json    bool
	sec     clientSecurity
}

func (c *clientFlags) register(fs *flag.FlagSet, e env, withJSON bool) {
	def := e.getenv("REPLOG_BROKERS")
	if def == "" {
		def = defaultBrokers
	}
	fs.StringVar(&c.brokers, "brokers", def, "comma-separated `host:port` list of seed brokers (default from $REPLOG_BROKERS)")
	if withJSON {
		fs.BoolVar(&c.json, "json", false, "print JSON for scripts")
	}
	c.sec.register(fs, e)
}

// client connects to the brokers; kgo dials lazily, so an unreachable
// broker shows as the first request's error.
func (c *clientFlags) client(opts ...kgo.Opt) (*kgo.Client, error) {
	var seeds []string
	for _, b := range strings.Split(c.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			seeds = append(seeds, b)
		}
	}
	if len(seeds) == 0 {
		return nil, usagef("-brokers is empty")
	}
	sec, err := c.sec.opts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, sec...), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return cl, nil
}

// admin returns an admin client of the brokers; closing it closes its
// client.
func (c *clientFlags) admin() (*kadm.Client, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// groupAPIs are the requests a Kafka consumer group member needs.
var groupAPIs = []kmsg.Key{kmsg.FindCoordinator, kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.LeaveGroup, kmsg.OffsetCommit, kmsg.OffsetFetch}

// requireAPIs fails with a clear message unless every broker reachable
// serves every one of keys: franz-go would otherwise retry or fail in
// ways that do not name the cause (a replog listener without group
// support closes the connection on a request it does not serve).
func requireAPIs(ctx context.Context, adm *kadm.Client, what string, keys ...kmsg.Key) error {
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return fmt.Errorf("asking the brokers which APIs they serve: %w", err)
	}
	for _, v := range vs.Sorted() {
		if v.Err != nil {
			return fmt.Errorf("asking broker %d which APIs it serves: %w", v.NodeID, v.Err)
		}
		var missing []string
		for _, k := range keys {
			if _, ok := v.KeyMaxVersion(k.Int16()); !ok {
				missing = append(missing, k.Name())
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("broker %d does not support %s: it lacks the Kafka APIs %s", v.NodeID, what, strings.Join(missing, ", "))
		}
	}
	return nil
}

// adminFor parses args into fs (on which c's flags and the command's own
// are registered), checks that n positional arguments (what) were given,
// and opens an admin client; the caller closes it.
func (c *clientFlags) adminFor(fs *flag.FlagSet, args []string, n int, what string) (*kadm.Client, []string, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if err := wantArgs(pos, n, what); err != nil {
		return nil, nil, err
	}
	adm, err := c.admin()
	if err != nil {
		return nil, nil, err
	}
	return adm, pos, nil
}
