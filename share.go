package replog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// Share group errors. Match them with [errors.Is].
var (
	// ErrNotAcquired: the share record is no longer this member's to
	// acknowledge or renew: its lock expired ([ShareConsumerOptions.LockDuration])
	// and the record is, or will be, delivered again, maybe to another
	// member. Whatever the member did with it will be done again.
	// Kafka's INVALID_RECORD_STATE.
	ErrNotAcquired = errors.New("replog: share record not acquired by this member (its lock expired)")
	// ErrAlreadyAcknowledged: the share record was acknowledged (accepted,
	// released or rejected) already.
	ErrAlreadyAcknowledged = errors.New("replog: share record already acknowledged")
)

// Share group defaults and limits (see [ShareConsumerOptions]).
const (
	DefaultShareLockDuration  = 30 * time.Second
	DefaultShareMaxDeliveries = 5
	DefaultShareMaxRecords    = 100
	// MaxShareInFlight is how many records of one partition a share group
	// has in flight at most (Kafka's
	// group.share.record.lock.partition.limit): acquired, waiting to be
	// delivered again, or acknowledged after one that is not. A record
	// held for long holds back its partition's share group by this many
	// records, however many members wait.
	MaxShareInFlight = replication.ShareRecordLimit
)

// Dead-letter headers: a record [ShareConsumer] writes to its
// [ShareConsumerOptions.DeadLetterTopic] carries the original's key,
// value, time and headers, and these.
const (
	HeaderDLQTopic      = "replog.dlq.topic"
	HeaderDLQPartition  = "replog.dlq.partition"
	HeaderDLQOffset     = "replog.dlq.offset"
	HeaderDLQGroup      = "replog.dlq.group"
	HeaderDLQDeliveries = "replog.dlq.deliveries"
	// HeaderDLQReason is "max-deliveries" (delivered MaxDeliveries times
	// without being accepted or rejected) or "decode" (the consumer's
	// codec failed on its value).
	HeaderDLQReason = "replog.dlq.reason"
)

// ShareConsumerOptions configures [NewShareConsumer]. The zero value (or
// nil) is valid. Members of one share group should agree on LockDuration
// and MaxDeliveries: each acquisition applies those of the member that
// makes it.
type ShareConsumerOptions struct {
	// LockDuration is how long a member holds a record it acquired before
	// it is delivered again (Kafka's group.share.record.lock.duration.ms):
	// acknowledge it, or [ShareRecord.Renew] it, before then. Default:
	// the group's [ShareGroupConfig.LockDuration] as [NewShareConsumer]
	// reads it, if set, else 30s; at most 1h. Locks are measured on the clocks of the nodes that
	// acquire and acknowledge, which must agree to well within it.
	LockDuration time.Duration
	// MaxDeliveries is how many times a record is delivered before it is
	// given up (Kafka's group.share.delivery.count.limit): then it goes to
	// DeadLetterTopic, or is rejected. Default: the group's
	// [ShareGroupConfig.DeliveryCountLimit] as [NewShareConsumer] reads
	// it, if set, else 5; at most 100.
	MaxDeliveries int
	// DeadLetterTopic, if set, is a topic where records given up are
	// written, with the Header* headers saying why, before they are
	// rejected. Empty (the default): they are rejected only. It must
	// exist ([NewShareConsumer] fails with [ErrTopicNotFound]) unless
	// DeadLetterTopicConfig is set.
	DeadLetterTopic string
	// DeadLetterTopicConfig, if set, creates DeadLetterTopic with it
	// when it does not exist (see [Log.EnsureTopic]).
	DeadLetterTopicConfig *TopicConfig
	// MaxRecords caps the records one Poll returns. Default 100; at most
	// MaxShareInFlight.
	MaxRecords int
	// Partitions limits the member to these partitions. Nil (the
	// default): all of the topic's.
	Partitions []int
	// PollInterval is how often Poll asks again while no record is
	// available (locks expire and delays pass without a write to wake
	// it). Default 100ms.
	PollInterval time.Duration
	// Isolation: with [ReadCommitted], records are handed out up to the
	// last stable offset only, and those of aborted transactions are
	// never delivered (acknowledged as they are met), as Kafka's
	// share.isolation.level=read_committed. Members of a group should
	// agree on it. Default: [ReadCommitted] if the group's
	// [ShareGroupConfig.IsolationLevel] is read_committed as
	// [NewShareConsumer] reads it, else [ReadUncommitted].
	Isolation IsolationLevel
}

func (o *ShareConsumerOptions) withDefaults() (ShareConsumerOptions, error) {
	var c ShareConsumerOptions
	if o != nil {
		c = *o
	}
	if c.LockDuration == 0 {
		c.LockDuration = DefaultShareLockDuration
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = DefaultShareMaxDeliveries
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = DefaultShareMaxRecords
	}
	if c.PollInterval == 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	switch {
	case c.LockDuration < time.Millisecond || c.LockDuration > replication.MaxShareLock:
		return c, fmt.Errorf("%w: LockDuration %v (1ms to %v)", ErrInvalidConfig, c.LockDuration, replication.MaxShareLock)
	case c.MaxDeliveries < 1 || c.MaxDeliveries > replication.MaxShareDeliveries:
		return c, fmt.Errorf("%w: MaxDeliveries %d (1 to %d)", ErrInvalidConfig, c.MaxDeliveries, replication.MaxShareDeliveries)
	case c.MaxRecords < 1 || c.MaxRecords > MaxShareInFlight:
		return c, fmt.Errorf("%w: MaxRecords %d (1 to %d)", ErrInvalidConfig, c.MaxRecords, MaxShareInFlight)
	case c.PollInterval < 0:
		return c, fmt.Errorf("%w: PollInterval %v", ErrInvalidConfig, c.PollInterval)
	case c.DeadLetterTopicConfig != nil && c.DeadLetterTopic == "":
		return c, fmt.Errorf("%w: DeadLetterTopicConfig without a DeadLetterTopic", ErrInvalidConfig)
	case c.Isolation != ReadUncommitted && c.Isolation != ReadCommitted:
		return c, fmt.Errorf("%w: Isolation %d", ErrInvalidConfig, c.Isolation)
	}
	return c, nil
}

// ShareConsumer is a member of a share group (Kafka's share groups,
// KIP-932): any number of members, on any nodes, read the same partitions
// at once, and each record goes to one member at a time, which
// acknowledges it (see [ShareRecord]). Records come in no particular order
// across members, and a record may be delivered more than once (its lock
// expired, its member released it or died): processing must be idempotent,
// or at-least-once is what it gets.
//
// The share group's state is held by the cluster's share coordinator, a
// Raft group of its own: it survives any minority of nodes failing, and
// is the same whichever node a member runs on. A share group's name is
// its own: it is unrelated to a consumer group of the same name.
//
// Poll must be called from one goroutine at a time; the records' methods,
// [ShareConsumer.AckAll] and Close from any goroutine. Close releases the
// records the member holds, which go to other members at once.
type ShareConsumer[T any] struct {
	c     *shareConsumer
	codec Codec[T]
}

type shareConsumer struct {
	t      *Topic
	group  string
	member string
	opts   ShareConsumerOptions
	// latest: the group's share.auto.offset.reset says latest (set
	// explicitly; a Go member's default is the log start).
	latest bool
	parts  []*sharePart
	dlq    *Producer[[]byte]
	closed chan struct{}
	// ctx ends when the member closes, cancelling a Poll under way.
	ctx    context.Context
	cancel context.CancelFunc

	pollMu sync.Mutex // one Poll at a time
	next   int        // the partition the next Poll asks first

	closeOnce sync.Once
	closeErr  error
}

type sharePart struct {
	idx   int
	rp    *replication.Partition // replaced by Poll (see reresolve)
	key   replication.SharePartitionKey
	stats *partCounters
	// known: this member asked the coordinator for records of the
	// partition once (see pollPart).
	known bool
}

// NewShareConsumer returns a member of the share group group reading topic
// t, decoding values with codec.
func NewShareConsumer[T any](t *Topic, group string, codec Codec[T], opts *ShareConsumerOptions) (*ShareConsumer[T], error) {
	switch {
	case t == nil:
		return nil, fmt.Errorf("%w: nil topic", ErrInvalidConfig)
	case codec == nil:
		return nil, fmt.Errorf("%w: nil codec", ErrInvalidConfig)
	case group == "" || len(group) > replication.MaxShareNameLength:
		return nil, fmt.Errorf("%w: share group name of %d bytes (1 to %d)", ErrInvalidConfig, len(group), replication.MaxShareNameLength)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	c := &shareConsumer{t: t, group: group, member: fmt.Sprintf("n%d-%s", t.l.opts.NodeID, hex.EncodeToString(id[:])),
		opts: o, closed: make(chan struct{})}
	parts := o.Partitions
	if parts == nil {
		for i := range t.Partitions() {
			parts = append(parts, i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.groupConfig(ctx, opts); err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for _, i := range parts {
		if seen[i] {
			return nil, fmt.Errorf("%w: partition %d given twice", ErrInvalidConfig, i)
		}
		seen[i] = true
		rp, err := t.partition(ctx, i)
		if err != nil {
			return nil, err
		}
		if err := rp.WaitOpen(ctx); err != nil {
			return nil, mapErr(err)
		}
		c.parts = append(c.parts, &sharePart{idx: i, rp: rp, key: replication.SharePartitionKey{
			Group: group, Topic: t.meta.Name, TopicID: t.meta.ID, Partition: i}, stats: t.l.counters.part(t.meta.Name, i)})
	}
	if len(c.parts) == 0 {
		return nil, fmt.Errorf("%w: no partitions", ErrInvalidConfig)
	}
	if o.DeadLetterTopic != "" {
		dt, err := t.l.Topic(o.DeadLetterTopic)
		if errors.Is(err, ErrTopicNotFound) && o.DeadLetterTopicConfig != nil {
			dt, err = t.l.EnsureTopic(ctx, o.DeadLetterTopic, *o.DeadLetterTopicConfig)
		}
		if err != nil {
			return nil, fmt.Errorf("dead-letter topic: %w", err)
		}
		if c.dlq, err = NewProducer(dt, Bytes(), nil); err != nil {
			return nil, err
		}
	}
	c.ctx, c.cancel = context.WithCancel(t.l.ctx)
	if err := t.l.track(c); err != nil {
		c.cancel()
		if c.dlq != nil {
			_ = c.dlq.Close()
		}
		return nil, err
	}
	return &ShareConsumer[T]{c: c, codec: codec}, nil
}

// groupConfig applies the group's config (see [Log.SetShareGroupConfig])
// to the options opts leaves zero.
func (c *shareConsumer) groupConfig(ctx context.Context, opts *ShareConsumerOptions) error {
	cfg, err := c.t.l.node.ShareGroupConfig(ctx, c.group)
	if err != nil {
		return mapErr(err)
	}
	if (opts == nil || opts.LockDuration == 0) && cfg.LockDuration != 0 {
		c.opts.LockDuration = cfg.LockDuration
	}
	if (opts == nil || opts.MaxDeliveries == 0) && cfg.DeliveryCountLimit != 0 {
		c.opts.MaxDeliveries = cfg.DeliveryCountLimit
	}
	if (opts == nil || opts.Isolation == ReadUncommitted) && cfg.IsolationLevel == replication.ShareReadCommitted {
		c.opts.Isolation = ReadCommitted
	}
	c.latest = cfg.AutoOffsetReset == replication.ShareOffsetLatest
	return nil
}

// Member is the member's id in its share group: unique, made up at
// [NewShareConsumer].
func (c *ShareConsumer[T]) Member() string { return c.c.member }

// ShareRecord is a record a share group member acquired: it is the
// member's until [ShareRecord.Deadline], unless acknowledged first with
// exactly one of Ack, Release or Reject (then [ErrAlreadyAcknowledged]).
// After the deadline they fail with [ErrNotAcquired] and the record is
// delivered again. A copy of a ShareRecord is the same delivery.
//
// The mapping to KIP-932's acknowledgement types and to NATS JetStream:
// Ack is ACCEPT (JetStream's Ack), Release is RELEASE (Nak, with a delay
// as NakWithDelay), Reject is REJECT (Term), Renew is JetStream's
// InProgress (KIP-932 has no renewal; its lock lasts the poll).
type ShareRecord[T any] struct {
	Record[T]
	// Deliveries counts this record's deliveries, this one included: 1
	// the first time.
	Deliveries int
	d          *shareDelivery
}

// shareDelivery is the state of one delivery, shared by copies of its
// ShareRecord.
type shareDelivery struct {
	c        *shareConsumer
	p        *sharePart
	d        replication.ShareDelivery
	deadline atomic.Int64 // unix ns
	done     atomic.Bool
}

// Deadline is when the member's lock on the record expires, as last
// acquired or renewed.
func (r *ShareRecord[T]) Deadline() time.Time {
	if r.d == nil {
		return time.Time{}
	}
	return time.Unix(0, r.d.deadline.Load())
}

// Ack accepts the record: it was processed and is done for the group.
// An error matching [ErrAmbiguous] means the coordinator's answer was lost
// and a retry found the record accepted: by this call, or by another
// member the record went to after this member's lock expired.
func (r *ShareRecord[T]) Ack(ctx context.Context) error {
	return r.ack(ctx, replication.ShareAccept, 0)
}

// Release gives the record back, to be delivered again, to any member,
// once delay passes (0: at once; at most 1h; negative: [ErrInvalidConfig]).
// Its delivery counts toward MaxDeliveries.
func (r *ShareRecord[T]) Release(ctx context.Context, delay time.Duration) error {
	if delay < 0 || delay > replication.MaxShareLock {
		return fmt.Errorf("%w: release delay %v (0 to %v)", ErrInvalidConfig, delay, replication.MaxShareLock)
	}
	return r.ack(ctx, replication.ShareRelease, delay)
}

// Reject gives up on the record: it is done for the group, unprocessed,
// and not dead-lettered (do that first if it must be).
func (r *ShareRecord[T]) Reject(ctx context.Context) error {
	return r.ack(ctx, replication.ShareReject, 0)
}

// Renew extends the member's lock on the record to LockDuration from now,
// for work that takes longer (JetStream's InProgress).
func (r *ShareRecord[T]) Renew(ctx context.Context) error {
	if r.d == nil {
		return fmt.Errorf("%w: not a delivered share record", ErrInvalidConfig)
	}
	c := r.d.c
	if err := c.check(); err != nil {
		return err
	}
	if r.d.done.Load() {
		return ErrAlreadyAcknowledged
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return err
	}
	dl, err := c.t.l.node.ShareRenew(ctx, r.d.p.key, c.member, []replication.ShareDelivery{r.d.d}, c.opts.LockDuration)
	if err != nil {
		return shareErr(err)
	}
	r.d.deadline.Store(dl.UnixNano())
	return nil
}

func (r *ShareRecord[T]) ack(ctx context.Context, a replication.ShareAck, delay time.Duration) error {
	if r.d == nil {
		return fmt.Errorf("%w: not a delivered share record", ErrInvalidConfig)
	}
	return r.d.c.acknowledge(ctx, []*shareDelivery{r.d}, a, delay)
}

// AckAll accepts recs, with one request per partition rather than one per
// record: all of a partition's or none (then the error says why, and the
// records of partitions acknowledged before it stay acknowledged).
func (c *ShareConsumer[T]) AckAll(ctx context.Context, recs []ShareRecord[T]) error {
	ds := make([]*shareDelivery, 0, len(recs))
	for _, r := range recs {
		if r.d == nil || r.d.c != c.c {
			return fmt.Errorf("%w: a record not delivered to this member", ErrInvalidConfig)
		}
		ds = append(ds, r.d)
	}
	return c.c.acknowledge(ctx, ds, replication.ShareAccept, 0)
}

func (c *shareConsumer) check() error {
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	return c.t.check()
}

// acknowledge acknowledges ds, by partition, in as many requests.
func (c *shareConsumer) acknowledge(ctx context.Context, ds []*shareDelivery, a replication.ShareAck, delay time.Duration) error {
	if err := c.check(); err != nil {
		return err
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return err // nothing done
	}
	byPart := map[*sharePart][]*shareDelivery{}
	for _, d := range ds {
		if d.done.Load() {
			return ErrAlreadyAcknowledged
		}
		byPart[d.p] = append(byPart[d.p], d)
	}
	for _, p := range c.parts {
		pds := byPart[p]
		if len(pds) == 0 {
			continue
		}
		for chunk := range slices.Chunk(pds, replication.ShareRecordLimit) {
			list := make([]replication.ShareDelivery, len(chunk))
			for i, d := range chunk {
				list[i] = d.d
			}
			if err := c.t.l.node.ShareAck(ctx, p.key, c.member, list, a, delay); err != nil {
				return shareErr(err)
			}
			for _, d := range chunk {
				d.done.Store(true)
			}
			p.stats.shareAcked(a, len(chunk))
		}
	}
	return nil
}

// shareErr maps a share coordinator's error to the public ones.
func shareErr(err error) error {
	switch {
	case errors.Is(err, replication.ErrShareNotAcquired):
		return fmt.Errorf("%w: %w", ErrNotAcquired, err)
	case errors.Is(err, replication.ErrShareAcknowledged):
		return fmt.Errorf("%w: %w", ErrAlreadyAcknowledged, err)
	case errors.Is(err, replication.ErrShareTooMany):
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return mapErr(err)
}

// Poll waits until records are available to this member or ctx ends, and
// returns at most MaxRecords of them, acquired for LockDuration. It asks
// the partitions in turn, from the one after the last Poll's first.
//
// Records delivered MaxDeliveries times already are not returned: Poll
// writes them to the DeadLetterTopic (if any) and rejects them. So are
// records whose value the codec fails to decode, and Poll then returns
// the other records with a [*DecodeError] naming the first of them.
// Offsets without a record (transaction markers, records key compaction
// removed) are accepted as they are met.
func (c *ShareConsumer[T]) Poll(ctx context.Context) ([]ShareRecord[T], error) {
	sc := c.c
	sc.pollMu.Lock()
	defer sc.pollMu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(sc.ctx, cancel)()
	for {
		if err := sc.check(); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			if sc.check() != nil {
				return nil, ErrClosed
			}
			return nil, err
		}
		var changed []<-chan struct{}
		var out []ShareRecord[T]
		var derr error
		first := sc.next
		sc.next = (sc.next + 1) % len(sc.parts)
		for k := range sc.parts {
			p := sc.parts[(first+k)%len(sc.parts)]
			changed = append(changed, p.rp.Changed())
			room := sc.opts.MaxRecords - len(out)
			if room <= 0 {
				break
			}
			recs, err := c.pollPart(ctx, p, room)
			if derr == nil {
				var de *DecodeError
				if errors.As(err, &de) {
					derr, err = err, nil
				}
			}
			if err != nil {
				if len(out) > 0 {
					return out, derr // the error comes back at the next Poll
				}
				if sc.check() != nil {
					return nil, ErrClosed
				}
				return nil, err
			}
			out = append(out, recs...)
		}
		if len(out) > 0 || derr != nil {
			return out, derr
		}
		timer := time.NewTimer(sc.opts.PollInterval)
		cases := make(chan struct{}, 1)
		stop := make(chan struct{})
		for _, ch := range changed {
			go func() {
				select {
				case <-ch:
					select {
					case cases <- struct{}{}:
					default:
					}
				case <-stop:
				}
			}()
		}
		select {
		case <-cases:
		case <-timer.C:
		case <-ctx.Done():
		case <-sc.closed:
		case <-sc.t.l.closed:
		}
		close(stop)
		timer.Stop()
	}
}

// pollPart acquires up to room records of p and reads them.
func (c *ShareConsumer[T]) pollPart(ctx context.Context, p *sharePart, room int) ([]ShareRecord[T], error) {
	sc := c.c
	if running, _ := sc.t.l.node.Running(p.rp); !running && !sc.reresolve(ctx, p) {
		return nil, nil // tried again at the next round
	}
	committed := sc.opts.Isolation == ReadCommitted
	lso := p.rp.LastStable() // before the high watermark: never above it
	start := p.rp.LogStart()
	hw := p.rp.HighWatermark()
	if committed {
		hw = min(hw, lso)
	}
	req := replication.ShareAcquireRequest{SharePartitionKey: p.key, Member: sc.member, Max: room,
		HighWatermark: hw, LogStart: min(start, hw), Lock: sc.opts.LockDuration, MaxDeliveries: sc.opts.MaxDeliveries,
		Latest: sc.latest}
	if (p.known || !sc.latest) && (hw <= start || !sc.t.l.node.ShareAvailable(req)) {
		return nil, nil
	}
	// A group starting at the latest offset: the first acquisition
	// creates the partition's state if the coordinator holds none, so
	// that what is written from now on is delivered.
	p.known = true
	actx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	res, err := sc.t.l.node.ShareAcquire(actx, req)
	if err != nil {
		return nil, shareErr(err)
	}
	if len(res.Records) == 0 {
		return nil, nil
	}
	stored, err := sc.readOffsets(ctx, p, res.Records)
	if err != nil {
		// Held until their lock expires; released here if we can.
		sc.giveBack(ctx, p, res.Records)
		return nil, err
	}
	var out []ShareRecord[T]
	var gaps, rejects []replication.ShareDelivery
	var derr error
	name := sc.t.meta.Name
	for _, a := range res.Records {
		r, ok := stored[a.Offset]
		if !ok {
			gaps = append(gaps, a.ShareDelivery)
			continue
		}
		reason := ""
		rec := Record[T]{Topic: name, Partition: p.idx, Offset: r.Offset, Key: r.Key, Tombstone: r.Tombstone, Time: time.Unix(0, r.Time)}
		if len(r.Headers) > 0 {
			rec.Headers = make([]Header, len(r.Headers))
			for j, h := range r.Headers {
				rec.Headers[j] = Header{Key: h.Key, Value: h.Value}
			}
		}
		switch {
		case a.DeadLetter:
			reason = "max-deliveries"
		case !r.Tombstone:
			v, err := c.codec.Decode(r.Value)
			if err != nil {
				reason = "decode"
				if derr == nil {
					derr = &DecodeError{Topic: name, Partition: p.idx, Offset: r.Offset, Err: err}
				}
			}
			rec.Value = v
		}
		if reason != "" {
			if err := sc.deadLetter(ctx, p, r, a.Deliveries, reason); err != nil {
				// Left locked: it is delivered again as a dead letter
				// once its lock expires.
				sc.t.l.node.Logger().Warn("replog: share record not dead-lettered yet", "topic", name,
					"partition", p.idx, "offset", r.Offset, "err", err)
				continue
			}
			rejects = append(rejects, a.ShareDelivery)
			continue
		}
		d := &shareDelivery{c: sc, p: p, d: a.ShareDelivery}
		d.deadline.Store(res.Deadline)
		out = append(out, ShareRecord[T]{Record: rec, Deliveries: a.Deliveries, d: d})
	}
	if len(gaps) > 0 {
		if err := sc.t.l.node.ShareAck(ctx, p.key, sc.member, gaps, replication.ShareAccept, 0); err != nil {
			sc.t.l.node.Logger().Debug("replog: share gaps not acknowledged; their lock expires", "err", err)
		}
	}
	if len(rejects) > 0 {
		if err := sc.t.l.node.ShareAck(ctx, p.key, sc.member, rejects, replication.ShareReject, 0); err != nil {
			sc.t.l.node.Logger().Debug("replog: dead letters not rejected; they come back", "err", err)
		} else {
			p.stats.shareRejected.Add(uint64(len(rejects)))
		}
	}
	p.stats.shareAcquired.Add(uint64(len(out)))
	return out, derr
}

// reresolve gives p this node's current replica of the partition after the
// one it read from stopped (the partition's replicas moved off this node,
// which then serves it through a non-voting replica), caught up with the
// partition's group, as the consumer's reresolve does.
func (sc *shareConsumer) reresolve(ctx context.Context, p *sharePart) bool {
	ctx, cancel := context.WithTimeout(ctx, sc.t.l.node.AttemptTimeout())
	defer cancel()
	rp, err := sc.t.partition(ctx, p.idx)
	if err == nil {
		err = rp.CatchUp(ctx)
	}
	if err != nil {
		return false
	}
	p.rp = rp // only Poll, under pollMu, uses p.rp
	return true
}

// giveBack releases acquired records the member cannot hand out.
func (sc *shareConsumer) giveBack(ctx context.Context, p *sharePart, recs []replication.ShareAcquiredRecord) {
	ds := make([]replication.ShareDelivery, len(recs))
	for i, a := range recs {
		ds[i] = a.ShareDelivery
	}
	_ = sc.t.l.node.ShareAck(ctx, p.key, sc.member, ds, replication.ShareRelease, 0)
}

// readOffsets reads from p's replica the records at the acquired offsets,
// which lie below the high watermark the acquisition was made with. A
// read-committed member leaves out the records of aborted transactions
// (all below the last stable offset it acquired under, so decided).
func (sc *shareConsumer) readOffsets(ctx context.Context, p *sharePart, recs []replication.ShareAcquiredRecord) (map[int64]storage.Record, error) {
	want := make(map[int64]bool, len(recs))
	lo, hi := recs[0].Offset, recs[0].Offset
	for _, a := range recs {
		want[a.Offset] = true
		lo, hi = min(lo, a.Offset), max(hi, a.Offset)
	}
	var aborted []storage.AbortedTxn
	if sc.opts.Isolation == ReadCommitted {
		var err error
		if aborted, err = p.rp.AbortedTxns(ctx, lo, hi+1); err != nil {
			return nil, mapErr(err)
		}
	}
	out := make(map[int64]storage.Record, len(recs))
	from := max(lo, p.rp.LogStart())
	for from <= hi {
		next := from
		var derr error
		var batch []storage.Record
		err := p.rp.ReadBatches(ctx, from, 1<<20, func(b []byte) bool {
			h, err := storage.ParseHeader(b)
			if err == nil && (h.Control || (h.Transactional && !storage.Committed(h, aborted))) {
				// A marker, or an aborted transaction's batch: no
				// record to hand out.
				next = max(next, h.LastOffset()+1)
				return h.LastOffset() < hi
			}
			own := append([]byte(nil), b...)
			batch = batch[:0]
			h, batch, derr = storage.DecodeRecords(own, from, batch)
			if derr != nil {
				return false
			}
			next = max(next, h.LastOffset()+1)
			for _, r := range batch {
				if want[r.Offset] {
					out[r.Offset] = r
				}
			}
			return next <= hi
		})
		if derr != nil {
			return nil, fmt.Errorf("replog: %s/%d at offset %d: %w", sc.t.meta.Name, p.idx, from, derr)
		}
		if err != nil {
			return nil, mapErr(err)
		}
		if next == from {
			break // nothing more stored below the high watermark
		}
		from = next
	}
	return out, nil
}

// deadLetter writes r to the dead-letter topic, if any.
func (sc *shareConsumer) deadLetter(ctx context.Context, p *sharePart, r storage.Record, deliveries int, reason string) error {
	if sc.dlq == nil {
		return nil
	}
	hs := make([]Header, 0, len(r.Headers)+6)
	for _, h := range r.Headers {
		hs = append(hs, Header{Key: h.Key, Value: h.Value})
	}
	hs = append(hs,
		Header{Key: HeaderDLQTopic, Value: []byte(sc.t.meta.Name)},
		Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(p.idx))},
		Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		Header{Key: HeaderDLQGroup, Value: []byte(sc.group)},
		Header{Key: HeaderDLQDeliveries, Value: []byte(strconv.Itoa(deliveries))},
		Header{Key: HeaderDLQReason, Value: []byte(reason)})
	_, err := sc.dlq.Produce(ctx, Message[[]byte]{Key: r.Key, Value: r.Value, Tombstone: r.Tombstone && r.Key != nil,
		Headers: hs, Time: time.Unix(0, r.Time)})
	if err == nil {
		p.stats.shareDeadLettered.Add(1)
	}
	return err
}

// Close releases the records the member holds, so that other members get
// them at once, and ends the member. Records it returned fail with
// [ErrClosed] afterwards. Safe to call twice.
func (c *ShareConsumer[T]) Close() error { return c.c.Close() }

func (sc *shareConsumer) Close() error {
	sc.closeOnce.Do(func() {
		close(sc.closed)
		sc.cancel()
		sc.pollMu.Lock() // wait for a Poll under way
		defer sc.pollMu.Unlock()
		// Not on a Log aborted (replogtest's Crash, a power loss): its
		// records stay locked, as a dead member's do.
		if sc.t.l.ctx.Err() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			for _, p := range sc.parts {
				if err := sc.t.l.node.ShareLeave(ctx, p.key, sc.member); err != nil && sc.closeErr == nil {
					sc.closeErr = shareErr(err)
				}
			}
			cancel()
		}
		if sc.dlq != nil {
			if err := sc.dlq.Close(); err != nil && sc.closeErr == nil {
				sc.closeErr = err
			}
		}
		sc.t.l.untrack(sc)
	})
	return sc.closeErr
}
