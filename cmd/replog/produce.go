package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// maxLineBytes bounds one line of produce's input; brokers refuse larger
// records anyway (replog's default MaxRecordBytes and Kafka's
// message.max.bytes are about 1 MiB).
const maxLineBytes = 16 << 20

// produceSummary is produce's -json output.
type produceSummary struct {
	Topic   string `json:"topic"`
	Records int64  `json:"records"`
	Bytes   int64  `json:"bytes"`
	Failed  int64  `json:"failed"`
	Error   string `json:"error,omitempty"`
}

func produce(ctx context.Context, args []string, e env) error {
	fs := newFlags("produce", e)
	var cf clientFlags
	cf.register(fs, e, true)
	keySep := fs.String("key-sep", "", "split each line at the first `SEP` into key and value (default: no key, the line is the value)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up on a record not acknowledged within this `duration` (0: never), e.g. while no broker answers")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "a topic name"); err != nil {
		return err
	}
	topic := pos[0]
	// As Kafka's console producer, ask for the topic to be created if the
	// broker does that.
	cl, err := cf.client(kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation(), kgo.RecordDeliveryTimeout(*timeout))
	if err != nil {
		return err
	}
	defer cl.Close()

	var (
		mu       sync.Mutex
		sum      = produceSummary{Topic: topic}
		firstErr error
	)
	done := func(r *kgo.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			sum.Failed++
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		sum.Records++
		sum.Bytes += int64(len(r.Key) + len(r.Value))
	}
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 64<<10), maxLineBytes)
	for sc.Scan() && ctx.Err() == nil {
		line := bytes.Clone(sc.Bytes()) // the scanner reuses its buffer
		r := &kgo.Record{Value: line}
		if *keySep != "" {
			if k, v, ok := bytes.Cut(line, []byte(*keySep)); ok {
				r.Key, r.Value = k, v
			}
		}
		cl.Produce(ctx, r, done)
	}
	scanErr := sc.Err()
	flushErr := cl.Flush(ctx)

	mu.Lock()
	defer mu.Unlock()
	err = firstErr
	switch {
	case scanErr != nil:
		err = fmt.Errorf("reading stdin: %w", scanErr)
	case err == nil && flushErr != nil:
		err = flushErr
	case err == nil && ctx.Err() != nil:
		err = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err != nil {
		err = fmt.Errorf("produce to %q: %d record(s) written, %d failed: %w", topic, sum.Records, sum.Failed, err)
		sum.Error = err.Error()
	}
	if cf.json {
		if perr := printJSON(e.stdout, sum); perr != nil && err == nil {
			err = perr
		}
	} else if err == nil {
		fmt.Fprintf(e.stdout, "produced %d record(s), %d bytes, to %s\n", sum.Records, sum.Bytes, topic)
	}
	return err
}
