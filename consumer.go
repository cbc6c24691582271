package replog

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"slices"
	"strings"
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
	// Tombstone reports a record produced with [Message.Tombstone]: a
	// delete of Key. Its Value is T's zero value, and the codec was not
	// called. A record with an empty value is not a tombstone.
	Tombstone bool
	Headers   []Header
	// Time is the record's create time, a whole millisecond (see the
	// package doc on the batch format); for a record that a Kafka client
	// sent without a timestamp, or as LogAppendTime, the time the Kafka
	// listener received it.
	Time time.Time
}

// StartPosition is where a consumer without an explicit offset begins.
type StartPosition int

const (
	// Earliest starts at the first retained offset (the default).
	Earliest StartPosition = iota
	// Latest starts at the high watermark when the consumer is created
	// (the last stable offset with [ReadCommitted]): only records produced
	// afterwards are read.
	Latest
)

// IsolationLevel is what a consumer reads of transactions (Kafka's
// isolation.level); see [ConsumerOptions.Isolation].
type IsolationLevel int

const (
	// ReadUncommitted (the default, as in Kafka) reads every record up to
	// the high watermark, including those of transactions still open or
	// aborted.
	ReadUncommitted IsolationLevel = iota
	// ReadCommitted reads only the records of committed transactions and
	// those written outside any transaction, and reads no further than
	// the partition's last stable offset: the first offset of its oldest
	// open transaction. A transaction left open holds every later record
	// of its partitions back from ReadCommitted consumers, until it ends
	// or its coordinator aborts it at its timeout
	// ([TransactionalOptions.Timeout]).
	ReadCommitted
)

func (l IsolationLevel) String() string {
	switch l {
	case ReadUncommitted:
		return "read_uncommitted"
	case ReadCommitted:
		return "read_committed"
	}
	return fmt.Sprintf("IsolationLevel(%d)", int(l))
}

// ConsumerOptions configures [NewConsumer] and [NewMultiTopicConsumer]. The
// zero value (or nil) reads every partition from the earliest offset.
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
	// ReadAheadBytes caps the decoded records read ahead per partition by
	// the consumer's fetcher goroutine. Default [Options.MemoryBytes]/128
	// (2 MiB with the default budget), at least 1 MiB.
	ReadAheadBytes int
	// Isolation is what the consumer reads of transactions (Kafka's
	// isolation.level): [ReadUncommitted] (the default) or
	// [ReadCommitted]. Transaction markers are never returned at either
	// level; they take an offset, so offsets of records read may have
	// gaps.
	Isolation IsolationLevel

	// Group makes the consumer a member of a consumer group: every group
	// reads every record of the topics its members read, and inside a
	// group each partition is read by one member at a time. A group's
	// members may read different topics ([NewMultiTopicConsumer] reads
	// several): each is given partitions of its own topics only, and the
	// group commits offsets by topic and partition. Empty (the default):
	// no group, and Partitions (or all partitions) are read. See
	// [GroupOptions].
	Group string
	GroupOptions
	// Hooks watch this consumer, after [Options.Hooks] (see [Hook]).
	Hooks []Hook
}

// Consumer reads records of type T from the partitions of a topic (or of
// several: [NewMultiTopicConsumer]) in offset order per partition. It is
// not safe for concurrent use, except Close, which may be called from any
// goroutine, twice.
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
	return newTypedConsumer([]*Topic{t}, codec, opts)
}

// NewMultiTopicConsumer returns a consumer of several topics of one [Log]
// that decodes values with codec; each [Record] names its topic. With
// [ConsumerOptions.Group] it joins the group reading these topics: the
// group assigns it partitions of these topics only, and other members of
// the group may read other topics (Kafka's subscriptions). Without a
// group it reads every partition of every topic, and
// [ConsumerOptions.Partitions] must be nil.
//
// The methods that name a partition without a topic ([Consumer.Seek],
// [Consumer.Position], [Consumer.CommitOffsets], [Consumer.Lag],
// [Consumer.Assignment], and the callbacks OnAssigned and OnRevoked)
// serve a consumer of one topic: with several, use SeekTopic,
// PositionTopic, CommitTopicOffsets, TopicLag, TopicAssignment,
// OnAssignedTopics and OnRevokedTopics. A group member reads at most
// [MaxGroupTopics] topics.
func NewMultiTopicConsumer[T any](topics []*Topic, codec Codec[T], opts *ConsumerOptions) (*Consumer[T], error) {
	if len(topics) == 0 {
		return nil, fmt.Errorf("%w: no topics", ErrInvalidConfig)
	}
	for _, t := range topics {
		if t == nil {
			return nil, fmt.Errorf("%w: nil topic", ErrInvalidConfig)
		}
	}
	if codec == nil {
		return nil, fmt.Errorf("%w: nil codec", ErrInvalidConfig)
	}
	return newTypedConsumer(topics, codec, opts)
}

func newTypedConsumer[T any](topics []*Topic, codec Codec[T], opts *ConsumerOptions) (*Consumer[T], error) {
	c, err := newConsumer(topics, opts)
	if err != nil {
		return nil, err
	}
	if err := c.l.track(c); err != nil {
		return nil, err
	}
	return &Consumer[T]{c: c, codec: codec}, nil
}

// TopicPartition names a partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int
}

// Poll waits until records are available or ctx ends, and returns at most
// MaxPollRecords of them. If a value fails to decode, Poll returns the
// records before it and a [*DecodeError]; the next Poll goes on after it.
func (c *Consumer[T]) Poll(ctx context.Context) ([]Record[T], error) {
	var out []Record[T]
	var derr error
	err := c.c.poll(ctx, func(cp *consumerPart, avail int, r *storage.Record) bool {
		name, part := cp.t.meta.Name, cp.idx
		if out == nil {
			out = make([]Record[T], 0, avail)
		}
		rec := Record[T]{Topic: name, Partition: part, Offset: r.Offset, Key: r.Key, Tombstone: r.Tombstone, Time: time.Unix(0, r.Time)}
		if !r.Tombstone {
			v, err := c.codec.Decode(r.Value)
			if err != nil {
				derr = &DecodeError{Topic: name, Partition: part, Offset: r.Offset, Err: err}
				return false
			}
			rec.Value = v
		}
		if len(r.Headers) > 0 {
			rec.Headers = make([]Header, len(r.Headers))
			for j, h := range r.Headers {
				rec.Headers[j] = Header{Key: h.Key, Value: h.Value}
			}
		}
		if hs := c.c.hooks.consumed; len(hs) > 0 {
			cr := ConsumedRecord{Topic: name, Partition: part, Group: c.c.opts.Group, Offset: r.Offset, Key: r.Key,
				Tombstone: r.Tombstone, Headers: rec.Headers, Time: rec.Time}
			for _, h := range hs {
				h.OnRecordConsumed(cr)
			}
		}
		out = append(out, rec)
		return true
	})
	if err == nil {
		err = derr
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

// Seek moves partition to offset: the next record read from it is the one
// at offset, or, if key compaction removed it, the next one after it that
// is stored. An offset outside [log start, high watermark] is refused with
// an [*OffsetOutOfRangeError] carrying the bounds, and the position is kept.
// A consumer of several topics gets [ErrInvalidConfig]: see
// [Consumer.SeekTopic].
func (c *Consumer[T]) Seek(partition int, offset int64) error {
	topic, err := c.c.onlyTopic("Seek", "SeekTopic")
	if err != nil {
		return err
	}
	return c.SeekTopic(topic, partition, offset)
}

// SeekTopic is [Consumer.Seek] for a partition of topic, one of the
// consumer's topics.
func (c *Consumer[T]) SeekTopic(topic string, partition int, offset int64) error {
	cp, err := c.c.part(topic, partition)
	if err != nil {
		return err
	}
	rp := cp.replica()
	start, hw := rp.LogStart(), rp.HighWatermark()
	if offset < start || offset > hw {
		return &OffsetOutOfRangeError{Topic: topic, Partition: partition, Offset: offset, Earliest: start, Latest: hw}
	}
	c.c.seekTo(cp, offset)
	return nil
}

// SeekTime moves every assigned partition to its first record whose
// timestamp is at or after t (the high watermark if there is none), using
// the time index the store keeps per batch.
func (c *Consumer[T]) SeekTime(ctx context.Context, t time.Time) error {
	for _, cp := range c.c.partList() {
		off, err := cp.replica().OffsetForTime(ctx, t.UnixNano())
		if err != nil {
			return mapErr(err)
		}
		c.c.seekTo(cp, off)
	}
	return nil
}

// Lag returns, per assigned partition, how many offsets the consumer has
// not yet read up to the end it may read: the high watermark, or with
// [ReadCommitted] the last stable offset. Offsets, not records: markers
// and the records of aborted transactions count too. A consumer of several
// topics gets nil: see [Consumer.TopicLag].
func (c *Consumer[T]) Lag() map[int]int64 {
	if len(c.c.topics) != 1 {
		return nil
	}
	lag := map[int]int64{}
	for tp, n := range c.TopicLag() {
		lag[tp.Partition] = n
	}
	return lag
}

// TopicLag is [Consumer.Lag] by topic and partition, for a consumer of
// one topic or several.
func (c *Consumer[T]) TopicLag() map[TopicPartition]int64 {
	parts := c.c.partList()
	lag := make(map[TopicPartition]int64, len(parts))
	for _, cp := range parts {
		cp.mu.Lock()
		off, rp := cp.offset, cp.rp
		cp.mu.Unlock()
		lag[cp.tp()] = max(0, c.c.readEnd(rp)-off)
	}
	return lag
}

// readEnd is the offset the consumer reads up to, excluded: the last
// stable offset for a read-committed consumer, else the high watermark.
func (c *consumer) readEnd(rp *replication.Partition) int64 {
	if c.opts.Isolation == ReadCommitted {
		return rp.LastStable()
	}
	return rp.HighWatermark()
}

// Position returns the next offset the consumer reads from partition. A
// consumer of several topics gets [ErrInvalidConfig]: see
// [Consumer.PositionTopic].
func (c *Consumer[T]) Position(partition int) (int64, error) {
	topic, err := c.c.onlyTopic("Position", "PositionTopic")
	if err != nil {
		return 0, err
	}
	return c.PositionTopic(topic, partition)
}

// PositionTopic is [Consumer.Position] for a partition of topic.
func (c *Consumer[T]) PositionTopic(topic string, partition int) (int64, error) {
	cp, err := c.c.part(topic, partition)
	if err != nil {
		return 0, err
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.offset, nil
}

// part returns the consumer's partition of topic.
func (c *consumer) part(topic string, partition int) (*consumerPart, error) {
	for _, cp := range c.partList() {
		if cp.idx == partition && cp.t.meta.Name == topic {
			return cp, nil
		}
	}
	return nil, fmt.Errorf("%w: %s/%d is not assigned to this consumer", ErrPartitionNotFound, topic, partition)
}

// onlyTopic returns the name of the consumer's topic, or, for a consumer
// of several, an error saying that method needs one and naming the method
// that takes a topic.
func (c *consumer) onlyTopic(method, instead string) (string, error) {
	if len(c.topics) != 1 {
		return "", fmt.Errorf("%w: %s on a consumer of %d topics: call %s", ErrInvalidConfig, method, len(c.topics), instead)
	}
	return c.topics[0].meta.Name, nil
}

// Close releases the consumer. Safe to call twice, from any goroutine; a
// blocked Poll returns [ErrClosed].
func (c *Consumer[T]) Close() error {
	c.c.l.untrack(c.c)
	return c.c.Close()
}

// consumer is the untyped core under every Consumer[T].
//
// A fetcher goroutine reads ahead: for each assigned partition it reads,
// verifies and decompresses batches past the consumer's position until
// ReadAheadBytes are waiting, so Poll mostly hands out records already
// decoded while the next ones are decoded on another core. Seeking bumps the
// partition's generation, which discards what was read ahead.
type consumer struct {
	l *Log
	// topics are the topics read, sorted by name; at least one, all of l.
	topics []*Topic
	opts   ConsumerOptions
	hooks  hookSet
	next   int // round-robin start, owned by the Poll caller

	// partsMu guards parts, the assigned partitions: fixed without a group,
	// changed by Poll on rebalances with one. Lock order: partsMu before a
	// consumerPart's mu.
	partsMu sync.Mutex
	parts   []*consumerPart
	group   *groupMember // nil without a group
	closed  chan struct{}
	ctx     context.Context // ends on Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// ready is closed and replaced when the fetcher adds records or an
	// error; kick wakes the fetcher after a seek or when room is freed.
	readyMu   sync.Mutex
	ready     chan struct{}
	kick      chan struct{}
	closeOnce sync.Once
}

type consumerPart struct {
	t     *Topic
	idx   int
	stats *partCounters

	// Lock order: a consumerPart's mu is taken alone, never with another's
	// or with consumer.readyMu.
	mu sync.Mutex
	// rp is this node's replica of the partition. The fetcher replaces it
	// when it stops (the partition's replicas moved off this node, which
	// then serves it through a new, non-voting replica).
	rp         *replication.Partition
	gen        uint64 // bumped by every seek
	offset     int64  // next offset to hand out
	fetchOff   int64  // next offset the fetcher reads
	chunks     [][]storage.Record
	readyBytes int   // decoded bytes waiting in chunks
	err        error // fetch error at fetchOff, until the next seek
}

func (cp *consumerPart) tp() TopicPartition {
	return TopicPartition{Topic: cp.t.meta.Name, Partition: cp.idx}
}

// replica returns this node's replica of the partition, as the fetcher
// last resolved it.
func (cp *consumerPart) replica() *replication.Partition {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.rp
}

// seekTo moves the partition's position and discards what was read ahead.
func (c *consumer) seekTo(cp *consumerPart, off int64) {
	cp.mu.Lock()
	cp.gen++
	cp.offset, cp.fetchOff = off, off
	cp.chunks, cp.readyBytes, cp.err = nil, 0, nil
	cp.mu.Unlock()
	c.wakeFetcher()
}

func (c *consumer) wakeFetcher() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func newConsumer(topics []*Topic, opts *ConsumerOptions) (*consumer, error) {
	topics = slices.Clone(topics)
	slices.SortFunc(topics, func(a, b *Topic) int { return strings.Compare(a.meta.Name, b.meta.Name) })
	t := topics[0]
	for i, u := range topics[1:] {
		switch {
		case u.l != t.l:
			return nil, fmt.Errorf("%w: topics %q and %q of different Logs", ErrInvalidConfig, t.meta.Name, u.meta.Name)
		case u.meta.Name == topics[i].meta.Name:
			return nil, fmt.Errorf("%w: topic %q given twice", ErrInvalidConfig, u.meta.Name)
		}
	}
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
	if o.ReadAheadBytes == 0 {
		o.ReadAheadBytes = max(int(t.l.opts.MemoryBytes/128), 1<<20)
	}
	if o.MaxPollRecords < 0 || o.FetchBytes < 0 || o.ReadAheadBytes < 0 || (o.Start != Earliest && o.Start != Latest) ||
		(o.Isolation != ReadUncommitted && o.Isolation != ReadCommitted) {
		return nil, fmt.Errorf("%w: consumer options %+v", ErrInvalidConfig, o)
	}
	for _, t := range topics {
		if err := t.check(); err != nil {
			return nil, err
		}
	}
	if o.Partitions != nil && len(topics) > 1 {
		return nil, fmt.Errorf("%w: Partitions with several topics", ErrInvalidConfig)
	}
	var parts []TopicPartition
	for _, i := range o.Partitions {
		parts = append(parts, TopicPartition{t.meta.Name, i})
	}
	if o.Group != "" {
		if o.Partitions != nil {
			return nil, fmt.Errorf("%w: Partitions and Group exclude each other", ErrInvalidConfig)
		}
		if err := o.groupDefaults(len(topics)); err != nil {
			return nil, err
		}
	} else if o.Partitions == nil {
		for _, u := range topics {
			for i := range u.Partitions() {
				parts = append(parts, TopicPartition{u.meta.Name, i})
			}
		}
	}
	c := &consumer{l: t.l, topics: topics, opts: o, closed: make(chan struct{}), ready: make(chan struct{}), kick: make(chan struct{}, 1),
		hooks: newHookSet(t.l.opts.Hooks, o.Hooks)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := map[TopicPartition]bool{}
	for _, tp := range parts {
		if seen[tp] {
			return nil, fmt.Errorf("%w: partition %d assigned twice", ErrInvalidConfig, tp.Partition)
		}
		seen[tp] = true
		cp, err := c.newPart(ctx, c.topic(tp.Topic), tp.Partition, -1)
		if err != nil {
			return nil, err
		}
		c.parts = append(c.parts, cp)
	}
	c.ctx, c.cancel = context.WithCancel(t.l.ctx)
	if o.Group != "" {
		g, err := joinGroup(ctx, c)
		if err != nil {
			c.cancel()
			return nil, err
		}
		c.group = g
		c.wg.Add(1)
		go g.run()
	}
	c.wg.Add(1)
	go c.fetchLoop()
	return c, nil
}

// topic returns the consumer's topic of that name, nil if none.
func (c *consumer) topic(name string) *Topic {
	for _, t := range c.topics {
		if t.meta.Name == name {
			return t
		}
	}
	return nil
}

// newPart opens partition i of t for reading from offset, or from Start
// when offset is negative.
func (c *consumer) newPart(ctx context.Context, t *Topic, i int, offset int64) (*consumerPart, error) {
	rp, err := t.partition(ctx, i)
	if err != nil {
		return nil, err
	}
	if err := rp.WaitOpen(ctx); err != nil {
		return nil, mapErr(err)
	}
	cp := &consumerPart{t: t, idx: i, rp: rp, offset: offset, stats: c.l.counters.part(t.meta.Name, i)}
	switch {
	case offset >= 0:
	case c.opts.Start == Latest:
		cp.offset = c.readEnd(rp)
	default:
		cp.offset = rp.LogStart()
	}
	cp.fetchOff = cp.offset
	return cp, nil
}

func (c *consumer) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		if c.group != nil {
			err = c.group.leave()
		}
		c.cancel()
		c.wg.Wait()
	})
	return err
}

// positions maps each partition to its first record in recs: where to go
// back to when recs were fetched but not handed to the caller. Records of one
// Poll are in offset order per partition.
func positions[T any](recs []Record[T]) map[TopicPartition]int64 {
	first := map[TopicPartition]int64{}
	for _, r := range recs {
		tp := TopicPartition{r.Topic, r.Partition}
		if _, ok := first[tp]; !ok {
			first[tp] = r.Offset
		}
	}
	return first
}

func (c *consumer) rewind(first map[TopicPartition]int64) {
	for _, cp := range c.partList() {
		if off, ok := first[cp.tp()]; ok {
			c.seekTo(cp, off)
		}
	}
}

func (c *consumer) readyChan() <-chan struct{} {
	c.readyMu.Lock()
	defer c.readyMu.Unlock()
	return c.ready
}

func (c *consumer) signalReady() {
	c.readyMu.Lock()
	close(c.ready)
	c.ready = make(chan struct{})
	c.readyMu.Unlock()
}

// poll waits for read-ahead records and passes up to MaxPollRecords of them
// to fn, in offset order per partition, visiting partitions round-robin.
// avail is a hint for preallocation. When fn returns false the record it
// was given counts as consumed and poll stops. A partition's fetch error is
// returned once the records before it are handed out.
func (c *consumer) poll(ctx context.Context, fn func(cp *consumerPart, avail int, r *storage.Record) bool) error {
	if c.group != nil {
		defer c.group.polling()() // for MaxPollInterval
	}
	for {
		select {
		case <-c.closed:
			return ErrClosed
		default:
		}
		for _, t := range c.topics {
			if err := t.check(); err != nil {
				return err
			}
		}
		// Take the channel before looking, so records added in between
		// still wake us.
		ready := c.readyChan()
		if c.group != nil {
			if err := c.group.sync(ctx); err != nil {
				return err
			}
		}
		n, err := c.take(fn)
		if err != nil || n > 0 {
			return err
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return ErrClosed
		case <-c.l.closed:
			return ErrClosed
		}
	}
}

func (c *consumer) take(fn func(cp *consumerPart, avail int, r *storage.Record) bool) (int, error) {
	all := c.partList()
	n, parts, limit := 0, len(all), c.opts.MaxPollRecords
	if parts == 0 {
		return 0, nil
	}
	defer func() {
		c.next = (c.next + 1) % parts
		if n > 0 {
			c.wakeFetcher() // room was freed
		}
	}()
	for k := 0; k < parts && n < limit; k++ {
		cp := all[(c.next+k)%parts]
		for n < limit {
			// Only this goroutine removes chunks or seeks; the fetcher only
			// appends. So the chunk can be read without the lock.
			cp.mu.Lock()
			if len(cp.chunks) == 0 {
				err := cp.err
				cp.mu.Unlock()
				if err != nil && n == 0 {
					return 0, err
				}
				break
			}
			ch := cp.chunks[0]
			cp.mu.Unlock()
			m, bytes, stop := 0, 0, false
			for m < len(ch) && n < limit && !stop {
				r := &ch[m]
				stop = !fn(cp, min(limit, len(ch)), r)
				bytes += recordBytes(*r)
				m++
				n++
			}
			cp.mu.Lock()
			cp.readyBytes -= bytes
			cp.offset = ch[m-1].Offset + 1
			if m == len(ch) {
				cp.chunks = cp.chunks[1:]
				if len(cp.chunks) == 0 {
					// All fetched is handed out: what lies between
					// here and the fetch position holds no record
					// (markers, offsets compaction emptied).
					cp.offset = max(cp.offset, cp.fetchOff)
				}
			} else {
				cp.chunks[0] = ch[m:]
			}
			cp.mu.Unlock()
			if stop {
				return n, nil
			}
		}
	}
	return n, nil
}

// partList returns the assigned partitions (a snapshot).
func (c *consumer) partList() []*consumerPart {
	c.partsMu.Lock()
	defer c.partsMu.Unlock()
	return slices.Clone(c.parts)
}

func recordBytes(r storage.Record) int { return len(r.Key) + len(r.Value) + 32 }

// fetchLoop reads ahead for every partition until the consumer closes.
func (c *consumer) fetchLoop() {
	defer c.wg.Done()
	var cases []reflect.SelectCase
	for {
		progress, again := false, false
		var retry <-chan time.Time
		cases = append(cases[:0],
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.ctx.Done())},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.kick)},
		)
		for _, cp := range c.partList() {
			cp.mu.Lock()
			full := cp.err != nil || cp.readyBytes >= c.opts.ReadAheadBytes
			from, gen, rp := cp.fetchOff, cp.gen, cp.rp
			cp.mu.Unlock()
			running, replicas := c.l.node.Running(rp)
			if !running {
				if c.reresolve(cp) {
					again = true
				} else if retry == nil {
					retry = time.After(100 * time.Millisecond)
				}
				continue
			}
			if full {
				continue
			}
			changed := rp.Changed() // before reading: a later apply wakes us
			if start := rp.LogStart(); from < start && c.group != nil {
				from = c.skipToLogStart(cp, gen, from, start)
			}
			recs, size, next, err := c.read(cp, rp, from)
			if c.ctx.Err() != nil {
				return
			}
			if running, _ := c.l.node.Running(rp); !running {
				again = true // the replica stopped under the read: what it read is no answer
				continue
			}
			cp.mu.Lock()
			if cp.gen == gen { // no seek meanwhile
				switch {
				case err != nil:
					cp.err = err
					progress = true
				case len(recs) > 0:
					c.fetched(cp, recs)
					cp.chunks = append(cp.chunks, recs)
					cp.readyBytes += size
					cp.fetchOff = next
					progress = true
				case next > from:
					// Key compaction emptied what was read, or it was a
					// transaction marker: go on after it. With nothing
					// fetched left to hand out, the position moves past it
					// too (as Kafka's does past markers), so that lag and
					// commits do not stop short of it.
					if len(cp.chunks) == 0 {
						cp.offset = next
					}
					cp.fetchOff = next
					again = true
				}
			}
			cp.mu.Unlock()
			if err == nil && len(recs) == 0 && next <= from {
				cases = append(cases,
					reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(changed)},
					reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(replicas)})
			}
		}
		if progress {
			c.signalReady()
		}
		if progress || again {
			continue
		}
		if retry != nil {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(retry)})
		}
		if i, _, _ := reflect.Select(cases); i == 0 {
			return
		}
	}
}

// skipToLogStart moves a group member's fetch position from `from`, below
// the log start, to the log start, as Kafka's auto.offset.reset=earliest
// does for a committed offset that retention or [Log.DeleteRecords] went
// past, and logs it: the records in between are gone. A consumer without a
// group gets an [*OffsetOutOfRangeError] instead and chooses itself.
func (c *consumer) skipToLogStart(cp *consumerPart, gen uint64, from, start int64) int64 {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.gen != gen || cp.fetchOff != from {
		return from // a seek meanwhile: the next round looks again
	}
	cp.fetchOff = start
	c.l.node.Logger().Warn("replog: group member resumes at the log start; the records before it were deleted before it read them",
		"topic", cp.t.meta.Name, "partition", cp.idx, "position", from, "log_start", start, "skipped", start-from)
	return start
}

// reresolve gives cp this node's current replica of the partition after
// the one it read from stopped: the partition's replicas moved off this
// node, which then serves it through a non-voting replica (joining the
// partition's group if need be). The new replica catches up with the group
// before it is read, so the consumer goes on from its position. It reports
// whether cp has a replica again; if not (the join takes longer than an
// attempt, the topic is gone, the node is closing) the fetcher tries again
// later, and Poll reports a deleted topic or a closed node itself.
func (c *consumer) reresolve(cp *consumerPart) bool {
	ctx, cancel := context.WithTimeout(c.ctx, c.l.node.AttemptTimeout())
	defer cancel()
	rp, err := cp.t.partition(ctx, cp.idx)
	if err == nil {
		err = rp.CatchUp(ctx)
	}
	if err != nil {
		return false
	}
	cp.mu.Lock()
	cp.rp = rp
	cp.err = nil // read from the stopped replica
	cp.mu.Unlock()
	return true
}

// read decodes the records of up to FetchBytes of batches from offset from,
// from replica rp. It returns them with the offset after the last batch it
// read, where the next read starts: past the last record, and past any
// offsets key compaction left without a record.
//
// A read-committed consumer reads only below the last stable offset, and
// drops the records of aborted transactions. The aborted transactions are
// looked up after the read, over the offsets read, and only if a
// transactional batch was read: a log without transactions costs nothing
// more. Everything read lies below the last stable offset, loaded first,
// so every transaction it holds was decided and its abort, if any, is in
// the index.
func (c *consumer) read(cp *consumerPart, rp *replication.Partition, from int64) ([]storage.Record, int, int64, error) {
	committed := c.opts.Isolation == ReadCommitted
	lso := rp.LastStable() // before the high watermark: never above it
	start, hw := rp.LogStart(), rp.HighWatermark()
	if from < start || from > hw {
		return nil, 0, from, &OffsetOutOfRangeError{Topic: cp.t.meta.Name, Partition: cp.idx, Offset: from, Earliest: start, Latest: hw}
	}
	if committed && from >= lso {
		return nil, 0, from, nil // wait for the open transaction to end
	}
	var recs []storage.Record
	var txns []txnSpan // transactional batches read, for a read-committed consumer
	var derr error
	next := from
	err := rp.ReadBatches(c.ctx, from, c.opts.FetchBytes, func(b []byte) bool {
		h, err := storage.ParseHeader(b)
		if err == nil && committed && h.BaseOffset >= lso {
			return false // an open transaction's, or after it
		}
		if err == nil && h.Control {
			// A transaction marker takes an offset but holds no record
			// for readers: step over it, as Kafka's consumers do.
			next = max(next, h.LastOffset()+1)
			return true
		}
		// Records may alias b, which Pebble reuses: decode from our own copy.
		own := append([]byte(nil), b...)
		n := len(recs)
		h, recs, derr = storage.DecodeRecords(own, from, recs)
		if derr == nil {
			next = max(next, h.LastOffset()+1)
			if committed && h.Transactional && len(recs) > n {
				txns = append(txns, txnSpan{h: h, lo: n, hi: len(recs)})
			}
		}
		return derr == nil
	})
	if derr == nil && errors.Is(err, ErrCorrupt) {
		derr = err // a damaged store file: reported as a damaged batch is
	}
	if (derr != nil || err == nil) && len(txns) > 0 {
		// Only the batches before any damage are in txns and below next.
		var aerr error
		if recs, aerr = c.dropAborted(rp, recs, txns, next); aerr != nil {
			return nil, 0, from, mapErr(aerr)
		}
		if rp.LogStart() > from {
			// Retention went past what was read, and may have taken
			// the aborted index entries of its transactions with it:
			// nothing read can be trusted. The next read finds the new
			// log start.
			return nil, 0, from, nil
		}
		if derr != nil && len(recs) == 0 {
			// Only aborted records before the damage: the next read
			// starts after them, meets it first and reports it.
			return nil, 0, next, nil
		}
	}
	if derr != nil && len(recs) > 0 {
		// Hand out the records before the damage; the next read starts
		// after them, meets it first and reports its offset.
		return recs, recordsSize(recs), recs[len(recs)-1].Offset + 1, nil
	}
	if derr != nil {
		return nil, 0, from, fmt.Errorf("replog: %s/%d at offset %d: %w", cp.t.meta.Name, cp.idx, from, derr)
	}
	if err != nil {
		return nil, 0, from, mapErr(err)
	}
	return recs, recordsSize(recs), next, nil
}

// txnSpan is a transactional batch read: its header and its records,
// recs[lo:hi].
type txnSpan struct {
	h      storage.BatchHeader
	lo, hi int
}

// dropAborted removes from recs the records of the batches among txns
// whose transaction was aborted, looking the aborts up over [txns[0]'s
// base offset, end).
func (c *consumer) dropAborted(rp *replication.Partition, recs []storage.Record, txns []txnSpan, end int64) ([]storage.Record, error) {
	aborted, err := rp.AbortedTxns(c.ctx, txns[0].h.BaseOffset, end)
	if err != nil || len(aborted) == 0 {
		return recs, err
	}
	out := recs[:txns[0].lo]
	prev := txns[0].lo
	for _, s := range txns {
		out = append(out, recs[prev:s.lo]...)
		if storage.Committed(s.h, aborted) {
			out = append(out, recs[s.lo:s.hi]...)
		}
		prev = s.hi
	}
	out = append(out, recs[prev:]...)
	clear(recs[len(out):])
	return out, nil
}

// fetched counts records the fetcher read and tells the hooks.
func (c *consumer) fetched(cp *consumerPart, recs []storage.Record) {
	size := 0
	for i := range recs {
		size += payloadBytes(&recs[i])
	}
	cp.stats.fetchedRecords.Add(uint64(len(recs)))
	cp.stats.fetchedBytes.Add(uint64(size))
	if hs := c.hooks.fetched; len(hs) > 0 {
		bf := BatchFetched{Topic: cp.t.meta.Name, Partition: cp.idx, Group: c.opts.Group,
			FirstOffset: recs[0].Offset, LastOffset: recs[len(recs)-1].Offset, Records: len(recs), Bytes: size}
		for _, h := range hs {
			h.OnBatchFetched(bf)
		}
	}
}

// bufferedBytes is the memory its read-ahead takes.
func (c *consumer) bufferedBytes() int64 {
	var n int64
	for _, cp := range c.partList() {
		cp.mu.Lock()
		n += int64(cp.readyBytes)
		cp.mu.Unlock()
	}
	return n
}

func recordsSize(recs []storage.Record) int {
	size := 0
	for _, r := range recs {
		size += recordBytes(r)
	}
	return size
}
