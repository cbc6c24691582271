package replogkafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog/internal/kafkabridge"
	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// ShareFetch and ShareAcknowledge (KIP-932, v1 and v2): a member's share
// session on this node lists the partitions it fetches; each ShareFetch
// acknowledges what it carries, then acquires records of the session's
// partitions from the share coordinator (a Raft proposal per partition
// with records available) and answers them with the batches holding them,
// read from this node's replica. Any node serves any partition: the share
// coordinator decides which records a member gets, and each node hands
// out only records below its own replica's high watermark.

// Share session limits.
const (
	// maxShareSessions caps the share sessions one node holds (Kafka's
	// group.share.max.share.sessions is 2000).
	maxShareSessions = 10000
	// maxShareSessionParts caps the partitions of one session, and
	// maxShareSessionPartsAll those of all sessions on a node.
	maxShareSessionParts    = 10000
	maxShareSessionPartsAll = 1000000
	// shareSessionIdle is how long a session lives without a request.
	shareSessionIdle = 2 * time.Minute
	// maxShareAckRange caps the offsets a request acknowledges in one
	// partition: no more are ever in flight in a share partition (twice
	// that, to leave room for a window that moved in between).
	maxShareAckRange = 2 * replication.ShareRecordLimit
	// sharePollInterval is how often a waiting ShareFetch asks again when
	// nothing was written (locks expire, delays pass, without a write).
	sharePollInterval = 100 * time.Millisecond
	// defaultShareMaxRecords is a ShareFetch's MaxRecords when it names
	// none (KIP-1206's default).
	defaultShareMaxRecords = 500
)

type shareSessionKey struct{ group, member string }

type sharePartKey struct {
	id        [16]byte
	partition int32
}

type shareSession struct {
	// epoch is the epoch the member's next request carries.
	epoch int32
	parts []sharePartKey
	in    map[sharePartKey]bool
	// next is where the next fetch starts in parts, so that every
	// partition gets its turn when MaxRecords runs out.
	next int
	used time.Time
	// gone: closed, replaced or expired, while a request of it may
	// still run; its partitions no longer count.
	gone bool
}

type shareSessions struct {
	mu sync.Mutex
	m  map[shareSessionKey]*shareSession
	// parts counts the partitions of all sessions in m.
	parts int
}

func newShareSessions() *shareSessions {
	return &shareSessions{m: map[shareSessionKey]*shareSession{}}
}

// shareConfig is a share group's settings as the data path uses them.
type shareConfig struct {
	lock          time.Duration
	maxDeliveries int
	latest        bool
	// committed: share.isolation.level=read_committed: records are
	// handed out up to the last stable offset, and those of aborted
	// transactions are archived instead.
	committed bool
}

// maxShareKnown caps the share partitions a node remembers fetching.
const maxShareKnown = 1 << 16

// shareKnown reports whether a member fetched the share partition through
// this node before.
func (s *Server) shareKnown(k replication.SharePartitionKey) bool {
	s.shareIDs.Lock()
	defer s.shareIDs.Unlock()
	return s.shareIDs.known[k]
}

// shareGroupConfig is the group's settings (share.* of its GroupConfig
// resource, defaults for those unset), from this node's replica of the
// share coordinator: a setting just changed applies once it got here.
func (s *Server) shareGroupConfig(group string) shareConfig {
	c := s.node.ShareGroupConfigStale(group).WithDefaults()
	return shareConfig{lock: c.LockDuration, maxDeliveries: c.DeliveryCountLimit,
		latest: c.AutoOffsetReset == replication.ShareOffsetLatest, committed: c.IsolationLevel == replication.ShareReadCommitted}
}

// shareTopics maps Kafka topic ids to this node's metadata of the topics.
func (s *Server) shareTopics() map[[16]byte]*replication.TopicMeta {
	meta := s.node.Metadata()
	s.shareIDs.Lock()
	defer s.shareIDs.Unlock()
	if s.shareIDs.meta != meta {
		m := make(map[[16]byte]*replication.TopicMeta, len(meta.Topics))
		for _, tm := range meta.Topics {
			m[kafkaTopicID(tm)] = tm
		}
		s.shareIDs.meta, s.shareIDs.ids = meta, m
	}
	return s.shareIDs.ids
}

// openSession checks a request's session epoch against the member's
// session and moves it on: 0 opens a new session (replacing one the member
// had), -1 closes it, any other must be the session's. It returns the
// session (nil when closed), the partitions of a session closed or
// replaced, whose records the member holds are to be released, or the
// error code.
func (s *Server) openSession(group, member string, epoch int32) (*shareSession, []sharePartKey, int16) {
	ss := s.shareSessions
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := shareSessionKey{group, member}
	sess := ss.m[k]
	switch {
	case epoch == 0:
		if sess == nil && len(ss.m) >= maxShareSessions {
			return nil, nil, kerr.ShareSessionLimitReached.Code
		}
		// A member opening a session again gave up the one it had (its
		// client reset it after an error): what it acquired there it
		// will never acknowledge, and is released with it.
		var old []sharePartKey
		if sess != nil {
			old = sess.parts
			ss.drop(sess)
		}
		sess = &shareSession{epoch: 1, in: map[sharePartKey]bool{}, used: time.Now()}
		ss.m[k] = sess
		return sess, old, 0
	case sess == nil:
		return nil, nil, kerr.ShareSessionNotFound.Code
	case epoch == -1:
		delete(ss.m, k)
		ss.drop(sess)
		return nil, sess.parts, 0
	case epoch != sess.epoch:
		return nil, nil, kerr.InvalidShareSessionEpoch.Code
	}
	sess.epoch++
	if sess.epoch == math.MaxInt32 || sess.epoch <= 0 {
		sess.epoch = 1 // as Kafka wraps it
	}
	sess.used = time.Now()
	return sess, nil, 0
}

// expireSessions drops sessions idle for shareSessionIdle.
func (ss *shareSessions) expire() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, sess := range ss.m {
		if time.Since(sess.used) > shareSessionIdle {
			delete(ss.m, k)
			ss.drop(sess)
		}
	}
}

// drop uncounts the partitions of a session taken out of m.
func (ss *shareSessions) drop(sess *shareSession) {
	if !sess.gone {
		sess.gone = true
		ss.parts -= len(sess.parts)
	}
}

// shareAckBatch is an acknowledgement batch of either request.
type shareAckBatch struct {
	first, last int64
	types       []int8
}

// Acknowledge types (KIP-932, KIP-1222).
const (
	ackGap     = 0
	ackAccept  = 1
	ackRelease = 2
	ackReject  = 3
	ackRenew   = 4
)

// acknowledge applies a partition's acknowledgement batches for member and
// returns the partition's acknowledge error code.
func (s *Server) acknowledge(ctx context.Context, key replication.SharePartitionKey, member string, batches []shareAckBatch, renew bool, lock time.Duration) (int16, error) {
	by := map[int8][]replication.ShareDelivery{}
	end := int64(-1)
	total := int64(0)
	for _, b := range batches {
		n := b.last - b.first + 1
		total += max(n, 0)
		switch {
		case total > maxShareAckRange:
			// A member holds at most this many records of a partition:
			// more is no acknowledgement of anything it holds.
			return kerr.InvalidRequest.Code, fmt.Errorf("acknowledgements of more than %d offsets", maxShareAckRange)
		case b.first < 0 || b.first > b.last || n > maxShareAckRange:
			return kerr.InvalidRequest.Code, fmt.Errorf("acknowledgement batch %d-%d", b.first, b.last)
		case b.first <= end:
			return kerr.InvalidRequest.Code, errors.New("acknowledgement batches overlap or are out of order")
		case len(b.types) != 1 && int64(len(b.types)) != n:
			return kerr.InvalidRequest.Code, fmt.Errorf("%d acknowledge types for %d offsets", len(b.types), n)
		}
		end = b.last
		for off := b.first; off <= b.last; off++ {
			t := b.types[0]
			if len(b.types) > 1 {
				t = b.types[off-b.first]
			}
			switch {
			case t == ackRenew && !renew, t < ackGap || t > ackRenew:
				return kerr.InvalidRequest.Code, fmt.Errorf("acknowledge type %d", t)
			case t == ackGap:
				// An offset with no record (a transaction marker, a
				// record compaction removed) is done.
				t = ackAccept
			}
			by[t] = append(by[t], replication.ShareDelivery{Offset: off})
		}
	}
	code := int16(0)
	for _, t := range []int8{ackAccept, ackRelease, ackReject, ackRenew} {
		ds := by[t]
		for len(ds) > 0 {
			chunk := ds[:min(len(ds), replication.ShareRecordLimit)]
			ds = ds[len(chunk):]
			var refused []int64
			var err error
			switch t {
			case ackRenew:
				refused, err = s.node.ShareRenewEach(ctx, key, member, chunk, lock)
			default:
				refused, err = s.node.ShareAckEach(ctx, key, member, chunk, shareAckOf(t), 0)
			}
			if err != nil {
				return shareErrCode(err), err
			}
			if len(refused) > 0 {
				code = kerr.InvalidRecordState.Code
			}
			if t != ackRenew {
				kafkabridge.ShareCounted(s.l, key.Topic, key.Partition, kafkabridge.ShareKind(t), len(chunk)-len(refused))
			}
		}
	}
	return code, nil
}

func shareAckOf(t int8) replication.ShareAck {
	switch t {
	case ackRelease:
		return replication.ShareRelease
	case ackReject:
		return replication.ShareReject
	}
	return replication.ShareAccept
}

// shareErrCode maps a share coordinator error to a Kafka code.
func shareErrCode(err error) int16 {
	switch {
	case errors.Is(err, replication.ErrShareNotAcquired), errors.Is(err, replication.ErrShareAcknowledged):
		return kerr.InvalidRecordState.Code
	case errors.Is(err, replication.ErrShareTooMany):
		return kerr.GroupMaxSizeReached.Code
	case errors.Is(err, replication.ErrInvalid):
		return kerr.InvalidRequest.Code
	}
	code := errorCode(kafkabridge.MapErr(err))
	if code == kerr.UnknownServerError.Code {
		code = kerr.RequestTimedOut.Code // the coordinator's Raft group is busy or electing: retriable
	}
	return code
}

// sharePart is a partition a share request names.
type sharePart struct {
	key  replication.SharePartitionKey
	kid  sharePartKey
	rp   *replication.Partition
	code int16 // an error for the partition, then key and rp are unset
}

// resolveSharePart finds a partition a share request names.
func (s *Server) resolveSharePart(ctx context.Context, group string, k sharePartKey, withReplica bool) sharePart {
	p := sharePart{kid: k}
	tm := s.shareTopics()[k.id]
	if tm == nil {
		p.code = kerr.UnknownTopicID.Code
		return p
	}
	if k.partition < 0 || int(k.partition) >= len(tm.Partitions) {
		p.code = kerr.UnknownTopicOrPartition.Code
		return p
	}
	p.key = replication.SharePartitionKey{Group: group, Topic: tm.Name, TopicID: tm.ID, Partition: int(k.partition)}
	if !withReplica {
		return p
	}
	t, err := s.l.Topic(tm.Name)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, s.node.AttemptTimeout())
		p.rp, err = kafkabridge.Partition(pctx, t, int(k.partition))
		if err == nil {
			err = kafkabridge.MapErr(p.rp.WaitOpen(pctx))
		}
		cancel()
	}
	if err != nil {
		p.rp, p.code = nil, errorCode(err)
	}
	return p
}

// shareFetch answers a ShareFetch request.
func (s *Server) shareFetch(req *kmsg.ShareFetchRequest) reply {
	return func(ctx context.Context) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ShareFetchResponse)
		fail := func(code int16, msg string) kmsg.Response {
			resp.ErrorCode, resp.ErrorMessage = code, kmsg.StringPtr(msg)
			return resp
		}
		if req.GroupID == nil || !validShareName(*req.GroupID) || req.MemberID == nil || !validShareName(*req.MemberID) {
			return fail(kerr.InvalidRequest.Code, "a share fetch names its group and member")
		}
		group, member := *req.GroupID, *req.MemberID
		hasAcks := false
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				hasAcks = hasAcks || len(rp.AcknowledgementBatches) > 0
			}
		}
		if req.ShareSessionEpoch == 0 && hasAcks {
			return fail(kerr.InvalidRequest.Code, "a request opening a share session carries no acknowledgements")
		}
		sess, closed, code := s.openSession(group, member, req.ShareSessionEpoch)
		if code != 0 {
			return fail(code, "share session")
		}
		if sess != nil && len(closed) > 0 {
			s.releaseSession(group, member, closed)
		}
		cfg := s.shareGroupConfig(group)
		resp.AcquisitionLockTimeoutMillis = int32(cfg.lock / time.Millisecond)
		out := newShareResponse(resp)
		// Acknowledgements first, as Kafka applies them.
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				if len(rp.AcknowledgementBatches) == 0 {
					continue
				}
				bs := make([]shareAckBatch, len(rp.AcknowledgementBatches))
				for i, b := range rp.AcknowledgementBatches {
					bs[i] = shareAckBatch{b.FirstOffset, b.LastOffset, b.AcknowledgeTypes}
				}
				k := sharePartKey{rt.TopicID, rp.Partition}
				p := s.resolveSharePart(ctx, group, k, false)
				code := p.code
				var err error
				if code == 0 {
					code, err = s.acknowledge(ctx, p.key, member, bs, req.IsRenewAck, cfg.lock)
				}
				pr := out.part(k)
				pr.AcknowledgeErrorCode = code
				if err != nil {
					pr.AcknowledgeErrorMessage = kmsg.StringPtr(err.Error())
				}
			}
		}
		if sess == nil {
			s.releaseSession(group, member, closed)
			out.finish(nil)
			return resp
		}
		parts, code := s.updateSession(sess, req)
		if code != 0 {
			return fail(code, fmt.Sprintf("too many partitions in share sessions (%d in one, %d on a node)", maxShareSessionParts, maxShareSessionPartsAll))
		}
		if req.IsRenewAck {
			out.finish(nil)
			return resp // KIP-1222: a renewing fetch acquires nothing
		}
		s.acquireLoop(ctx, req, group, member, cfg, parts, out)
		if ctx.Err() != nil {
			return nil // the connection is closing
		}
		return resp
	}
}

// updateSession adds the request's partitions to the session and removes
// the forgotten ones; it returns the partitions to fetch, from where the
// last fetch left off.
func (s *Server) updateSession(sess *shareSession, req *kmsg.ShareFetchRequest) ([]sharePartKey, int16) {
	ss := s.shareSessions
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, rt := range req.Topics {
		for _, rp := range rt.Partitions {
			k := sharePartKey{rt.TopicID, rp.Partition}
			if !sess.in[k] {
				if len(sess.parts) >= maxShareSessionParts || ss.parts >= maxShareSessionPartsAll {
					return nil, kerr.ShareSessionLimitReached.Code
				}
				sess.in[k] = true
				sess.parts = append(sess.parts, k)
				if !sess.gone {
					ss.parts++
				}
			}
		}
	}
	for _, ft := range req.ForgottenTopicsData {
		for _, p := range ft.Partitions {
			k := sharePartKey{ft.TopicID, p}
			if sess.in[k] {
				delete(sess.in, k)
				for i, q := range sess.parts {
					if q == k {
						sess.parts = append(sess.parts[:i], sess.parts[i+1:]...)
						if !sess.gone {
							ss.parts--
						}
						break
					}
				}
			}
		}
	}
	n := len(sess.parts)
	if n == 0 {
		return nil, 0
	}
	first := sess.next % n
	sess.next = (first + 1) % n
	out := make([]sharePartKey, 0, n)
	for i := range n {
		out = append(out, sess.parts[(first+i)%n])
	}
	return out, 0
}

// releaseSession releases, in the background, what the member holds in the
// partitions of a session it closed.
func (s *Server) releaseSession(group, member string, parts []sharePartKey) {
	var keys []replication.SharePartitionKey
	for _, k := range parts {
		if p := s.resolveSharePart(s.ctx, group, k, false); p.code == 0 {
			keys = append(keys, p.key)
		}
	}
	if len(keys) == 0 {
		return
	}
	for _, k := range keys {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		err := s.node.ShareLeave(ctx, k, member)
		cancel()
		if err != nil {
			s.log.Debug("replogkafka: share session's records not released; their locks expire", "group", group, "member", member, "err", err)
			return
		}
	}
}

// shareResponse builds a ShareFetch response's partitions.
type shareResponse struct {
	resp   *kmsg.ShareFetchResponse
	topics map[[16]byte]int
	parts  map[sharePartKey]*kmsg.ShareFetchResponseTopicPartition
}

func newShareResponse(resp *kmsg.ShareFetchResponse) *shareResponse {
	return &shareResponse{resp: resp, topics: map[[16]byte]int{}, parts: map[sharePartKey]*kmsg.ShareFetchResponseTopicPartition{}}
}

// part returns the response's entry for k, adding it. Pointers stay valid:
// the entries are finished before the slices grow again (see finish).
func (o *shareResponse) part(k sharePartKey) *kmsg.ShareFetchResponseTopicPartition {
	if p := o.parts[k]; p != nil {
		return p
	}
	p := &kmsg.ShareFetchResponseTopicPartition{Partition: k.partition}
	p.Default()
	p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = -1, -1
	o.parts[k] = p
	return p
}

// finish lays the partitions out in the response, by topic.
func (o *shareResponse) finish(order []sharePartKey) {
	o.resp.Topics = o.resp.Topics[:0]
	clear(o.topics)
	add := func(k sharePartKey, p *kmsg.ShareFetchResponseTopicPartition) {
		i, ok := o.topics[k.id]
		if !ok {
			i = len(o.resp.Topics)
			o.topics[k.id] = i
			o.resp.Topics = append(o.resp.Topics, kmsg.ShareFetchResponseTopic{TopicID: k.id})
		}
		if p.Records == nil {
			p.Records = []byte{}
		}
		o.resp.Topics[i].Partitions = append(o.resp.Topics[i].Partitions, *p)
	}
	done := map[sharePartKey]bool{}
	for _, k := range order {
		if p := o.parts[k]; p != nil && !done[k] {
			done[k] = true
			add(k, p)
		}
	}
	for k, p := range o.parts {
		if !done[k] {
			add(k, p)
		}
	}
}

// acquireLoop acquires records of parts for member until some are found or
// the request's wait is over, and lays the response out.
func (s *Server) acquireLoop(ctx context.Context, req *kmsg.ShareFetchRequest, group, member string, cfg shareConfig, keys []sharePartKey, out *shareResponse) {
	defer out.finish(keys)
	deadline := time.Now().Add(time.Duration(max(req.MaxWaitMillis, 0)) * time.Millisecond)
	parts := make([]sharePart, len(keys))
	for i, k := range keys {
		parts[i] = s.resolveSharePart(ctx, group, k, true)
		if parts[i].code != 0 {
			out.part(k).ErrorCode = parts[i].code
		}
	}
	maxRecords := int(req.MaxRecords)
	if maxRecords <= 0 {
		maxRecords = defaultShareMaxRecords
	}
	maxBytes := int(req.MaxBytes)
	if maxBytes <= 0 {
		maxBytes = math.MaxInt32
	}
	maxBytes = min(maxBytes, int(s.opts.MaxFetchBytes))
	var cases []reflect.SelectCase
	for {
		cases = cases[:0]
		for _, p := range parts {
			if p.rp != nil {
				cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(p.rp.Changed())})
			}
		}
		got, bytes := 0, 0
		for i := range parts {
			p := &parts[i]
			if p.rp == nil || got >= maxRecords || (bytes >= maxBytes && got > 0) {
				continue
			}
			n, b, err := s.acquirePart(ctx, p, member, cfg, min(maxRecords-got, replication.ShareRecordLimit), maxBytes-bytes, got == 0, out)
			if err != nil {
				pr := out.part(p.kid)
				pr.ErrorCode, pr.ErrorMessage = shareErrCode(err), kmsg.StringPtr(err.Error())
				continue
			}
			got += n
			bytes += b
		}
		wait := time.Until(deadline)
		if got > 0 || wait <= 0 || len(cases) == 0 || ctx.Err() != nil {
			return
		}
		timer := time.NewTimer(min(wait, sharePollInterval))
		cases = append(cases,
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())})
		reflect.Select(cases)
		timer.Stop()
	}
}

// acquirePart acquires up to max records of p and reads the batches
// holding them into the response, within maxBytes unless first. Records
// past the byte limit are released at once; records delivered the
// group's limit of times are rejected (archived, as Kafka does).
func (s *Server) acquirePart(ctx context.Context, p *sharePart, member string, cfg shareConfig, max, maxBytes int, first bool, out *shareResponse) (int, int, error) {
	lso := p.rp.LastStable() // before the high watermark: never above it
	start, hw := p.rp.LogStart(), p.rp.HighWatermark()
	if cfg.committed {
		hw = min(hw, lso)
	}
	r := replication.ShareAcquireRequest{SharePartitionKey: p.key, Member: member, Max: max,
		HighWatermark: hw, LogStart: min(start, hw), Lock: cfg.lock, MaxDeliveries: cfg.maxDeliveries, Latest: cfg.latest}
	if s.shareKnown(p.key) {
		if hw <= start || !s.node.ShareAvailable(r) {
			return 0, 0, nil
		}
	} else {
		// The first fetch of the share partition through this node: the
		// acquisition creates its state if the coordinator holds none,
		// so that with share.auto.offset.reset=latest the records
		// written from now on are delivered, whenever they come.
		s.shareIDs.Lock()
		if len(s.shareIDs.known) >= maxShareKnown {
			clear(s.shareIDs.known)
		}
		s.shareIDs.known[p.key] = true
		s.shareIDs.Unlock()
	}
	actx, cancel := context.WithTimeout(ctx, s.node.AttemptTimeout())
	res, err := s.node.ShareAcquire(actx, r)
	cancel()
	if err != nil || len(res.Records) == 0 {
		return 0, 0, err
	}
	var dead, keep []replication.ShareAcquiredRecord
	for _, a := range res.Records {
		if a.DeadLetter {
			dead = append(dead, a)
		} else {
			keep = append(keep, a)
		}
	}
	if len(dead) > 0 {
		if refused, err := s.node.ShareAckEach(ctx, p.key, member, deliveries(dead), replication.ShareReject, 0); err != nil {
			s.log.Debug("replogkafka: share records over the delivery limit not archived yet; they come back", "err", err)
		} else {
			kafkabridge.ShareCounted(s.l, p.key.Topic, p.key.Partition, kafkabridge.ShareRejected, len(dead)-len(refused))
		}
	}
	if len(keep) == 0 {
		return 0, 0, nil
	}
	buf, upTo, aborted, err := readShareBatches(ctx, p.rp, keep[0].Offset, keep[len(keep)-1].Offset, maxBytes, first, cfg.committed)
	var drop []replication.ShareAcquiredRecord
	if err != nil {
		drop, keep = keep, nil
	} else {
		i := 0
		for i < len(keep) && keep[i].Offset < upTo {
			i++
		}
		keep, drop = keep[:i], keep[i:]
	}
	if len(aborted) > 0 {
		// Records of aborted transactions are archived, never
		// delivered to a read-committed group.
		var gone []replication.ShareAcquiredRecord
		keep, gone = splitAborted(keep, aborted)
		if _, err := s.node.ShareAckEach(ctx, p.key, member, deliveries(gone), replication.ShareReject, 0); err != nil {
			s.log.Debug("replogkafka: aborted share records not archived yet; they come back", "err", err)
		}
	}
	if len(drop) > 0 {
		// Past the byte limit, or unreadable here: for another fetch.
		if _, rerr := s.node.ShareAckEach(ctx, p.key, member, deliveries(drop), replication.ShareRelease, 0); rerr != nil {
			s.log.Debug("replogkafka: share records not released; their locks expire", "err", rerr)
		}
	}
	if err != nil {
		if errors.Is(err, storage.ErrCorrupt) {
			s.log.Warn("replogkafka: share fetch met a damaged batch", "topic", p.key.Topic, "partition", p.key.Partition, "err", err)
		}
		return 0, 0, kafkabridge.MapErr(err)
	}
	if len(keep) == 0 {
		return 0, 0, nil
	}
	kafkabridge.ShareCounted(s.l, p.key.Topic, p.key.Partition, kafkabridge.ShareAcquired, len(keep))
	pr := out.part(p.kid)
	pr.Records = append(pr.Records, buf...)
	for _, a := range keep {
		n := len(pr.AcquiredRecords)
		if n > 0 {
			last := &pr.AcquiredRecords[n-1]
			if last.LastOffset+1 == a.Offset && int(last.DeliveryCount) == a.Deliveries {
				last.LastOffset = a.Offset
				continue
			}
		}
		pr.AcquiredRecords = append(pr.AcquiredRecords, kmsg.ShareFetchResponseTopicPartitionAcquiredRecord{
			FirstOffset: a.Offset, LastOffset: a.Offset, DeliveryCount: int16(min(a.Deliveries, math.MaxInt16))})
	}
	return len(keep), len(buf), nil
}

// splitAborted splits rs (sorted by offset) into those outside and those
// inside the offset ranges aborted (sorted, from readShareBatches).
func splitAborted(rs []replication.ShareAcquiredRecord, aborted [][2]int64) (keep, gone []replication.ShareAcquiredRecord) {
	i := 0
	for _, r := range rs {
		for i < len(aborted) && aborted[i][1] < r.Offset {
			i++
		}
		if i < len(aborted) && aborted[i][0] <= r.Offset {
			gone = append(gone, r)
		} else {
			keep = append(keep, r)
		}
	}
	return keep, gone
}

func deliveries(rs []replication.ShareAcquiredRecord) []replication.ShareDelivery {
	out := make([]replication.ShareDelivery, len(rs))
	for i, r := range rs {
		out[i] = r.ShareDelivery
	}
	return out
}

// readShareBatches reads from rp the batches holding offsets lo to hi, as
// Kafka batches, within maxBytes (but the first batch, if first). It
// returns the bytes and the offset the batches read end before: records
// from there on were not read. With committed, the batches of aborted
// transactions are left out, and their offset ranges returned.
func readShareBatches(ctx context.Context, rp *replication.Partition, lo, hi int64, maxBytes int, first, committed bool) ([]byte, int64, [][2]int64, error) {
	var buf []byte
	var derr error
	var recs []storage.Record
	var abortedTxns []storage.AbortedTxn
	var aborted [][2]int64
	if committed {
		var err error
		if abortedTxns, err = rp.AbortedTxns(ctx, lo, hi+1); err != nil {
			return nil, lo, nil, err
		}
	}
	upTo := lo
	err := rp.ReadBatches(ctx, lo, max(maxBytes, 1), func(b []byte) bool {
		var h storage.BatchHeader
		h, derr = storage.ParseHeader(b)
		if derr != nil {
			return false
		}
		if h.LastOffset() < lo {
			return true
		}
		if h.BaseOffset > hi {
			return false
		}
		if committed && h.Transactional && !h.Control && !storage.Committed(h, abortedTxns) {
			aborted = append(aborted, [2]int64{h.BaseOffset, h.LastOffset()})
			upTo = h.LastOffset() + 1
			return upTo <= hi
		}
		before := len(buf)
		if h.Version == storage.VersionKafka {
			buf = append(buf, b...)
		} else {
			h, recs, derr = storage.DecodeRecords(b, lo, recs[:0])
			if derr != nil {
				return false
			}
			buf = appendFetched(buf, h, recs)
		}
		if len(buf) > maxBytes && (before > 0 || !first) {
			buf = buf[:before]
			return false
		}
		upTo = h.LastOffset() + 1
		return upTo <= hi
	})
	if err == nil {
		err = derr
	}
	if err != nil && len(buf) > 0 {
		err = nil // what was read goes; the rest is released
	}
	if len(buf) == 0 && err == nil {
		// Nothing stored there any more (retention or compaction): the
		// offsets go to the client as gaps it acknowledges.
		upTo = hi + 1
	}
	return buf, upTo, aborted, err
}

// shareAcknowledge answers a ShareAcknowledge request.
func (s *Server) shareAcknowledge(req *kmsg.ShareAcknowledgeRequest) reply {
	return func(ctx context.Context) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ShareAcknowledgeResponse)
		if req.GroupID == nil || !validShareName(*req.GroupID) || req.MemberID == nil || !validShareName(*req.MemberID) {
			resp.ErrorCode, resp.ErrorMessage = kerr.InvalidRequest.Code, kmsg.StringPtr("a share acknowledge names its group and member")
			return resp
		}
		group, member := *req.GroupID, *req.MemberID
		if req.ShareSessionEpoch == 0 {
			resp.ErrorCode, resp.ErrorMessage = kerr.InvalidShareSessionEpoch.Code, kmsg.StringPtr("acknowledgements need a share session")
			return resp
		}
		sess, closed, code := s.openSession(group, member, req.ShareSessionEpoch)
		if code != 0 {
			resp.ErrorCode, resp.ErrorMessage = code, kmsg.StringPtr("share session")
			return resp
		}
		cfg := s.shareGroupConfig(group)
		resp.AcquisitionLockTimeoutMillis = int32(cfg.lock / time.Millisecond)
		for _, rt := range req.Topics {
			t := kmsg.ShareAcknowledgeResponseTopic{TopicID: rt.TopicID}
			for _, rp := range rt.Partitions {
				bs := make([]shareAckBatch, len(rp.AcknowledgementBatches))
				for i, b := range rp.AcknowledgementBatches {
					bs[i] = shareAckBatch{b.FirstOffset, b.LastOffset, b.AcknowledgeTypes}
				}
				pr := kmsg.NewShareAcknowledgeResponseTopicPartition()
				pr.Partition = rp.Partition
				pr.CurrentLeader.LeaderID, pr.CurrentLeader.LeaderEpoch = -1, -1
				p := s.resolveSharePart(ctx, group, sharePartKey{rt.TopicID, rp.Partition}, false)
				pr.ErrorCode = p.code
				if p.code == 0 {
					var err error
					pr.ErrorCode, err = s.acknowledge(ctx, p.key, member, bs, req.IsRenewAck, cfg.lock)
					if err != nil {
						pr.ErrorMessage = kmsg.StringPtr(err.Error())
					}
				}
				t.Partitions = append(t.Partitions, pr)
			}
			resp.Topics = append(resp.Topics, t)
		}
		if sess == nil {
			s.releaseSession(group, member, closed)
		}
		return resp
	}
}
