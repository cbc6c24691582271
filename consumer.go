package replog

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"sync"
	"time"

	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// Record is a consumed record.
type Record[T any] struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     T
	Headers   []Header
	Time      time.Time
}

// StartPosition is where a consumer without an explicit offset begins.
type StartPosition int

const (
	// Earliest starts at the first retained offset (the default).
	Earliest StartPosition = iota
	// Latest starts at the high watermark when the consumer is created:
	// only records produced afterwards are read.
	Latest
)

// ConsumerOptions configures [NewConsumer]. The zero value (or nil) reads
// every partition from the earliest offset.
type ConsumerOptions struct {
	// Start is where each partition begins. Default [Earliest].
	Start StartPosition
	// Partitions assigns explicit partitions. Nil (the default) means all.
	Partitions []int
	// MaxPollRecords caps the records one Poll returns. Default 500.
	MaxPollRecords int
	// FetchBytes caps the bytes read from one partition per fetch; at least
	// one batch is always read. Default 1 MiB.
	FetchBytes int
}

// Consumer reads records of type T from a topic's partitions in offset
// order per partition. It is not safe for concurrent use, except Close,
// which may be called from any goroutine, twice.
type Consumer[T any] struct {
	c     *consumer
	codec Codec[T]
}

// NewConsumer returns a consumer of topic t that decodes values with codec.
// With Start == Latest it waits (up to 10s) for the local partitions to
// load, to fix their high watermarks.
func NewConsumer[T any](t *Topic, codec Codec[T], opts *ConsumerOptions) (*Consumer[T], error) {
	if t == nil {
		return nil, fmt.Errorf("%w: nil topic", ErrInvalidConfig)
	}
	if codec == nil {
		return nil, fmt.Errorf("%w: nil codec", ErrInvalidConfig)
	}
	c, err := newConsumer(t, opts)
	if err != nil {
		return nil, err
	}
	if err := t.l.track(c); err != nil {
		return nil, err
	}
	return &Consumer[T]{c: c, codec: codec}, nil
}

// Poll waits until records are available or ctx ends, and returns at most
// MaxPollRecords of them. If a value fails to decode, Poll returns the
// records before it and a [*DecodeError]; the next Poll goes on after it.
func (c *Consumer[T]) Poll(ctx context.Context) ([]Record[T], error) {
	raw, err := c.c.poll(ctx)
	out := make([]Record[T], 0, len(raw))
	for i, r := range raw {
		v, derr := c.codec.Decode(r.rec.Value)
		if derr != nil {
			c.c.rewind(rawPositions(raw[i+1:])) // hand the rest out on the next Poll
			return out, &DecodeError{Topic: c.c.t.meta.Name, Partition: r.part, Offset: r.rec.Offset, Err: derr}
		}
		rec := Record[T]{
			Topic: c.c.t.meta.Name, Partition: r.part, Offset: r.rec.Offset,
			Key: r.rec.Key, Value: v, Time: time.Unix(0, r.rec.Time),
		}
		if len(r.rec.Headers) > 0 {
			rec.Headers = make([]Header, len(r.rec.Headers))
			for j, h := range r.rec.Headers {
				rec.Headers[j] = Header{Key: h.Key, Value: h.Value}
			}
		}
		out = append(out, rec)
	}
	return out, err
}

// Records iterates over records as they are committed, blocking while there
// are none, until ctx ends or the loop breaks. A decode failure is yielded
// as an error and iteration goes on after it; any other error is yielded
// once and ends the iteration (ctx ending ends it silently). Each call
// starts from the consumer's current position; the iterator is single use.
func (c *Consumer[T]) Records(ctx context.Context) iter.Seq2[Record[T], error] {
	return func(yield func(Record[T], error) bool) {
		for {
			recs, err := c.Poll(ctx)
			for i, r := range recs {
				if !yield(r, nil) {
					c.c.rewind(positions(recs[i+1:]))
					return
				}
			}
			var de *DecodeError
			switch {
			case err == nil:
			case errors.As(err, &de):
				if !yield(Record[T]{}, err) {
					return
				}
			case ctx.Err() != nil:
				return
			default:
				yield(Record[T]{}, err)
				return
			}
		}
	}
}

// rewindTo moves each partition back to the first of rest, records fetched
// but not yielded. Records of one Poll are in offset order per partition.
// Seek moves partition to offset: the next record read from it is the one
// at offset. An offset outside [log start, high watermark] is refused with
// an [*OffsetOutOfRangeError] carrying the bounds, and the position is kept.
func (c *Consumer[T]) Seek(partition int, offset int64) error {
	cp, err := c.c.part(partition)
	if err != nil {
		return err
	}
	start, hw := cp.rp.LogStart(), cp.rp.HighWatermark()
	if offset < start || offset > hw {
		return &OffsetOutOfRangeError{Topic: c.c.t.meta.Name, Partition: partition, Offset: offset, Earliest: start, Latest: hw}
	}
	cp.seekTo(offset)
	return nil
}

// SeekTime moves every assigned partition to its first record whose
// timestamp is at or after t (the high watermark if there is none), using
// the time index the store keeps per batch.
func (c *Consumer[T]) SeekTime(ctx context.Context, t time.Time) error {
	for _, cp := range c.c.parts {
		off, err := cp.rp.OffsetForTime(ctx, t.UnixNano())
		if err != nil {
			return mapErr(err)
		}
		cp.seekTo(off)
	}
	return nil
}

// Lag returns, per assigned partition, how many committed records the
// consumer has not yet handed out (high watermark minus position).
func (c *Consumer[T]) Lag() map[int]int64 {
	lag := make(map[int]int64, len(c.c.parts))
	for _, cp := range c.c.parts {
		lag[cp.idx] = max(0, cp.rp.HighWatermark()-cp.offset)
	}
	return lag
}

// Position returns the next offset the consumer reads from partition.
func (c *Consumer[T]) Position(partition int) (int64, error) {
	cp, err := c.c.part(partition)
	if err != nil {
		return 0, err
	}
	return cp.offset, nil
}

func (c *consumer) part(partition int) (*consumerPart, error) {
	for _, cp := range c.parts {
		if cp.idx == partition {
			return cp, nil
		}
	}
	return nil, fmt.Errorf("%w: %s/%d is not assigned to this consumer", ErrPartitionNotFound, c.t.meta.Name, partition)
}

// Close releases the consumer. Safe to call twice, from any goroutine; a
// blocked Poll returns [ErrClosed].
func (c *Consumer[T]) Close() error {
	c.c.t.l.untrack(c.c)
	return c.c.Close()
}

// consumer is the untyped core under every Consumer[T].
type consumer struct {
	t         *Topic
	opts      ConsumerOptions
	parts     []*consumerPart
	next      int // round-robin start
	closed    chan struct{}
	closeOnce sync.Once
}

type consumerPart struct {
	idx     int
	rp      *replication.Partition
	offset  int64            // next offset to hand out
	pending []storage.Record // fetched, not yet handed out (offsets from `offset` on)
}

func (cp *consumerPart) seekTo(off int64) {
	cp.offset = off
	cp.pending = nil
}

type rawRecord struct {
	part int
	rec  storage.Record
}

func newConsumer(t *Topic, opts *ConsumerOptions) (*consumer, error) {
	var o ConsumerOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxPollRecords == 0 {
		o.MaxPollRecords = 500
	}
	if o.FetchBytes == 0 {
		o.FetchBytes = 1 << 20
	}
	if o.MaxPollRecords < 0 || o.FetchBytes < 0 || (o.Start != Earliest && o.Start != Latest) {
		return nil, fmt.Errorf("%w: consumer options %+v", ErrInvalidConfig, o)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	parts := o.Partitions
	if parts == nil {
		for i := range t.Partitions() {
			parts = append(parts, i)
		}
	}
	c := &consumer{t: t, opts: o, closed: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := map[int]bool{}
	for _, i := range parts {
		if seen[i] {
			return nil, fmt.Errorf("%w: partition %d assigned twice", ErrInvalidConfig, i)
		}
		seen[i] = true
		rp, err := t.partition(ctx, i)
		if err != nil {
			return nil, err
		}
		cp := &consumerPart{idx: i, rp: rp}
		if o.Start == Latest {
			if err := rp.WaitOpen(ctx); err != nil {
				return nil, mapErr(err)
			}
			cp.offset = rp.HighWatermark()
		}
		c.parts = append(c.parts, cp)
	}
	return c, nil
}

func (c *consumer) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// positions maps each partition to its first record in recs: where to go
// back to when recs were fetched but not handed to the caller. Records of one
// Poll are in offset order per partition.
func positions[T any](recs []Record[T]) map[int]int64 {
	first := map[int]int64{}
	for _, r := range recs {
		if _, ok := first[r.Partition]; !ok {
			first[r.Partition] = r.Offset
		}
	}
	return first
}

func rawPositions(recs []rawRecord) map[int]int64 {
	first := map[int]int64{}
	for _, r := range recs {
		if _, ok := first[r.part]; !ok {
			first[r.part] = r.rec.Offset
		}
	}
	return first
}

func (c *consumer) rewind(first map[int]int64) {
	for _, cp := range c.parts {
		if off, ok := first[cp.idx]; ok {
			cp.seekTo(off)
		}
	}
}

func (c *consumer) poll(ctx context.Context) ([]rawRecord, error) {
	for {
		select {
		case <-c.closed:
			return nil, ErrClosed
		default:
		}
		if err := c.t.check(); err != nil {
			return nil, err
		}
		// Take the wake-up channels before reading, so a record applied
		// between the read and the wait still wakes us.
		waits := make([]<-chan struct{}, len(c.parts))
		for i, cp := range c.parts {
			waits[i] = cp.rp.Changed()
		}
		out, err := c.fetch(ctx)
		if err != nil || len(out) > 0 {
			return out, err
		}
		if err := c.wait(ctx, waits); err != nil {
			return nil, err
		}
	}
}

// fetch hands out up to MaxPollRecords, visiting partitions round-robin.
func (c *consumer) fetch(ctx context.Context) ([]rawRecord, error) {
	var out []rawRecord
	n := len(c.parts)
	for k := 0; k < n && len(out) < c.opts.MaxPollRecords; k++ {
		cp := c.parts[(c.next+k)%n]
		if len(cp.pending) == 0 {
			if err := c.fill(ctx, cp); err != nil {
				return out, err
			}
		}
		take := min(len(cp.pending), c.opts.MaxPollRecords-len(out))
		for _, r := range cp.pending[:take] {
			out = append(out, rawRecord{part: cp.idx, rec: r})
		}
		cp.pending = cp.pending[take:]
		if take > 0 {
			cp.offset = out[len(out)-1].rec.Offset + 1
		}
	}
	c.next = (c.next + 1) % n
	return out, nil
}

// fill reads the next batches of a partition into cp.pending.
func (c *consumer) fill(ctx context.Context, cp *consumerPart) error {
	if err := cp.rp.WaitOpen(ctx); err != nil {
		return mapErr(err)
	}
	start, hw := cp.rp.LogStart(), cp.rp.HighWatermark()
	if cp.offset < start || cp.offset > hw {
		return &OffsetOutOfRangeError{Topic: c.t.meta.Name, Partition: cp.idx, Offset: cp.offset, Earliest: start, Latest: hw}
	}
	var derr error
	err := cp.rp.ReadBatches(ctx, cp.offset, c.opts.FetchBytes, func(b []byte) bool {
		// Records may alias b, which Pebble reuses: decode from our own copy.
		own := append([]byte(nil), b...)
		_, cp.pending, derr = storage.DecodeRecords(own, cp.offset, cp.pending)
		return derr == nil
	})
	if derr != nil {
		return fmt.Errorf("replog: %s/%d at offset %d: %w", c.t.meta.Name, cp.idx, cp.offset, derr)
	}
	return mapErr(err)
}

// wait blocks until a partition applies something, ctx ends or the consumer
// or its Log closes.
func (c *consumer) wait(ctx context.Context, waits []<-chan struct{}) error {
	cases := make([]reflect.SelectCase, 0, len(waits)+3)
	cases = append(cases,
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.closed)},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.t.l.closed)},
	)
	for _, w := range waits {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w)})
	}
	switch i, _, _ := reflect.Select(cases); i {
	case 0:
		return ctx.Err()
	case 1, 2:
		return ErrClosed
	}
	return nil
}
