package replication

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/replog/replog/storage"
)

// The share coordinator's API on a node: each request is one command to
// the coordinator's Raft group (ShareShardID), proposed through
// syncPropose, which retries through leader changes. The time of every
// command is this node's clock when it proposes: lock deadlines and
// delays are measured on the proposers' clocks, which should agree to
// well within a lock duration.

// ShareAcquireRequest asks for records of a share partition.
type ShareAcquireRequest struct {
	SharePartitionKey
	Member string
	// Max records, in (0, ShareRecordLimit].
	Max int
	// HighWatermark and LogStart are the bounds of the member's replica
	// of the partition, as it read them: nothing at or after the high
	// watermark is handed out, and records before the log start are gone.
	HighWatermark, LogStart int64
	Lock                    time.Duration
	MaxDeliveries           int
	// Latest: a share partition this acquisition creates starts at
	// HighWatermark rather than LogStart (share.auto.offset.reset).
	Latest bool
}

func (r *ShareAcquireRequest) cmd() shareCmd {
	return shareCmd{Op: shopAcquire, SharePartitionKey: r.SharePartitionKey, Member: r.Member, Max: r.Max,
		HighWatermark: r.HighWatermark, LogStart: r.LogStart, Lock: int64(r.Lock), MaxDeliveries: r.MaxDeliveries,
		Latest: r.Latest}
}

// ShareAcquire acquires up to r.Max available records of a share partition
// for r.Member. The command carries a random id, so that one applied twice
// (retried through a leader change) answers the same records.
func (n *Node) ShareAcquire(ctx context.Context, r ShareAcquireRequest) (ShareAcquireResult, error) {
	c := r.cmd()
	for c.Req == 0 {
		c.Req = rand.Uint64()
	}
	res, _, err := n.proposeShare(ctx, c)
	return res, err
}

// ShareAvailable reports, from this node's replica of the coordinator
// without a round trip (it may lag), whether ShareAcquire would hand out
// anything: a hint to poll with.
func (n *Node) ShareAvailable(r ShareAcquireRequest) bool {
	q := shareAvailableQuery{key: r.SharePartitionKey, now: time.Now().UnixNano(), hw: r.HighWatermark,
		logStart: r.LogStart, maxDeliveries: r.MaxDeliveries}
	v, err := n.nh.StaleRead(ShareShardID, q)
	ok, _ := v.(bool)
	return err != nil || ok // unknown: ask the coordinator
}

// ShareAck acknowledges deliveries the member holds, all or none:
// ErrShareNotAcquired if one's lock expired or another member holds it,
// ErrShareAcknowledged if one was acknowledged already. delay, for a
// release, is how long before the records may be delivered again.
func (n *Node) ShareAck(ctx context.Context, key SharePartitionKey, member string, ds []ShareDelivery, ack ShareAck, delay time.Duration) error {
	if delay < 0 || delay > MaxShareLock {
		return fmt.Errorf("%w: release delay %v (0 to %v)", ErrInvalid, delay, MaxShareLock)
	}
	_, attempts, err := n.proposeShare(ctx, shareCmd{Op: shopAck, SharePartitionKey: key, Member: member,
		Records: ds, Ack: ack, Delay: int64(delay)})
	if attempts > 1 && ack == ShareAccept && errors.Is(err, ErrShareAcknowledged) {
		// An earlier attempt may have applied, or the lock expired in
		// between and another member accepted the record: which, the
		// state does not tell. The caller must not count the record as
		// processed by it alone.
		return fmt.Errorf("%w: a retried accept found the record accepted, by an earlier attempt or by another member after this one's lock expired", ErrAmbiguous)
	}
	if attempts > 1 && (errors.Is(err, ErrShareAcknowledged) || (ack == ShareRelease && errors.Is(err, ErrShareNotAcquired))) {
		// An earlier attempt applied, and this one found its work done.
		// (It may also be another's, if the lock expired in between and
		// the record went to another member: for a release or a reject,
		// the outcome the caller asked for, or a redelivery, holds
		// either way.)
		return nil
	}
	return err
}

// ShareAckEach acknowledges, of deliveries ds, those the member holds, and
// returns the offsets of the others (Kafka's acknowledgements: a record
// whose lock expired fails alone). A delivery count of 0 names the
// delivery the member holds. An offset refused after a retried proposal
// may have been acknowledged by an earlier attempt.
func (n *Node) ShareAckEach(ctx context.Context, key SharePartitionKey, member string, ds []ShareDelivery, ack ShareAck, delay time.Duration) ([]int64, error) {
	if delay < 0 || delay > MaxShareLock {
		return nil, fmt.Errorf("%w: release delay %v (0 to %v)", ErrInvalid, delay, MaxShareLock)
	}
	res, _, err := n.proposeShare(ctx, shareCmd{Op: shopAck, SharePartitionKey: key, Member: member,
		Records: ds, Ack: ack, Delay: int64(delay), Each: true})
	if errors.Is(err, ErrShareNotAcquired) {
		// No state for the partition: nothing of it is held.
		return shareOffsets(ds), nil
	}
	return res.Refused, err
}

// ShareRenewEach extends to lock from now the locks of those of ds the
// member holds, and returns the offsets of the others.
func (n *Node) ShareRenewEach(ctx context.Context, key SharePartitionKey, member string, ds []ShareDelivery, lock time.Duration) ([]int64, error) {
	res, _, err := n.proposeShare(ctx, shareCmd{Op: shopRenew, SharePartitionKey: key, Member: member,
		Records: ds, Lock: int64(lock), Each: true})
	if errors.Is(err, ErrShareNotAcquired) {
		return shareOffsets(ds), nil
	}
	return res.Refused, err
}

func shareOffsets(ds []ShareDelivery) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.Offset
	}
	return out
}

// ShareRenew extends the locks of deliveries the member holds to lock from
// now, all or none, and returns the new deadline.
func (n *Node) ShareRenew(ctx context.Context, key SharePartitionKey, member string, ds []ShareDelivery, lock time.Duration) (time.Time, error) {
	res, _, err := n.proposeShare(ctx, shareCmd{Op: shopRenew, SharePartitionKey: key, Member: member,
		Records: ds, Lock: int64(lock)})
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, res.Deadline), nil
}

// ShareLeave releases every record the member holds in the partition.
func (n *Node) ShareLeave(ctx context.Context, key SharePartitionKey, member string) error {
	_, _, err := n.proposeShare(ctx, shareCmd{Op: shopLeave, SharePartitionKey: key, Member: member})
	if errors.Is(err, ErrShareNotAcquired) {
		return nil // no state: nothing held
	}
	return err
}

// SharePartition reads a share partition's state, linearizably; nil if the
// coordinator holds none.
func (n *Node) SharePartition(ctx context.Context, key SharePartitionKey) (*SharePartitionState, error) {
	v, err := n.syncRead(ctx, ShareShardID, key)
	if err != nil {
		return nil, err
	}
	p, ok := v.(*SharePartitionState)
	if !ok {
		return nil, ErrInvalid
	}
	return p, nil
}

func (n *Node) proposeShare(ctx context.Context, c shareCmd) (ShareAcquireResult, int, error) {
	c.Now = time.Now().UnixNano()
	if code := c.check(); code != sOK {
		return ShareAcquireResult{}, 0, fmt.Errorf("%w: share %s command", ErrInvalid, c.Op)
	}
	cmd, err := json.Marshal(c)
	if err != nil {
		return ShareAcquireResult{}, 0, err
	}
	r, attempts, err := n.syncPropose(ctx, ShareShardID, cmd)
	if err != nil {
		return ShareAcquireResult{}, attempts, err
	}
	if err := shareError(r.Value); err != nil {
		return ShareAcquireResult{}, attempts, err
	}
	var res ShareAcquireResult
	if err := json.Unmarshal(r.Data, &res); err != nil {
		return ShareAcquireResult{}, attempts, fmt.Errorf("%w: share result: %w", storage.ErrCorrupt, err)
	}
	return res, attempts, nil
}

// startShareGroup starts this node's replica of the share coordinator,
// bootstrapping the group with members if it is new (none: the group
// exists, or the node joins it).
func (n *Node) startShareGroup(members map[uint64]string, join bool) error {
	err := n.nh.StartReplica(members, join, func(uint64, uint64) sm.IStateMachine {
		return newShareSM()
	}, n.raftConfig(ShareShardID, n.cfg.NodeID))
	if err != nil {
		return fmt.Errorf("replog: start share coordinator group: %w", err)
	}
	return nil
}

// shareSweepInterval is how often the share coordinator's leader forgets
// the share partitions of deleted topics.
const shareSweepInterval = 10 * time.Second

// shareLoop runs sweepShares while the node runs.
func (n *Node) shareLoop() {
	defer n.wg.Done()
	t := time.NewTicker(shareSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.sweepShares()
	}
}

// sweepShares forgets, if this node leads the share coordinator, the share
// partitions of topics deleted (a topic re-created under the same name is
// another, with another id), so that they do not count against
// MaxSharePartitions forever. It reads its own replica first, so that an
// idle coordinator's log does not grow; the metadata is this node's, which
// never lists a deleted topic again once it has applied the delete.
func (n *Node) sweepShares() {
	if l, _ := n.leaderState(ShareShardID); l != n.cfg.NodeID {
		return
	}
	v, err := n.nh.StaleRead(ShareShardID, shareKeysQuery{})
	keys, _ := v.([]SharePartitionKey)
	if err != nil || len(keys) == 0 {
		return
	}
	meta := n.Metadata()
	for _, k := range keys {
		if tm := meta.Topics[k.Topic]; tm != nil && tm.ID == k.TopicID {
			continue
		}
		if !n.topicGone(meta, k) { // created since this node last heard
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.AttemptTimeout)
		_, _, err := n.proposeShare(ctx, shareCmd{Op: shopDelete, SharePartitionKey: k})
		cancel()
		if err != nil {
			return // the next sweep tries again
		}
	}
}

// topicGone reports whether the metadata shows k's topic deleted, its
// topic being another or none: its id (a shard number, see TopicMeta.ID)
// is below the metadata's next, so it is not one this node has yet to
// learn of.
func (n *Node) topicGone(meta *Metadata, k SharePartitionKey) bool {
	return k.TopicID < meta.NextShard
}

// ShareGroups lists the share groups the coordinator holds state of,
// sorted, linearizably. A group exists from its first acquisition (or
// reset) until it is deleted, or its topics are.
func (n *Node) ShareGroups(ctx context.Context) ([]string, error) {
	v, err := n.syncRead(ctx, ShareShardID, shareGroupsQuery{})
	if err != nil {
		return nil, err
	}
	gs, ok := v.([]string)
	if !ok {
		return nil, ErrInvalid
	}
	return gs, nil
}

// ShareGroup reads a share group's partitions, linearizably, sorted by
// topic, topic id and partition; ErrGroupNotFound if it has none.
func (n *Node) ShareGroup(ctx context.Context, group string) ([]*SharePartitionState, error) {
	v, err := n.syncRead(ctx, ShareShardID, shareGroupQuery{group: group})
	if err != nil {
		return nil, err
	}
	ps, ok := v.([]*SharePartitionState)
	if !ok {
		return nil, ErrInvalid
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("%w: share group %q", ErrGroupNotFound, group)
	}
	return ps, nil
}

// sharePartitionsQuery reads every share partition (copies, unsorted).
type sharePartitionsQuery struct{}

// LocalShareGroups reads every share partition of every share group as
// this node's replica of the share coordinator has applied them, without a
// round trip: it may lag the coordinator's leader a little, and it never
// waits for a quorum. Sorted by group, topic, topic id and partition. It
// copies the records in flight (at most ShareRecordLimit a partition).
func (n *Node) LocalShareGroups() ([]*SharePartitionState, error) {
	v, err := n.nh.StaleRead(ShareShardID, sharePartitionsQuery{})
	if err != nil {
		return nil, mapError(err)
	}
	ps, _ := v.([]*SharePartitionState)
	slices.SortFunc(ps, func(a, b *SharePartitionState) int {
		return compareShareKeys(a.SharePartitionKey, b.SharePartitionKey)
	})
	return ps, nil
}

// ShareReset sets the share-partition start offsets of a topic's
// partitions (by partition) in a share group, forgetting what was in
// flight there, if no member of the group holds a record under an
// unexpired lock (else ErrGroupNotEmpty). Partitions the group had no
// state of, and the group itself, are created. A reset that took more
// than one attempt and is then refused may have applied at the first:
// ErrAmbiguous.
func (n *Node) ShareReset(ctx context.Context, group, topic string, topicID uint64, offsets map[int]int64) error {
	c := shareCmd{Op: shopReset, SharePartitionKey: SharePartitionKey{Group: group, Topic: topic, TopicID: topicID}}
	for p, off := range offsets {
		c.Resets = append(c.Resets, ShareResetOffset{Partition: p, Offset: off})
	}
	slices.SortFunc(c.Resets, func(a, b ShareResetOffset) int { return cmp.Compare(a.Partition, b.Partition) })
	_, attempts, err := n.proposeShare(ctx, c)
	if attempts > 1 && errors.Is(err, ErrGroupNotEmpty) {
		return fmt.Errorf("%w: a retried share group reset found a lock: an earlier attempt may have applied before a member acquired records", ErrAmbiguous)
	}
	return err
}

// ShareDeleteGroup forgets every share partition of a group, if no member
// holds a record under an unexpired lock (else ErrGroupNotEmpty);
// ErrGroupNotFound if the coordinator holds none, unless an earlier
// attempt of this call deleted them.
func (n *Node) ShareDeleteGroup(ctx context.Context, group string) error {
	_, attempts, err := n.proposeShare(ctx, shareCmd{Op: shopDeleteGroup, SharePartitionKey: SharePartitionKey{Group: group}})
	if attempts > 1 && errors.Is(err, ErrGroupNotFound) {
		return nil // an earlier attempt applied
	}
	return err
}
