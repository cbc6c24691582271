package replication

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/replog/replog/storage"
)

// ShareShardID is the Raft group of the share coordinator (Kafka's share
// groups, KIP-932): for each share group, topic and partition, the
// share-partition start offset and the state of the records in flight
// after it. A group of its own, like the transaction coordinator, so that
// acquisitions and acknowledgements, one or more proposals per poll of
// every share consumer, neither wait behind nor stall the other
// cluster-wide groups. Its replicas are the cluster's nodes.
const ShareShardID uint64 = 4

// Limits of the share coordinator. Commands beyond them are refused before
// they change anything.
const (
	// ShareRecordLimit caps the records in flight of one share partition
	// (Kafka's group.share.record.lock.partition.limit, 200): those after
	// the share-partition start offset that are acquired, waiting for a
	// redelivery or acknowledged behind one that is not. Acquisitions stop
	// at start+ShareRecordLimit until the start offset moves, so the
	// coordinator's state and snapshots stay small however far members
	// fall behind, and a record that is never acknowledged holds its
	// partition's share group back by at most this many records.
	ShareRecordLimit = 200
	// MaxSharePartitions caps the share partitions (group, topic,
	// partition) the coordinator holds: every replica keeps them in
	// memory and in each snapshot.
	MaxSharePartitions = 1 << 16
	// MaxShareNameLength caps a share group's name and a member id, in
	// bytes.
	MaxShareNameLength = 1024
	// MaxShareLock caps a lock duration, and a release's delay.
	MaxShareLock = time.Hour
	// MaxShareDeliveries caps the delivery limit of a share group
	// (Kafka's group.share.delivery.count.limit is at most 10; replog
	// allows more).
	MaxShareDeliveries = 100
)

// Share coordinator errors.
var (
	// ErrShareNotAcquired: the record is not acquired by this member under
	// this delivery: its lock expired (and it may have been delivered
	// again, to this member or another), another member holds it, or it
	// was never handed out. Kafka's INVALID_RECORD_STATE.
	ErrShareNotAcquired = errors.New("share record not acquired by this member")
	// ErrShareAcknowledged: the record was acknowledged already (Kafka's
	// INVALID_RECORD_STATE).
	ErrShareAcknowledged = errors.New("share record already acknowledged")
	// ErrShareTooMany: the coordinator holds MaxSharePartitions share
	// partitions.
	ErrShareTooMany = errors.New("too many share partitions")
)

// ShareRecordState is a state of an in-flight record (Kafka's
// share-partition record states).
type ShareRecordState uint8

const (
	// ShareAvailable: to be delivered (again) once AvailableAt passes.
	ShareAvailable ShareRecordState = iota
	// ShareAcquired: handed out to Member until Deadline.
	ShareAcquired
	// ShareAcknowledged: accepted by a member: done.
	ShareAcknowledged
	// ShareArchived: rejected, or given up after too many deliveries.
	ShareArchived
)

func (s ShareRecordState) String() string {
	switch s {
	case ShareAvailable:
		return "available"
	case ShareAcquired:
		return "acquired"
	case ShareAcknowledged:
		return "acknowledged"
	case ShareArchived:
		return "archived"
	}
	return fmt.Sprintf("ShareRecordState(%d)", uint8(s))
}

// ShareInFlight is the state of one record of a share partition's window.
type ShareInFlight struct {
	State ShareRecordState `json:"s"`
	// Deliveries counts the times the record was acquired.
	Deliveries int `json:"d,omitempty"`
	// Member holds the record (ShareAcquired) or last held it.
	Member string `json:"m,omitempty"`
	// Deadline is when the lock of an acquired record expires, unix ns of
	// the proposers' clocks; AvailableAt when an available record may be
	// delivered again (a release with a delay).
	Deadline    int64 `json:"dl,omitempty"`
	AvailableAt int64 `json:"at,omitempty"`
	// Req is the acquisition that handed the record out, and Dead whether
	// as a dead letter: what a repeated acquisition answers again.
	Req  uint64 `json:"r,omitempty"`
	Dead bool   `json:"x,omitempty"`
}

// available reports whether the record may be acquired at now: an expired
// lock counts as released.
func (r *ShareInFlight) available(now int64) bool {
	switch r.State {
	case ShareAvailable:
		return r.AvailableAt <= now
	case ShareAcquired:
		return r.Deadline <= now
	}
	return false
}

func (r *ShareInFlight) done() bool { return r.State == ShareAcknowledged || r.State == ShareArchived }

// SharePartitionKey names a share partition.
type SharePartitionKey struct {
	Group string `json:"group"`
	Topic string `json:"topic"`
	// TopicID tells a topic from an earlier one of the same name (see
	// TopicMeta.ID): a re-created topic's share partitions start afresh.
	TopicID   uint64 `json:"topic_id"`
	Partition int    `json:"partition"`
}

func (k SharePartitionKey) valid() bool {
	return validShareName(k.Group) && k.Topic != "" && len(k.Topic) <= maxTopicName &&
		k.Partition >= 0 && k.Partition < MaxPartitions
}

// SharePartitionState is a share partition's state. Values handed out are
// copies.
type SharePartitionState struct {
	SharePartitionKey
	// Start is the share-partition start offset: every record before it
	// is done (acknowledged, archived, or gone from the log). InFlight[i]
	// is the record at Start+i; records from Start+len(InFlight) on were
	// never acquired.
	Start    int64           `json:"start"`
	InFlight []ShareInFlight `json:"in_flight,omitempty"`
}

func (p *SharePartitionState) clone() *SharePartitionState {
	c := *p
	c.InFlight = slices.Clone(p.InFlight)
	return &c
}

// compact moves the start offset past the done records at the window's
// head.
func (p *SharePartitionState) compact() {
	i := 0
	for i < len(p.InFlight) && p.InFlight[i].done() {
		i++
	}
	if i > 0 {
		p.Start += int64(i)
		p.InFlight = slices.Delete(p.InFlight, 0, i)
		if len(p.InFlight) == 0 {
			p.InFlight = nil
		}
	}
}

// skipTo moves the start offset to logStart if it is behind: records
// retention removed are done.
func (p *SharePartitionState) skipTo(logStart int64) {
	if logStart <= p.Start {
		return
	}
	n := min(logStart-p.Start, int64(len(p.InFlight)))
	p.InFlight = slices.Delete(p.InFlight, 0, int(n))
	if len(p.InFlight) == 0 {
		p.InFlight = nil
	}
	p.Start = logStart
}

func (p *SharePartitionState) check() error {
	switch {
	case !p.SharePartitionKey.valid():
		return fmt.Errorf("share partition %+v", p.SharePartitionKey)
	case p.Start < 0:
		return fmt.Errorf("start %d", p.Start)
	case len(p.InFlight) > ShareRecordLimit:
		return fmt.Errorf("%d records in flight", len(p.InFlight))
	case len(p.InFlight) > 0 && p.InFlight[0].done():
		return errors.New("window not compacted")
	}
	for i, r := range p.InFlight {
		if r.State > ShareArchived || r.Deliveries < 0 || len(r.Member) > MaxShareNameLength ||
			(r.State == ShareAcquired && r.Member == "") {
			return fmt.Errorf("record %d: %+v", p.Start+int64(i), r)
		}
	}
	return nil
}

func validShareName(s string) bool { return s != "" && len(s) <= MaxShareNameLength }

// ShareAck is how a member acknowledges a record (KIP-932's
// AcknowledgeType; JetStream's Ack, Nak and Term).
type ShareAck uint8

const (
	// ShareAccept: processed; the record is done.
	ShareAccept ShareAck = iota + 1
	// ShareRelease: deliver it again (after the command's Delay), to any
	// member.
	ShareRelease
	// ShareReject: give up on it; the record is done (archived).
	ShareReject
)

// ShareDelivery names one delivery of a record: its offset and the
// delivery count it was acquired with, which tells a retried
// acknowledgement from a late one of an earlier delivery. A count of 0
// names whichever delivery the member holds (Kafka's acknowledgements
// carry no delivery count).
type ShareDelivery struct {
	Offset     int64 `json:"o"`
	Deliveries int   `json:"d"`
}

// ShareAcquiredRecord is a record a member acquired.
type ShareAcquiredRecord struct {
	ShareDelivery
	// DeadLetter: the record was delivered MaxDeliveries times already;
	// the member is to dead-letter it (or not) and reject it. Its lock
	// holds it meanwhile, so that a member dying then leaves it to
	// another rather than losing it.
	DeadLetter bool `json:"dl,omitempty"`
}

// ShareAcquireResult answers an acquisition.
type ShareAcquireResult struct {
	Records []ShareAcquiredRecord `json:"records,omitempty"`
	// Deadline is the lock deadline of the records, unix ns.
	Deadline int64 `json:"deadline"`
	// Start is the share-partition start offset after the command.
	Start int64 `json:"start"`
	// Refused, of an ack or renew with Each, lists the deliveries refused
	// (not held by the member, or acknowledged already): the others were
	// applied.
	Refused []int64 `json:"refused,omitempty"`
}

type shareCmd struct {
	Op string `json:"op"`
	SharePartitionKey
	Member string `json:"member,omitempty"`
	Now    int64  `json:"now"`
	// Acquire: up to Max records below HighWatermark (the member's replica's,
	// as it read it), locked for Lock ns; LogStart is its replica's first
	// offset; records delivered MaxDeliveries times already are handed out
	// as DeadLetter.
	// Req, chosen at random by the proposer, names the acquisition: a
	// proposal applied twice (syncPropose retries through leader changes)
	// answers the records the first application handed out, rather than
	// hand out more that nobody would see until their lock expired.
	Req           uint64 `json:"req,omitempty"`
	Max           int    `json:"max,omitempty"`
	HighWatermark int64  `json:"hw,omitempty"`
	LogStart      int64  `json:"log_start,omitempty"`
	Lock          int64  `json:"lock,omitempty"`
	MaxDeliveries int    `json:"max_deliveries,omitempty"`
	// Latest: a share partition this acquisition creates starts at
	// HighWatermark (Kafka's share.auto.offset.reset=latest) rather than
	// at LogStart.
	Latest bool `json:"latest,omitempty"`
	// Ack and renew: the deliveries acknowledged or renewed (for Lock);
	// Delay, of a release, before the records may be delivered again.
	Records []ShareDelivery `json:"records,omitempty"`
	Ack     ShareAck        `json:"ack,omitempty"`
	Delay   int64           `json:"delay,omitempty"`
	// Each: ack or renew each delivery the member holds and list the
	// others in the result's Refused, rather than all or none (Kafka's
	// acknowledgements, answered per partition).
	Each bool `json:"each,omitempty"`
	// Reset: the new start offsets of partitions of the key's topic
	// (TopicID included; the key's Partition is unused).
	Resets []ShareResetOffset `json:"resets,omitempty"`
	// Config: the fields set (see shopConfig).
	Config *shareConfigSet `json:"config,omitempty"`
}

// ShareResetOffset is a partition's new share-partition start offset.
type ShareResetOffset struct {
	Partition int   `json:"p"`
	Offset    int64 `json:"o"`
}

const (
	shopAcquire = "acquire"
	shopAck     = "ack"
	shopRenew   = "renew"
	// shopLeave releases every record the member holds in the partition
	// (a member that closes).
	shopLeave = "leave"
	// shopDelete forgets a share partition (its topic was deleted).
	shopDelete = "delete"
	// shopReset sets start offsets of a topic's partitions of a group and
	// empties their windows, and shopDeleteGroup forgets every share
	// partition of a group: both only while no member of the group holds
	// an unexpired lock (Kafka's AlterShareGroupOffsets and
	// DeleteShareGroups, which require an empty group). Group-wide ops:
	// the key's Group (and, for a reset, Topic and TopicID) matter.
	shopReset       = "reset"
	shopDeleteGroup = "delete_group"
)

// Result codes of share commands (sm.Result.Value). On sOK, Data is a
// ShareAcquireResult as JSON.
const (
	sOK uint64 = iota
	sInvalid
	sNotAcquired
	sAcknowledged
	sTooMany
	// sNotEmpty: a member of the group holds an unexpired lock.
	sNotEmpty
	// sNoGroup: the coordinator holds no share partition of the group.
	sNoGroup
)

func shareError(code uint64) error {
	switch code {
	case sOK:
		return nil
	case sNotAcquired:
		return ErrShareNotAcquired
	case sAcknowledged:
		return ErrShareAcknowledged
	case sTooMany:
		return ErrShareTooMany
	case sNotEmpty:
		return ErrGroupNotEmpty
	case sNoGroup:
		return ErrGroupNotFound
	}
	return ErrInvalid
}

// check validates c before it touches any state.
func (c *shareCmd) check() uint64 {
	if c.Now <= 0 {
		return sInvalid
	}
	switch c.Op {
	case shopConfig:
		return c.checkConfig()
	case shopDeleteTopic:
		return c.checkDeleteTopic()
	case shopDeleteGroup:
		if !validShareName(c.Group) {
			return sInvalid
		}
		return sOK
	case shopReset:
		k := c.SharePartitionKey
		k.Partition = 0
		if !k.valid() || !validShareResets(c.Resets) {
			return sInvalid
		}
		return sOK
	}
	if !c.SharePartitionKey.valid() {
		return sInvalid
	}
	switch c.Op {
	case shopAcquire:
		if !validShareName(c.Member) || c.Max <= 0 || c.Max > ShareRecordLimit || c.HighWatermark < 0 ||
			c.LogStart < 0 || c.LogStart > c.HighWatermark || c.Lock <= 0 || c.Lock > int64(MaxShareLock) ||
			c.MaxDeliveries <= 0 || c.MaxDeliveries > MaxShareDeliveries {
			return sInvalid
		}
	case shopAck:
		if !validShareName(c.Member) || c.Ack < ShareAccept || c.Ack > ShareReject || c.Delay < 0 ||
			c.Delay > int64(MaxShareLock) || !validShareDeliveries(c.Records) {
			return sInvalid
		}
	case shopRenew:
		if !validShareName(c.Member) || c.Lock <= 0 || c.Lock > int64(MaxShareLock) || !validShareDeliveries(c.Records) {
			return sInvalid
		}
	case shopLeave:
		if !validShareName(c.Member) {
			return sInvalid
		}
	case shopDelete:
	default:
		return sInvalid
	}
	return sOK
}

// validShareResets reports whether rs are distinct partitions, each with
// an offset.
func validShareResets(rs []ShareResetOffset) bool {
	if len(rs) == 0 || len(rs) > MaxPartitions {
		return false
	}
	seen := make(map[int]bool, len(rs))
	for _, r := range rs {
		if r.Partition < 0 || r.Partition >= MaxPartitions || r.Offset < 0 || seen[r.Partition] {
			return false
		}
		seen[r.Partition] = true
	}
	return true
}

func validShareDeliveries(ds []ShareDelivery) bool {
	if len(ds) == 0 || len(ds) > ShareRecordLimit {
		return false
	}
	for _, d := range ds {
		if d.Offset < 0 || d.Deliveries < 0 {
			return false
		}
	}
	return true
}

// shareSM is the share coordinator's state machine.
type shareSM struct {
	parts map[SharePartitionKey]*SharePartitionState
	// configs are the groups' configs (share_config.go); nil if none.
	configs map[string]ShareGroupConfig
}

func newShareSM() *shareSM { return &shareSM{parts: map[SharePartitionKey]*SharePartitionState{}} }

// Update applies one command. Whatever the bytes, it returns a result code
// and never an error or a panic, which would stop the coordinator on every
// replica each time it replays the entry.
func (s *shareSM) Update(e sm.Entry) (sm.Result, error) {
	var c shareCmd
	if err := json.Unmarshal(e.Cmd, &c); err != nil {
		return sm.Result{Value: sInvalid}, nil
	}
	if code := c.check(); code != sOK {
		return sm.Result{Value: code}, nil
	}
	code, res := s.apply(c)
	r := sm.Result{Value: code}
	if code == sOK {
		r.Data, _ = json.Marshal(res)
	}
	return r, nil
}

// apply runs one command; deterministic (time comes from the command). A
// refused command changes nothing.
func (s *shareSM) apply(c shareCmd) (uint64, ShareAcquireResult) {
	switch c.Op {
	case shopReset:
		return s.reset(c), ShareAcquireResult{}
	case shopDeleteGroup:
		return s.deleteGroup(c), ShareAcquireResult{}
	case shopConfig:
		return s.setConfig(c), ShareAcquireResult{}
	case shopDeleteTopic:
		return s.deleteTopic(c), ShareAcquireResult{}
	}
	p := s.parts[c.SharePartitionKey]
	if c.Op == shopDelete {
		delete(s.parts, c.SharePartitionKey)
		return sOK, ShareAcquireResult{}
	}
	if p == nil {
		if c.Op != shopAcquire {
			return sNotAcquired, ShareAcquireResult{}
		}
		if len(s.parts) >= MaxSharePartitions {
			return sTooMany, ShareAcquireResult{}
		}
		// A new share partition starts at the log start (Kafka's
		// share.auto.offset.reset=earliest) or, with Latest, at the high
		// watermark.
		start := c.LogStart
		if c.Latest {
			start = c.HighWatermark
		}
		p = &SharePartitionState{SharePartitionKey: c.SharePartitionKey, Start: start}
		s.parts[c.SharePartitionKey] = p
	}
	switch c.Op {
	case shopAcquire:
		return sOK, p.acquire(c)
	case shopAck:
		idx, refused, code := p.heldAll(c)
		if code != sOK {
			return code, ShareAcquireResult{}
		}
		p.ack(c, idx)
		return sOK, ShareAcquireResult{Start: p.Start, Refused: refused}
	case shopRenew:
		idx, refused, code := p.heldAll(c)
		if code != sOK {
			return code, ShareAcquireResult{}
		}
		for _, i := range idx {
			p.InFlight[i].Deadline = max(p.InFlight[i].Deadline, c.Now+c.Lock)
		}
		return sOK, ShareAcquireResult{Start: p.Start, Deadline: c.Now + c.Lock, Refused: refused}
	case shopLeave:
		for i := range p.InFlight {
			if r := &p.InFlight[i]; r.State == ShareAcquired && r.Member == c.Member {
				r.State, r.AvailableAt, r.Deadline = ShareAvailable, 0, 0
			}
		}
		return sOK, ShareAcquireResult{Start: p.Start}
	}
	return sInvalid, ShareAcquireResult{}
}

// groupParts returns the share partitions of group, and whether one of
// them holds a record under a lock unexpired at now.
func (s *shareSM) groupParts(group string, now int64) ([]*SharePartitionState, bool) {
	var ps []*SharePartitionState
	locked := false
	for k, p := range s.parts {
		if k.Group != group {
			continue
		}
		ps = append(ps, p)
		locked = locked || p.locked(now)
	}
	return ps, locked
}

// locked reports whether a record of p is acquired under a lock unexpired
// at now.
func (p *SharePartitionState) locked(now int64) bool {
	for _, r := range p.InFlight {
		if r.State == ShareAcquired && r.Deadline > now {
			return true
		}
	}
	return false
}

// reset sets the start offsets c.Resets of c's topic, creating share
// partitions (and so the group) that do not exist, if no member of the
// group holds a lock. The windows empty: what was in flight there is
// forgotten, done or not.
func (s *shareSM) reset(c shareCmd) uint64 {
	if _, locked := s.groupParts(c.Group, c.Now); locked {
		return sNotEmpty
	}
	k := c.SharePartitionKey
	added := 0
	for _, r := range c.Resets {
		k.Partition = r.Partition
		if s.parts[k] == nil {
			added++
		}
	}
	if len(s.parts)+added > MaxSharePartitions {
		return sTooMany
	}
	for _, r := range c.Resets {
		k.Partition = r.Partition
		s.parts[k] = &SharePartitionState{SharePartitionKey: k, Start: r.Offset}
	}
	return sOK
}

// deleteGroup forgets every share partition of c's group, and its
// config, if no member holds a lock.
func (s *shareSM) deleteGroup(c shareCmd) uint64 {
	ps, locked := s.groupParts(c.Group, c.Now)
	_, configured := s.configs[c.Group]
	switch {
	case len(ps) == 0 && !configured:
		return sNoGroup
	case locked:
		return sNotEmpty
	}
	for _, p := range ps {
		delete(s.parts, p.SharePartitionKey)
	}
	delete(s.configs, c.Group)
	return sOK
}

// acquire hands out up to c.Max available records below c.HighWatermark
// and the window's limit, in offset order.
func (p *SharePartitionState) acquire(c shareCmd) ShareAcquireResult {
	p.skipTo(c.LogStart)
	if res, ok := p.again(c); ok {
		return res
	}
	res := ShareAcquireResult{Deadline: c.Now + c.Lock}
	end := min(c.HighWatermark, p.Start+ShareRecordLimit)
	for off := p.Start; off < end && len(res.Records) < c.Max; off++ {
		i := int(off - p.Start)
		if i == len(p.InFlight) {
			p.InFlight = append(p.InFlight, ShareInFlight{})
		}
		r := &p.InFlight[i]
		if !r.available(c.Now) {
			continue
		}
		a := ShareAcquiredRecord{DeadLetter: r.Deliveries >= c.MaxDeliveries}
		if !a.DeadLetter {
			r.Deliveries++
		}
		r.State, r.Member, r.Deadline, r.AvailableAt = ShareAcquired, c.Member, res.Deadline, 0
		r.Req, r.Dead = c.Req, a.DeadLetter
		a.ShareDelivery = ShareDelivery{Offset: off, Deliveries: r.Deliveries}
		res.Records = append(res.Records, a)
	}
	res.Start = p.Start
	return res
}

// again answers an acquisition applied before (the same member and Req)
// with the records it handed out that the member still holds, if any.
func (p *SharePartitionState) again(c shareCmd) (ShareAcquireResult, bool) {
	if c.Req == 0 {
		return ShareAcquireResult{}, false
	}
	var res ShareAcquireResult
	for i, r := range p.InFlight {
		if r.State == ShareAcquired && r.Member == c.Member && r.Req == c.Req && r.Deadline > c.Now {
			res.Records = append(res.Records, ShareAcquiredRecord{DeadLetter: r.Dead,
				ShareDelivery: ShareDelivery{Offset: p.Start + int64(i), Deliveries: r.Deliveries}})
			res.Deadline = max(res.Deadline, r.Deadline)
		}
	}
	res.Start = p.Start
	return res, len(res.Records) > 0
}

// held returns the window index of a delivery the member holds at now, or
// the code to refuse it with.
func (p *SharePartitionState) held(member string, d ShareDelivery, now int64) (int, uint64) {
	if d.Offset < p.Start {
		return 0, sAcknowledged
	}
	i := d.Offset - p.Start
	if i >= int64(len(p.InFlight)) {
		return 0, sNotAcquired
	}
	r := &p.InFlight[i]
	switch {
	case r.Member != member || (d.Deliveries != 0 && r.Deliveries != d.Deliveries):
		return 0, sNotAcquired
	case r.done():
		return int(i), sAcknowledged
	case r.State != ShareAcquired || r.Deadline <= now:
		return 0, sNotAcquired
	}
	return int(i), sOK
}

// heldAll returns the window indexes of c.Records, which the member must
// hold: all of them, or the code to refuse the command with; with c.Each,
// those it holds (once each), and the offsets of the others.
func (p *SharePartitionState) heldAll(c shareCmd) (idx []int, refused []int64, code uint64) {
	idx = make([]int, 0, len(c.Records))
	seen := make(map[int]bool, len(c.Records))
	for _, d := range c.Records {
		i, code := p.held(c.Member, d, c.Now)
		switch {
		case code == sOK && c.Each && seen[i]:
			continue
		case code == sOK:
			seen[i] = true
			idx = append(idx, i)
		case c.Each:
			refused = append(refused, d.Offset)
		default:
			return nil, nil, code
		}
	}
	return idx, refused, sOK
}

// ack acknowledges the records at window indexes idx, which the member
// holds. The proposer of a command that took more than one attempt tells
// its own earlier application from another's (see Node.ShareAck).
func (p *SharePartitionState) ack(c shareCmd, idx []int) {
	for _, i := range idx {
		r := &p.InFlight[i]
		r.Deadline = 0
		switch c.Ack {
		case ShareAccept:
			r.State = ShareAcknowledged
		case ShareReject:
			r.State = ShareArchived
		case ShareRelease:
			r.State, r.AvailableAt = ShareAvailable, c.Now+c.Delay
		}
	}
	p.compact()
}

// shareAvailableQuery asks whether an acquisition with these fields would
// hand anything out: a member polls the coordinator's local replica with
// it before proposing, so that idle members do not grow the Raft log.
type shareAvailableQuery struct {
	key           SharePartitionKey
	now, hw       int64
	logStart      int64
	maxDeliveries int
}

// shareKeysQuery lists the share partitions the coordinator holds.
type shareKeysQuery struct{}

// shareGroupsQuery lists the share groups, sorted; shareGroupQuery a
// group's share partitions (copies), sorted by topic, topic id and
// partition.
type (
	shareGroupsQuery struct{}
	shareGroupQuery  struct{ group string }
)

func compareShareKeys(a, b SharePartitionKey) int {
	return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Topic, b.Topic),
		cmp.Compare(a.TopicID, b.TopicID), cmp.Compare(a.Partition, b.Partition))
}

func (s *shareSM) Lookup(q any) (any, error) {
	switch q := q.(type) {
	case shareKeysQuery:
		return slices.Collect(maps.Keys(s.parts)), nil
	case sharePartitionsQuery:
		out := make([]*SharePartitionState, 0, len(s.parts))
		for _, p := range s.parts {
			out = append(out, p.clone())
		}
		return out, nil
	case shareGroupsQuery:
		groups := map[string]bool{}
		for k := range s.parts {
			groups[k.Group] = true
		}
		return slices.Sorted(maps.Keys(groups)), nil
	case shareGroupQuery:
		var out []*SharePartitionState
		for k, p := range s.parts {
			if k.Group == q.group {
				out = append(out, p.clone())
			}
		}
		slices.SortFunc(out, func(a, b *SharePartitionState) int {
			return compareShareKeys(a.SharePartitionKey, b.SharePartitionKey)
		})
		return out, nil
	case SharePartitionKey:
		if p := s.parts[q]; p != nil {
			return p.clone(), nil
		}
		return (*SharePartitionState)(nil), nil
	case shareConfigQuery:
		return s.configs[q.group], nil
	case shareAvailableQuery:
		p := s.parts[q.key]
		if p == nil {
			return q.hw > q.logStart, nil
		}
		start := max(p.Start, q.logStart)
		end := min(q.hw, p.Start+ShareRecordLimit)
		for off := start; off < end; off++ {
			i := off - p.Start
			if i >= int64(len(p.InFlight)) || p.InFlight[i].available(q.now) {
				return true, nil
			}
		}
		return false, nil
	}
	return nil, fmt.Errorf("%w: share query %T", ErrInvalid, q)
}

// shareSnapshot is the coordinator's snapshot: an object, so that later
// versions can add fields.
type shareSnapshot struct {
	Partitions []*SharePartitionState `json:"partitions"`
	// Configs are the groups' configs, by group; absent if none.
	Configs []ShareGroupConfigEntry `json:"configs,omitempty"`
}

func (s *shareSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	snap := shareSnapshot{Partitions: make([]*SharePartitionState, 0, len(s.parts))}
	keys := slices.SortedFunc(maps.Keys(s.parts), compareShareKeys)
	for _, k := range keys {
		snap.Partitions = append(snap.Partitions, s.parts[k])
	}
	snap.Configs = s.configSnapshot()
	return json.NewEncoder(w).Encode(snap)
}

// RecoverFromSnapshot replaces the state with a snapshot's. A snapshot that
// does not decode or validate is an error wrapping storage.ErrCorrupt, and
// the state is left as it was.
func (s *shareSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	var snap *shareSnapshot
	if err := json.NewDecoder(r).Decode(&snap); err != nil {
		return fmt.Errorf("%w: share snapshot: %w", storage.ErrCorrupt, err)
	}
	if snap == nil || len(snap.Partitions) > MaxSharePartitions {
		return fmt.Errorf("%w: share snapshot: null or too large", storage.ErrCorrupt)
	}
	parts := make(map[SharePartitionKey]*SharePartitionState, len(snap.Partitions))
	for _, p := range snap.Partitions {
		if p == nil {
			return fmt.Errorf("%w: share snapshot: null partition", storage.ErrCorrupt)
		}
		if err := p.check(); err != nil {
			return fmt.Errorf("%w: share snapshot: %w", storage.ErrCorrupt, err)
		}
		if parts[p.SharePartitionKey] != nil {
			return fmt.Errorf("%w: share snapshot: %+v twice", storage.ErrCorrupt, p.SharePartitionKey)
		}
		parts[p.SharePartitionKey] = p
	}
	configs, err := recoverShareConfigs(snap.Configs)
	if err != nil {
		return fmt.Errorf("%w: share snapshot: %w", storage.ErrCorrupt, err)
	}
	s.parts, s.configs = parts, configs
	return nil
}

func (s *shareSM) Close() error { return nil }
