// Command compacted keeps a table (account balances by account id) in a
// compacted topic, as a Kafka table topic. The first run writes updates
// and deletes, keeping the table in memory as it goes, compacts the topic
// and stops. The second run opens the same directory, rebuilds the table
// by reading every partition from its earliest offset to its high
// watermark, and checks it against the first run's.
//
//	go run ./examples/compacted
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"maps"
	"math/rand/v2"
	"os"
	"time"

	"github.com/replog/replog"
)

type Account struct {
	Owner   string `json:"owner"`
	Balance int64  `json:"balance"`
}

const accounts, updates = 40, 400

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "replog-compacted-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	want, err := write(ctx, dir)
	if err != nil {
		return err
	}
	got, err := rebuild(ctx, dir)
	if err != nil {
		return err
	}
	if !maps.Equal(got, want) {
		return fmt.Errorf("compacted: the rebuilt table (%d accounts) differs from the first run's (%d)", len(got), len(want))
	}
	fmt.Printf("second run: the rebuilt table equals the first run's (%d accounts)\n", len(got))
	return nil
}

// write is the first run: updates and deletes, then compaction.
func write(ctx context.Context, dir string) (map[string]Account, error) {
	l, err := replog.Open(dir, nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	// Deletes are tombstones; compaction keeps them readable for an hour
	// after it first reaches them, so a rebuild within that time sees them.
	topic, err := l.EnsureTopic(ctx, "accounts", replog.TopicConfig{
		Partitions: 3, Cleanup: replog.CleanupCompact, DeleteRetention: time.Hour,
	})
	if err != nil {
		return nil, err
	}
	p, err := replog.NewProducer(topic, replog.JSON[Account](), nil)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	table := map[string]Account{}
	rng := rand.New(rand.NewPCG(1, 2))
	deletes := 0
	for range updates {
		id := fmt.Sprintf("acct-%02d", rng.IntN(accounts))
		msg := replog.Message[Account]{Key: []byte(id)}
		if a, ok := table[id]; ok && rng.IntN(10) == 0 {
			msg.Tombstone = true // the account is closed
			delete(table, id)
			deletes++
		} else {
			a.Owner, a.Balance = "owner of "+id, a.Balance+rng.Int64N(200)-50
			msg.Value = a
			table[id] = a
		}
		if _, err := p.Produce(ctx, msg); err != nil {
			return nil, err
		}
	}
	if err := l.Compact(ctx, "accounts"); err != nil {
		return nil, err
	}
	fmt.Printf("first run: wrote %d records (%d of them deletes) over %d keys, %d accounts open; compacted, program stops\n",
		updates, deletes, accounts, len(table))
	return table, nil
}

// rebuild is the second run: read each partition from its log start up to
// its high watermark, applying updates and deletes to an empty table.
func rebuild(ctx context.Context, dir string) (map[string]Account, error) {
	l, err := replog.Open(dir, nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	topic, err := l.Topic("accounts")
	if err != nil {
		return nil, err
	}
	last := map[int]int64{} // partition -> offset of its newest record
	for i := range topic.Partitions() {
		o, err := topic.Offsets(ctx, i)
		if err != nil {
			return nil, err
		}
		fmt.Printf("second run: partition %d holds offsets %d to %d\n", i, o.LogStart, o.HighWatermark-1)
		if o.HighWatermark > o.LogStart {
			last[i] = o.HighWatermark - 1
		}
	}
	if len(last) == 0 {
		return nil, errors.New("compacted: the topic is empty after the first run")
	}
	c, err := replog.NewConsumer(topic, replog.JSON[Account](), nil) // from the earliest offset
	if err != nil {
		return nil, err
	}
	defer c.Close()
	table := map[string]Account{}
	read, tombstones := 0, 0
	for rec, err := range c.Records(ctx) {
		if err != nil {
			return nil, err
		}
		read++
		if rec.Tombstone {
			tombstones++
			delete(table, string(rec.Key))
		} else {
			table[string(rec.Key)] = rec.Value
		}
		// Compaction leaves gaps in the offsets but never removes the
		// newest record of a partition, so this one is always read.
		if rec.Offset == last[rec.Partition] {
			if delete(last, rec.Partition); len(last) == 0 {
				break
			}
		}
	}
	if len(last) > 0 {
		return nil, errors.New("compacted: the rebuild stopped before the end of every partition")
	}
	fmt.Printf("second run: read back %d of the %d records written (%d of them tombstones) to rebuild %d accounts\n",
		read, updates, tombstones, len(table))
	return table, nil
}
