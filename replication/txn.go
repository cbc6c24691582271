package replication

import (
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

// TxnShardID is the Raft group of the transaction coordinator (Kafka's
// KIP-98): transactional ids, their producer ids and epochs, and the state
// of each one's transaction. It is a group of its own, like the groups
// group, so that transactions neither stall topic metadata nor wait behind
// consumer heartbeats; its replicas are the cluster's nodes, as in the
// metadata and groups groups.
const TxnShardID uint64 = 3

// Limits of the transaction coordinator. Commands beyond them are refused
// before they change anything.
const (
	// MaxTransactionalIDLength caps a transactional id, and the name of a
	// group whose offsets a transaction commits, in bytes: both are keys
	// of the coordinator's state, held in memory and in every snapshot.
	MaxTransactionalIDLength = 1024
	// MaxTxnTimeout caps a transaction's timeout, as Kafka's
	// transaction.max.timeout.ms (15 minutes by default): a producer that
	// dies in a transaction holds back read_committed consumers of its
	// partitions (the last stable offset) until the timeout aborts it.
	MaxTxnTimeout = 15 * time.Minute
	// MaxTxnPartitions caps the partitions of one transaction, counting each
	// group whose offsets it commits as one (Kafka adds a partition of
	// __consumer_offsets for it), and separately the offsets it commits:
	// ending a transaction writes a marker to each partition, and every
	// replica of the coordinator applies each command.
	MaxTxnPartitions = 4096
	// TransactionalIDExpiration is how long a transactional id with no
	// open transaction is kept after its last change, as Kafka's
	// transactional.id.expiration.ms (7 days by default). Its producer
	// then gets ErrUnknownTransactionalID and starts again with
	// InitProducerID.
	TransactionalIDExpiration = 7 * 24 * time.Hour
)

// maxProducerEpoch is the highest epoch InitProducerID hands out. Kafka's
// epoch is an int16; one more than this is reserved for fencing a producer
// whose transaction is aborted on its behalf (a timeout, a new instance),
// and InitProducerID then moves the transactional id to a new producer id.
const maxProducerEpoch = 32766

// Transaction coordinator errors; each matches a Kafka error code.
var (
	// ErrFenced: the producer id or epoch is not the transactional id's
	// current one: a newer instance called InitProducerID, or the
	// coordinator aborted the transaction (a timeout) and bumped the
	// epoch. Kafka's PRODUCER_FENCED.
	ErrFenced = errors.New("producer fenced by a newer epoch of its transactional id")
	// ErrConcurrentTransactions: the transactional id's previous
	// transaction is still being committed or aborted (its markers are
	// being written); retry. Kafka's CONCURRENT_TRANSACTIONS.
	ErrConcurrentTransactions = errors.New("previous transaction still completing, retry")
	// ErrInvalidTxnState: the request does not fit the transaction's
	// state: ending a transaction that was never begun, committing one
	// that is being aborted, or the reverse. Kafka's INVALID_TXN_STATE.
	ErrInvalidTxnState = errors.New("invalid transaction state for the request")
	// ErrUnknownTransactionalID: the coordinator holds no such
	// transactional id (never initialized, or expired). Kafka's
	// INVALID_PRODUCER_ID_MAPPING.
	ErrUnknownTransactionalID = errors.New("unknown transactional id")
	// ErrTxnTooLarge: the transaction would exceed MaxTxnPartitions
	// partitions or offsets.
	ErrTxnTooLarge = errors.New("transaction has too many partitions or offsets")
	// ErrInvalidTxnTimeout: the timeout is not in (0, MaxTxnTimeout].
	// Kafka's INVALID_TRANSACTION_TIMEOUT.
	ErrInvalidTxnTimeout = errors.New("invalid transaction timeout")
)

// TxnStatus is the state of a transactional id's transaction, as Kafka's.
type TxnStatus string

// Transaction states. A transaction begins Ongoing (from Empty or a
// Complete* state) with its first partition or group, ends by a decision
// (Prepare*), and is Complete* once its markers are written to every
// partition.
const (
	TxnEmpty          TxnStatus = "Empty"
	TxnOngoing        TxnStatus = "Ongoing"
	TxnPrepareCommit  TxnStatus = "PrepareCommit"
	TxnPrepareAbort   TxnStatus = "PrepareAbort"
	TxnCompleteCommit TxnStatus = "CompleteCommit"
	TxnCompleteAbort  TxnStatus = "CompleteAbort"
)

// Prepared reports whether the transaction is decided and its markers are
// still to be written.
func (s TxnStatus) Prepared() bool { return s == TxnPrepareCommit || s == TxnPrepareAbort }

// open reports whether no transaction is under way: one may begin.
func (s TxnStatus) open() bool {
	return s == TxnEmpty || s == TxnCompleteCommit || s == TxnCompleteAbort
}

func (s TxnStatus) valid() bool {
	switch s {
	case TxnEmpty, TxnOngoing, TxnPrepareCommit, TxnPrepareAbort, TxnCompleteCommit, TxnCompleteAbort:
		return true
	}
	return false
}

// TxnOffset is an offset a transaction commits for a group's partition,
// with the group membership of the consumer that read up to it (KIP-447):
// the groups group checks them when the transaction commits, so that a
// member fenced by a rebalance cannot commit stale offsets.
type TxnOffset struct {
	Offset   int64  `json:"offset"` // the next offset to read
	Metadata string `json:"metadata,omitempty"`
	// Generation is the group's generation the consumer belonged to; -1
	// when the client sent none (before KIP-447).
	Generation int32  `json:"generation"`
	Member     string `json:"member,omitempty"`
	// Instance is the consumer's group.instance.id (static membership).
	Instance string `json:"instance,omitempty"`
}

// TxnProducer is the producer id and epoch of a transactional id: what
// InitProducerID hands out and every later request must carry.
type TxnProducer struct {
	ProducerID uint64 `json:"producer_id"`
	Epoch      int16  `json:"epoch"`
}

// TxnState is a transactional id's state. Values handed out are copies.
type TxnState struct {
	ID string `json:"id"`
	TxnProducer
	Status  TxnStatus `json:"status"`
	Timeout int64     `json:"timeout"` // ns
	// Serial numbers the transactional id's transactions: each one
	// begun gets the next (the first is 1; 0 before any). Partitions
	// store it with the transaction's batches and markers name it (see
	// storage.CmdAppendTxn), so that a late batch or marker never
	// touches another transaction.
	Serial uint64 `json:"serial,omitempty"`
	// Started is when the transaction became Ongoing, Updated when the
	// state last changed: unix ns from the proposer's clock.
	Started int64 `json:"started,omitempty"`
	Updated int64 `json:"updated"`
	// Partitions are the transaction's partitions by topic, sorted.
	Partitions map[string][]int `json:"partitions,omitempty"`
	// Groups are the groups whose offsets the transaction commits, sorted;
	// Offsets their pending offsets, by group, topic and partition.
	Groups  []string                                `json:"groups,omitempty"`
	Offsets map[string]map[string]map[int]TxnOffset `json:"offsets,omitempty"`
}

func (t *TxnState) clone() *TxnState {
	c := *t
	c.Partitions = cloneTxnPartitions(t.Partitions)
	c.Groups = slices.Clone(t.Groups)
	if t.Offsets != nil {
		c.Offsets = make(map[string]map[string]map[int]TxnOffset, len(t.Offsets))
		for g, ts := range t.Offsets {
			c.Offsets[g] = make(map[string]map[int]TxnOffset, len(ts))
			for topic, ps := range ts {
				c.Offsets[g][topic] = maps.Clone(ps)
			}
		}
	}
	return &c
}

func cloneTxnPartitions(ps map[string][]int) map[string][]int {
	if ps == nil {
		return nil
	}
	out := make(map[string][]int, len(ps))
	for topic, p := range ps {
		out[topic] = slices.Clone(p)
	}
	return out
}

// size is what counts against MaxTxnPartitions: partitions plus groups.
func (t *TxnState) size() int {
	return len(t.Groups) + countTxnPartitions(t.Partitions)
}

func (t *TxnState) offsetCount() int {
	n := 0
	for _, ts := range t.Offsets {
		n += countTxnOffsets(ts)
	}
	return n
}

// begin starts a transaction at now, forgetting the last one's contents.
func (t *TxnState) begin(now int64) {
	t.Status, t.Started = TxnOngoing, now
	t.Serial++
	t.reset()
}

func (t *TxnState) reset() {
	t.Partitions, t.Groups, t.Offsets = nil, nil, nil
}

// fence bumps the epoch of a transaction aborted on its producer's behalf,
// so that the producer's later requests fail with ErrFenced. The epoch may
// reach maxProducerEpoch+1, which no producer holds.
func (t *TxnState) fence() {
	if t.Epoch <= maxProducerEpoch {
		t.Epoch++
	}
}

// check validates a transactional id's state read from a snapshot: commands
// assume a well-formed state.
func (t *TxnState) check(id string) error {
	switch {
	case t == nil:
		return errors.New("null transaction")
	case t.ID != id || !validTxnName(id):
		return fmt.Errorf("transaction %q under %q", t.ID, id)
	case t.ProducerID == 0:
		return errors.New("no producer id")
	case t.Epoch < 0 || t.Epoch > maxProducerEpoch+1:
		return fmt.Errorf("epoch %d", t.Epoch)
	case !t.Status.valid():
		return fmt.Errorf("status %q", t.Status)
	case t.Serial == 0 && t.Status != TxnEmpty:
		return fmt.Errorf("%s without a serial", t.Status)
	case t.Timeout <= 0 || t.Timeout > int64(MaxTxnTimeout):
		return fmt.Errorf("timeout %d", t.Timeout)
	case t.Status.open() && (len(t.Partitions) > 0 || len(t.Groups) > 0 || len(t.Offsets) > 0):
		return fmt.Errorf("%s with partitions or offsets", t.Status)
	case !validTxnPartitions(t.Partitions):
		return errors.New("partitions")
	case t.size() > MaxTxnPartitions || t.offsetCount() > MaxTxnPartitions:
		return errors.New("too many partitions or offsets")
	}
	for i, g := range t.Groups {
		if !validTxnName(g) || (i > 0 && t.Groups[i-1] >= g) {
			return fmt.Errorf("groups %q", t.Groups)
		}
	}
	for topic, ps := range t.Partitions {
		if !slices.IsSorted(ps) || len(slices.Compact(slices.Clone(ps))) != len(ps) {
			return fmt.Errorf("partitions of %q not sorted and unique", topic)
		}
	}
	for g, ts := range t.Offsets {
		if _, ok := slices.BinarySearch(t.Groups, g); !ok {
			return fmt.Errorf("offsets of group %q not in the transaction", g)
		}
		if !validTxnOffsets(ts) {
			return fmt.Errorf("offsets of group %q", g)
		}
	}
	return nil
}

func validTxnName(s string) bool { return s != "" && len(s) <= MaxTransactionalIDLength }

func validTxnPartitions(ps map[string][]int) bool {
	for topic, p := range ps {
		if topic == "" || len(topic) > maxTopicName || len(p) == 0 ||
			slices.ContainsFunc(p, func(p int) bool { return p < 0 || p >= MaxPartitions }) {
			return false
		}
	}
	return true
}

func countTxnPartitions(ps map[string][]int) int {
	n := 0
	for _, p := range ps {
		n += len(p)
	}
	return n
}

func countTxnOffsets(ts map[string]map[int]TxnOffset) int {
	n := 0
	for _, ps := range ts {
		n += len(ps)
	}
	return n
}

func validTxnOffsets(ts map[string]map[int]TxnOffset) bool {
	for topic, ps := range ts {
		if topic == "" || len(topic) > maxTopicName {
			return false
		}
		for p, o := range ps {
			if p < 0 || p >= MaxPartitions || o.Offset < 0 || len(o.Metadata) > MaxOffsetMetadata ||
				len(o.Member) > MaxTransactionalIDLength || len(o.Instance) > MaxTransactionalIDLength {
				return false
			}
		}
	}
	return true
}

type txnCmd struct {
	Op string `json:"op"`
	ID string `json:"id,omitempty"`
	TxnProducer
	// NewProducerID is a producer id the proposer allocated from the
	// metadata group, for txopInit to use if it needs one (a new
	// transactional id, or an exhausted epoch); 0 if it has none yet.
	NewProducerID uint64           `json:"new_producer_id,omitempty"`
	Timeout       int64            `json:"timeout,omitempty"` // ns
	Partitions    map[string][]int `json:"partitions,omitempty"`
	Group         string           `json:"group,omitempty"`
	// Offsets: txopOffsetCommit's offsets of Group, by topic and partition.
	Offsets map[string]map[int]TxnOffset `json:"offsets,omitempty"`
	Commit  bool                         `json:"commit,omitempty"`
	Now     int64                        `json:"now"`
	// IDExpiration: txopExpire forgets transactional ids with no open
	// transaction unchanged for longer (ns); 0 keeps them. In the command,
	// not a constant of the state machine, so that replicas of different
	// versions apply it alike.
	IDExpiration int64 `json:"id_expiration,omitempty"`
}

const (
	txopInit         = "init"
	txopAddPartition = "add-partitions"
	txopAddOffsets   = "add-offsets"
	txopOffsetCommit = "offset-commit"
	txopEnd          = "end"
	txopComplete     = "complete"
	txopExpire       = "expire"
)

// Result codes of transaction commands (sm.Result.Value). On tOK, Data is
// the transactional id's txnResult as JSON (txopExpire: the ids it moved
// to PrepareAbort).
const (
	tOK uint64 = iota
	tInvalid
	tUnknownID
	tFenced
	tConcurrent
	tInvalidState
	tTooLarge
	tInvalidTimeout
	// tNeedProducerID: txopInit needs a new producer id and the command
	// carries none; the proposer allocates one and proposes again.
	tNeedProducerID
)

// check validates c before it touches any state; it returns tOK or the code
// to refuse it with.
func (c *txnCmd) check() uint64 {
	if c.Op == txopExpire {
		return tOK
	}
	if !validTxnName(c.ID) || c.Epoch < 0 {
		return tInvalid
	}
	switch c.Op {
	case txopInit:
		if c.Timeout <= 0 || c.Timeout > int64(MaxTxnTimeout) {
			return tInvalidTimeout
		}
		return tOK
	case txopAddPartition:
		if countTxnPartitions(c.Partitions) > MaxTxnPartitions {
			return tTooLarge
		}
		if len(c.Partitions) == 0 || !validTxnPartitions(c.Partitions) {
			return tInvalid
		}
		return tOK
	case txopAddOffsets:
		if !validTxnName(c.Group) {
			return tInvalid
		}
		return tOK
	case txopOffsetCommit:
		if countTxnOffsets(c.Offsets) > MaxTxnPartitions {
			return tTooLarge
		}
		if !validTxnName(c.Group) || !validTxnOffsets(c.Offsets) {
			return tInvalid
		}
		return tOK
	case txopEnd, txopComplete:
		return tOK
	}
	return tInvalid
}

// txnSM is the transaction coordinator's state machine.
type txnSM struct {
	txns map[string]*TxnState
}

func newTxnSM() *txnSM { return &txnSM{txns: map[string]*TxnState{}} }

// Update applies one command. Whatever the bytes, it returns a result code
// and never an error: an error (or a panic) would stop the coordinator's
// Raft group on every replica, each time it replays the entry.
func (s *txnSM) Update(e sm.Entry) (sm.Result, error) {
	var c txnCmd
	if err := json.Unmarshal(e.Cmd, &c); err != nil {
		return sm.Result{Value: tInvalid}, nil
	}
	if code := c.check(); code != tOK {
		return sm.Result{Value: code}, nil
	}
	if c.Op == txopExpire {
		ids := s.expire(c.Now, c.IDExpiration)
		data, _ := json.Marshal(ids)
		return sm.Result{Value: tOK, Data: data}, nil
	}
	code, t := s.apply(c)
	r := sm.Result{Value: code}
	if code == tOK && t != nil {
		r.Data, _ = json.Marshal(txnResult{TxnProducer: t.TxnProducer, Serial: t.Serial})
	}
	return r, nil
}

// txnResult is what a command answers of the transactional id after it.
type txnResult struct {
	TxnProducer
	Serial uint64 `json:"serial,omitempty"`
}

// apply runs one command of a transactional id; it must be deterministic
// (time comes from the command, never from the clock). A refused command
// changes nothing.
func (s *txnSM) apply(c txnCmd) (uint64, *TxnState) {
	t := s.txns[c.ID]
	if c.Op == txopInit {
		return s.init(t, c)
	}
	if t == nil {
		return tUnknownID, nil
	}
	if t.TxnProducer != c.TxnProducer {
		return tFenced, nil
	}
	if c.Epoch > maxProducerEpoch && c.Op != txopEnd && c.Op != txopComplete {
		// The epoch of a fenced producer, which InitProducerID never
		// hands out: no transaction begins under it.
		return tFenced, nil
	}
	switch c.Op {
	case txopAddPartition:
		if t.Status.Prepared() {
			return tConcurrent, nil
		}
		// Merged into a copy: a refused command changes nothing.
		var merged map[string][]int
		n := 0
		if t.Status == TxnOngoing {
			merged, n = cloneTxnPartitions(t.Partitions), len(t.Groups)
		}
		if merged == nil {
			merged = map[string][]int{}
		}
		for topic, ps := range c.Partitions {
			all := append(merged[topic], ps...)
			slices.Sort(all)
			merged[topic] = slices.Compact(all)
		}
		for _, ps := range merged {
			n += len(ps)
		}
		if n > MaxTxnPartitions {
			return tTooLarge, nil
		}
		if t.Status.open() {
			t.begin(c.Now)
		}
		t.Partitions, t.Updated = merged, c.Now
		return tOK, t
	case txopAddOffsets:
		if t.Status.Prepared() {
			return tConcurrent, nil
		}
		if t.Status == TxnOngoing {
			if _, ok := slices.BinarySearch(t.Groups, c.Group); ok {
				t.Updated = c.Now
				return tOK, t
			}
			if t.size()+1 > MaxTxnPartitions {
				return tTooLarge, nil
			}
		} else {
			t.begin(c.Now)
		}
		i, _ := slices.BinarySearch(t.Groups, c.Group)
		t.Groups = slices.Insert(t.Groups, i, c.Group)
		t.Updated = c.Now
		return tOK, t
	case txopOffsetCommit:
		if t.Status.Prepared() {
			return tConcurrent, nil
		}
		if _, ok := slices.BinarySearch(t.Groups, c.Group); t.Status != TxnOngoing || !ok {
			return tInvalidState, nil // Kafka's clients add the group (AddOffsetsToTxn) first
		}
		n := t.offsetCount()
		for topic, ps := range c.Offsets {
			for p := range ps {
				if _, ok := t.Offsets[c.Group][topic][p]; !ok {
					n++
				}
			}
		}
		if n > MaxTxnPartitions {
			return tTooLarge, nil
		}
		if t.Offsets == nil {
			t.Offsets = map[string]map[string]map[int]TxnOffset{}
		}
		if t.Offsets[c.Group] == nil {
			t.Offsets[c.Group] = map[string]map[int]TxnOffset{}
		}
		for topic, ps := range c.Offsets {
			if len(ps) == 0 {
				continue
			}
			if t.Offsets[c.Group][topic] == nil {
				t.Offsets[c.Group][topic] = map[int]TxnOffset{}
			}
			maps.Copy(t.Offsets[c.Group][topic], ps)
		}
		t.Updated = c.Now
		return tOK, t
	case txopEnd:
		prepare, complete := TxnPrepareAbort, TxnCompleteAbort
		if c.Commit {
			prepare, complete = TxnPrepareCommit, TxnCompleteCommit
		}
		switch t.Status {
		case TxnOngoing:
			t.Status, t.Updated = prepare, c.Now
			return tOK, t
		case prepare, complete:
			return tOK, t // a retry of the decision already taken
		}
		return tInvalidState, nil
	case txopComplete:
		prepare, complete := TxnPrepareAbort, TxnCompleteAbort
		if c.Commit {
			prepare, complete = TxnPrepareCommit, TxnCompleteCommit
		}
		switch t.Status {
		case prepare:
			t.Status, t.Started, t.Updated = complete, 0, c.Now
			t.reset()
			return tOK, t
		case complete:
			return tOK, t
		}
		return tInvalidState, nil
	}
	return tInvalid, nil
}

// init is InitProducerID: a new transactional id gets a producer id at
// epoch 0; an existing one a bumped epoch, which fences its previous
// producer. A transaction still Ongoing is aborted first under the bumped
// epoch, and the caller retries (as a Kafka client does on
// CONCURRENT_TRANSACTIONS) until its markers are written.
func (s *txnSM) init(t *TxnState, c txnCmd) (uint64, *TxnState) {
	if t == nil {
		if c.NewProducerID == 0 {
			return tNeedProducerID, nil
		}
		t = &TxnState{ID: c.ID, TxnProducer: TxnProducer{ProducerID: c.NewProducerID}, Status: TxnEmpty,
			Timeout: c.Timeout, Updated: c.Now}
		s.txns[c.ID] = t
		return tOK, t
	}
	switch t.Status {
	case TxnPrepareCommit, TxnPrepareAbort:
		return tConcurrent, nil
	case TxnOngoing:
		t.fence()
		t.Status, t.Updated = TxnPrepareAbort, c.Now
		return tConcurrent, nil
	}
	if t.Epoch >= maxProducerEpoch {
		switch c.NewProducerID {
		case 0:
			return tNeedProducerID, nil
		case t.ProducerID:
			return tInvalid, nil // not a fresh id
		}
		t.ProducerID, t.Epoch = c.NewProducerID, 0
	} else {
		t.Epoch++
	}
	t.Status, t.Timeout, t.Started, t.Updated = TxnEmpty, c.Timeout, 0, c.Now
	t.reset()
	return tOK, t
}

// expire aborts, with a bumped epoch, the Ongoing transactions that have
// run past their timeout, and forgets the transactional ids with no open
// transaction unchanged for longer than idExpiration (0: none). It returns
// the ids it aborted, sorted.
func (s *txnSM) expire(now, idExpiration int64) []string {
	var aborted []string
	for _, id := range slices.Sorted(maps.Keys(s.txns)) {
		t := s.txns[id]
		switch {
		case t.Status == TxnOngoing && now-t.Started > t.Timeout:
			t.fence()
			t.Status, t.Updated = TxnPrepareAbort, now
			aborted = append(aborted, id)
		case t.Status.open() && idExpiration > 0 && now-t.Updated > idExpiration:
			delete(s.txns, id)
		}
	}
	return aborted
}

// expirable reports whether expire(now, idExpiration) would change anything.
func (s *txnSM) expirable(now, idExpiration int64) bool {
	for _, t := range s.txns {
		if (t.Status == TxnOngoing && now-t.Started > t.Timeout) ||
			(t.Status.open() && idExpiration > 0 && now-t.Updated > idExpiration) {
			return true
		}
	}
	return false
}

// Lookup queries of the coordinator (besides a transactional id, a string,
// which answers its *TxnState or nil).
type (
	// txnPreparedQuery lists the transactions in PrepareCommit or
	// PrepareAbort, by id: what a marker driver resumes.
	txnPreparedQuery struct{}
	// txnExpirableQuery asks whether an expire command would change
	// anything, so that the leader proposes one only then.
	txnExpirableQuery struct{ now, idExpiration int64 }
	// txnPendingOffsetsQuery asks which partitions of the group's offsets,
	// by topic, transactions not yet complete commit (KIP-447's unstable
	// offsets).
	txnPendingOffsetsQuery struct{ group string }
)

func (s *txnSM) Lookup(q any) (any, error) {
	switch q := q.(type) {
	case string:
		if t := s.txns[q]; t != nil {
			return t.clone(), nil
		}
		return (*TxnState)(nil), nil
	case txnPreparedQuery:
		var out []*TxnState
		for _, id := range slices.Sorted(maps.Keys(s.txns)) {
			if t := s.txns[id]; t.Status.Prepared() {
				out = append(out, t.clone())
			}
		}
		return out, nil
	case txnExpirableQuery:
		return s.expirable(q.now, q.idExpiration), nil
	case txnPendingOffsetsQuery:
		var out map[string][]int
		for _, t := range s.txns {
			if t.Status != TxnOngoing && !t.Status.Prepared() {
				continue
			}
			for topic, ps := range t.Offsets[q.group] {
				if out == nil {
					out = map[string][]int{}
				}
				for p := range ps {
					out[topic] = append(out[topic], p)
				}
			}
		}
		for topic, ps := range out {
			slices.Sort(ps)
			out[topic] = slices.Compact(ps)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: transaction query %T", ErrInvalid, q)
}

// txnSnapshot is the coordinator's snapshot: an object, so that later
// versions can add fields beside the transactions.
type txnSnapshot struct {
	Transactions map[string]*TxnState `json:"transactions"`
}

func (s *txnSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return json.NewEncoder(w).Encode(txnSnapshot{Transactions: s.txns})
}

// RecoverFromSnapshot replaces the state with a snapshot's. A snapshot that
// does not decode or validate is an error wrapping storage.ErrCorrupt, and
// the state is left as it was.
func (s *txnSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	var snap *txnSnapshot
	if err := json.NewDecoder(r).Decode(&snap); err != nil {
		return fmt.Errorf("%w: transactions snapshot: %w", storage.ErrCorrupt, err)
	}
	if snap == nil || snap.Transactions == nil {
		return fmt.Errorf("%w: transactions snapshot: null", storage.ErrCorrupt)
	}
	for id, t := range snap.Transactions {
		if err := t.check(id); err != nil {
			return fmt.Errorf("%w: transactions snapshot: %q: %w", storage.ErrCorrupt, id, err)
		}
	}
	s.txns = snap.Transactions
	return nil
}

func (s *txnSM) Close() error { return nil }
