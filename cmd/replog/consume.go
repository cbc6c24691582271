package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// commitTimeout bounds a group commit, which also runs after an interrupt
// so that what was printed is not read again.
const commitTimeout = 10 * time.Second

func consume(ctx context.Context, args []string, e env) error {
	fs := newFlags("consume", e)
	var cf clientFlags
	cf.register(fs, e, false)
	group := fs.String("group", "", "consume as a member of consumer `group` G, committing what is printed (needs the broker's group APIs)")
	from := fs.String("from", "earliest", "where to start without a committed offset: earliest or latest")
	n := fs.Int("n", 0, "stop after `N` records (0: until interrupted)")
	keySep := fs.String("key-sep", "", "print each record's key, then `SEP`, then its value (default: the value only)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "a topic name"); err != nil {
		return err
	}
	if *n < 0 {
		return usagef("-n %d: want 0 or more", *n)
	}
	topic := pos[0]
	reset := kgo.NewOffset()
	switch *from {
	case "earliest":
		reset = reset.AtStart()
	case "latest":
		reset = reset.AtEnd()
	default:
		return usagef("-from %q: want earliest or latest", *from)
	}

	// Check first what kgo would otherwise retry quietly forever: a topic
	// that does not exist, a broker without groups.
	adm, err := cf.admin()
	if err != nil {
		return err
	}
	details, err := adm.ListTopics(ctx, topic)
	if err == nil {
		err = details[topic].Err
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		err = errors.New("no such topic")
	}
	if err == nil && *group != "" {
		err = requireAPIs(ctx, adm, "consumer groups", groupAPIs...)
	}
	adm.Close()
	if err != nil {
		return fmt.Errorf("consume %q: %w", topic, err)
	}

	opts := []kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(reset)}
	if *group != "" {
		opts = append(opts, kgo.ConsumerGroup(*group), kgo.DisableAutoCommit())
	}
	cl, err := cf.client(opts...)
	if err != nil {
		return err
	}
	// Close leaves the group, after the last commit.
	defer cl.Close()

	w := bufio.NewWriter(e.stdout)
	defer w.Flush()
	count := 0
	for *n == 0 || count < *n {
		max := -1
		if *n > 0 {
			max = *n - count
		}
		fetches := cl.PollRecords(ctx, max)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil // interrupted: a normal end
		}
		var fetchErr error
		fetches.EachError(func(t string, p int32, err error) {
			if fetchErr == nil && !errors.Is(err, context.Canceled) {
				fetchErr = fmt.Errorf("%s/%d: %w", t, p, err)
			}
		})
		if fetchErr != nil {
			return fmt.Errorf("consume %q: %w", topic, fetchErr)
		}
		recs := fetches.Records()
		for _, r := range recs {
			if *keySep != "" {
				w.Write(r.Key)
				w.WriteString(*keySep)
			}
			w.Write(r.Value)
			w.WriteByte('\n')
		}
		count += len(recs)
		if err := w.Flush(); err != nil {
			return err // stdout closed: a pipe reader gone
		}
		if *group != "" && len(recs) > 0 {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
			err := cl.CommitRecords(cctx, recs...)
			cancel()
			if err != nil {
				return fmt.Errorf("consume %q: commit for group %q: %w", topic, *group, err)
			}
		}
	}
	return nil
}
