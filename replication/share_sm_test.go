package replication

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/stretchr/testify/require"

	"github.com/replog/replog/storage"
)

var shKey = SharePartitionKey{Group: "g", Topic: "t", TopicID: 7, Partition: 0}

const sec = int64(time.Second)

func shAcquire(member string, max int, hw, now int64) shareCmd {
	return shareCmd{Op: shopAcquire, SharePartitionKey: shKey, Member: member, Max: max, HighWatermark: hw,
		Lock: 30 * sec, MaxDeliveries: 3, Now: now}
}

func shAck(member string, ack ShareAck, now int64, ds ...ShareDelivery) shareCmd {
	return shareCmd{Op: shopAck, SharePartitionKey: shKey, Member: member, Ack: ack, Records: ds, Now: now}
}

func shDo(t *testing.T, s *shareSM, c shareCmd) (uint64, ShareAcquireResult) {
	t.Helper()
	b, err := json.Marshal(c)
	require.NoError(t, err)
	r, err := s.Update(sm.Entry{Cmd: b})
	require.NoError(t, err)
	var res ShareAcquireResult
	if r.Value == sOK {
		require.NoError(t, json.Unmarshal(r.Data, &res))
	}
	return r.Value, res
}

func shMust(t *testing.T, s *shareSM, c shareCmd) ShareAcquireResult {
	t.Helper()
	code, res := shDo(t, s, c)
	require.Equal(t, sOK, code, "%+v", c)
	return res
}

func offsets(res ShareAcquireResult) []int64 {
	var out []int64
	for _, r := range res.Records {
		out = append(out, r.Offset)
	}
	return out
}

func dl(off int64, d int) ShareDelivery { return ShareDelivery{Offset: off, Deliveries: d} }

func shState(t *testing.T, s *shareSM) *SharePartitionState {
	t.Helper()
	v, err := s.Lookup(shKey)
	require.NoError(t, err)
	return v.(*SharePartitionState)
}

// TestShareSMAcquireDistinct: members acquiring at once get distinct
// records, none past the high watermark.
func TestShareSMAcquireDistinct(t *testing.T) {
	s := newShareSM()
	a := shMust(t, s, shAcquire("a", 3, 10, sec))
	b := shMust(t, s, shAcquire("b", 3, 10, sec))
	c := shMust(t, s, shAcquire("c", 10, 10, sec))
	require.Equal(t, []int64{0, 1, 2}, offsets(a))
	require.Equal(t, []int64{3, 4, 5}, offsets(b))
	require.Equal(t, []int64{6, 7, 8, 9}, offsets(c))
	require.Equal(t, 31*sec, a.Deadline)
	require.Empty(t, shMust(t, s, shAcquire("d", 5, 10, 2*sec)).Records)
	for _, r := range a.Records {
		require.Equal(t, 1, r.Deliveries)
		require.False(t, r.DeadLetter)
	}
}

// TestShareSMAckCompacts: acknowledged records at the head move the start
// offset; one behind an unacknowledged one stays in the window.
func TestShareSMAckCompacts(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 4, 4, sec))
	shMust(t, s, shAck("a", ShareAccept, 2*sec, dl(1, 1), dl(2, 1)))
	p := shState(t, s)
	require.Equal(t, int64(0), p.Start)
	require.Len(t, p.InFlight, 4)
	shMust(t, s, shAck("a", ShareReject, 2*sec, dl(0, 1)))
	p = shState(t, s)
	require.Equal(t, int64(3), p.Start)
	require.Len(t, p.InFlight, 1)
	shMust(t, s, shAck("a", ShareAccept, 2*sec, dl(3, 1)))
	p = shState(t, s)
	require.Equal(t, int64(4), p.Start)
	require.Empty(t, p.InFlight)
}

// TestShareSMAckErrors: acknowledging twice, after the lock expired, from
// another member, or an earlier delivery, is refused, and a refused
// command changes nothing (all or none).
func TestShareSMAckErrors(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 3, 3, sec))
	shMust(t, s, shAck("a", ShareAccept, 2*sec, dl(1, 1)))

	code, _ := shDo(t, s, shAck("a", ShareAccept, 2*sec, dl(1, 1)))
	require.Equal(t, sAcknowledged, code, "twice")
	code, _ = shDo(t, s, shAck("b", ShareAccept, 2*sec, dl(0, 1)))
	require.Equal(t, sNotAcquired, code, "another member")
	code, _ = shDo(t, s, shAck("a", ShareAccept, 2*sec, dl(0, 2)))
	require.Equal(t, sNotAcquired, code, "another delivery")
	code, _ = shDo(t, s, shAck("a", ShareAccept, 2*sec, dl(0, 1), dl(9, 1)))
	require.Equal(t, sNotAcquired, code, "never acquired")
	require.Equal(t, ShareAcquired, shState(t, s).InFlight[0].State, "all or none")
	code, _ = shDo(t, s, shAck("a", ShareAccept, 31*sec, dl(0, 1)))
	require.Equal(t, sNotAcquired, code, "lock expired")

	// The expired record goes to the next member, delivered twice.
	b := shMust(t, s, shAcquire("b", 5, 3, 31*sec))
	require.Equal(t, []ShareAcquiredRecord{{ShareDelivery: dl(0, 2)}, {ShareDelivery: dl(2, 2)}}, b.Records)
	code, _ = shDo(t, s, shAck("a", ShareAccept, 32*sec, dl(0, 1)))
	require.Equal(t, sNotAcquired, code, "late ack of an earlier delivery")
	shMust(t, s, shAck("b", ShareAccept, 32*sec, dl(0, 2), dl(2, 2)))
	require.Equal(t, int64(3), shState(t, s).Start)
	code, _ = shDo(t, s, shAck("b", ShareAccept, 32*sec, dl(0, 2)))
	require.Equal(t, sAcknowledged, code, "compacted away")
}

// TestShareSMReleaseDelay: a released record is delivered again, after
// its delay, with its delivery count kept.
func TestShareSMReleaseDelay(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 1, 1, sec))
	c := shAck("a", ShareRelease, 2*sec, dl(0, 1))
	c.Delay = 5 * sec
	shMust(t, s, c)
	require.Empty(t, shMust(t, s, shAcquire("b", 1, 1, 6*sec)).Records)
	b := shMust(t, s, shAcquire("b", 1, 1, 7*sec))
	require.Equal(t, []ShareAcquiredRecord{{ShareDelivery: dl(0, 2)}}, b.Records)
}

// TestShareSMDeadLetter: a record delivered MaxDeliveries times is handed
// out once more as a dead letter, its count unchanged, and rejecting it
// archives it; a dead letter whose holder dies goes to the next.
func TestShareSMDeadLetter(t *testing.T) {
	s := newShareSM()
	now := sec
	for d := 1; d <= 3; d++ {
		r := shMust(t, s, shAcquire("a", 1, 1, now))
		require.Equal(t, []ShareAcquiredRecord{{ShareDelivery: dl(0, d)}}, r.Records)
		shMust(t, s, shAck("a", ShareRelease, now, dl(0, d)))
		now += sec
	}
	r := shMust(t, s, shAcquire("a", 1, 1, now))
	require.Equal(t, []ShareAcquiredRecord{{ShareDelivery: dl(0, 3), DeadLetter: true}}, r.Records)
	now += 31 * sec // a dies holding it
	r = shMust(t, s, shAcquire("b", 1, 1, now))
	require.Equal(t, []ShareAcquiredRecord{{ShareDelivery: dl(0, 3), DeadLetter: true}}, r.Records)
	code, _ := shDo(t, s, shAck("a", ShareReject, now, dl(0, 3)))
	require.Equal(t, sNotAcquired, code)
	shMust(t, s, shAck("b", ShareReject, now, dl(0, 3)))
	require.Equal(t, int64(1), shState(t, s).Start)
}

// TestShareSMWindowLimit: no more than ShareRecordLimit records are in
// flight past the start offset.
func TestShareSMWindowLimit(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 1, 1000, sec)) // offset 0, held
	var got int
	for range 3 {
		got += len(shMust(t, s, shAcquire("b", ShareRecordLimit, 1000, sec)).Records)
	}
	require.Equal(t, ShareRecordLimit-1, got)
	require.Len(t, shState(t, s).InFlight, ShareRecordLimit)
	require.Empty(t, shMust(t, s, shAcquire("b", 10, 1000, 2*sec)).Records)
	// Accepting the head moves the window by one.
	shMust(t, s, shAck("a", ShareAccept, 2*sec, dl(0, 1)))
	require.Equal(t, []int64{200}, offsets(shMust(t, s, shAcquire("c", 5, 1000, 2*sec))))
}

// TestShareSMRenewLeaveLogStart: renewal keeps a lock past its deadline;
// leaving releases what a member holds; a log start past the start
// offset skips what retention removed.
func TestShareSMRenewLeaveLogStart(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 2, 4, sec))
	renew := shareCmd{Op: shopRenew, SharePartitionKey: shKey, Member: "a", Records: []ShareDelivery{dl(0, 1)}, Lock: 30 * sec, Now: 20 * sec}
	require.Equal(t, 50*sec, shMust(t, s, renew).Deadline)
	require.Equal(t, []int64{1, 2, 3}, offsets(shMust(t, s, shAcquire("b", 5, 4, 40*sec))))
	renew.Now = 60 * sec
	code, _ := shDo(t, s, renew)
	require.Equal(t, sNotAcquired, code, "renewing an expired lock")

	shMust(t, s, shareCmd{Op: shopLeave, SharePartitionKey: shKey, Member: "b", Now: 41 * sec})
	require.Equal(t, []int64{1, 2, 3}, offsets(shMust(t, s, shAcquire("c", 5, 4, 41*sec))))

	c := shAcquire("d", 5, 10, 42*sec)
	c.LogStart = 6
	require.Equal(t, []int64{6, 7, 8, 9}, offsets(shMust(t, s, c)))
	require.Equal(t, int64(6), shState(t, s).Start)
}

// TestShareSMBadCommands: bad input answers a code and changes nothing.
func TestShareSMBadCommands(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 1, 1, sec))
	before := shareSnap(t, s)
	long := strings.Repeat("x", MaxShareNameLength+1)
	for name, cmd := range map[string]string{
		"not json":       `{`,
		"unknown op":     `{"op":"x","group":"g","topic":"t","now":1}`,
		"no group":       `{"op":"acquire","topic":"t","member":"m","max":1,"hw":1,"lock":1,"max_deliveries":1,"now":1}`,
		"long group":     `{"op":"acquire","group":"` + long + `","topic":"t","member":"m","max":1,"hw":1,"lock":1,"max_deliveries":1,"now":1}`,
		"no member":      `{"op":"acquire","group":"g","topic":"t","max":1,"hw":1,"lock":1,"max_deliveries":1,"now":1}`,
		"max 0":          `{"op":"acquire","group":"g","topic":"t","member":"m","max":0,"hw":1,"lock":1,"max_deliveries":1,"now":1}`,
		"max too big":    `{"op":"acquire","group":"g","topic":"t","member":"m","max":201,"hw":1,"lock":1,"max_deliveries":1,"now":1}`,
		"negative hw":    `{"op":"acquire","group":"g","topic":"t","member":"m","max":1,"hw":-1,"lock":1,"max_deliveries":1,"now":1}`,
		"start past hw":  `{"op":"acquire","group":"g","topic":"t","member":"m","max":1,"hw":1,"log_start":2,"lock":1,"max_deliveries":1,"now":1}`,
		"no lock":        `{"op":"acquire","group":"g","topic":"t","member":"m","max":1,"hw":1,"max_deliveries":1,"now":1}`,
		"no deliveries":  `{"op":"acquire","group":"g","topic":"t","member":"m","max":1,"hw":1,"lock":1,"now":1}`,
		"bad partition":  `{"op":"acquire","group":"g","topic":"t","partition":-1,"member":"m","max":1,"hw":1,"lock":1,"max_deliveries":1,"now":1}`,
		"ack kind":       `{"op":"ack","group":"g","topic":"t","member":"a","ack":9,"records":[{"o":0,"d":1}],"now":1}`,
		"negative delay": `{"op":"ack","group":"g","topic":"t","topic_id":7,"member":"a","ack":2,"delay":-1,"records":[{"o":0,"d":1}],"now":1}`,
		"no records":     `{"op":"ack","group":"g","topic":"t","topic_id":7,"member":"a","ack":1,"now":1}`,
		"negative off":   `{"op":"ack","group":"g","topic":"t","topic_id":7,"member":"a","ack":1,"records":[{"o":-1,"d":1}],"now":1}`,
		"renew no lock":  `{"op":"renew","group":"g","topic":"t","topic_id":7,"member":"a","records":[{"o":0,"d":1}],"now":1}`,
		"no time":        `{"op":"leave","group":"g","topic":"t","topic_id":7,"member":"a"}`,
		"null":           `null`,
	} {
		b := []byte(cmd)
		r, err := s.Update(sm.Entry{Cmd: b})
		require.NoError(t, err, name)
		require.Equal(t, sInvalid, r.Value, name)
	}
	require.Equal(t, before, shareSnap(t, s))
}

func shareSnap(t *testing.T, s *shareSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, s.SaveSnapshot(&buf, nil, nil))
	return buf.Bytes()
}

// TestShareSMSnapshot: a snapshot restores the state; a damaged one is
// refused with ErrCorrupt and the state kept.
func TestShareSMSnapshot(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 3, 5, sec))
	shMust(t, s, shAck("a", ShareAccept, sec, dl(1, 1)))
	snap := shareSnap(t, s)
	r := newShareSM()
	require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
	require.Equal(t, shState(t, s), shState(t, r))
	require.Equal(t, snap, shareSnap(t, r))

	for name, bad := range map[string]string{
		"garbage":      `{`,
		"null":         `null`,
		"null part":    `{"partitions":[null]}`,
		"bad key":      `{"partitions":[{"group":"","topic":"t","start":0}]}`,
		"negative":     `{"partitions":[{"group":"g","topic":"t","start":-1}]}`,
		"uncompacted":  `{"partitions":[{"group":"g","topic":"t","start":0,"in_flight":[{"s":2}]}]}`,
		"bad state":    `{"partitions":[{"group":"g","topic":"t","start":0,"in_flight":[{"s":9}]}]}`,
		"no holder":    `{"partitions":[{"group":"g","topic":"t","start":0,"in_flight":[{"s":1}]}]}`,
		"twice":        `{"partitions":[{"group":"g","topic":"t","start":0},{"group":"g","topic":"t","start":1}]}`,
		"too many":     `{"partitions":[{"group":"g","topic":"t","start":0,"in_flight":[` + strings.Repeat(`{"s":0},`, ShareRecordLimit) + `{"s":0}]}]}`,
		"negative cnt": `{"partitions":[{"group":"g","topic":"t","start":0,"in_flight":[{"s":0,"d":-1}]}]}`,
	} {
		err := r.RecoverFromSnapshot(strings.NewReader(bad), nil, nil)
		require.ErrorIs(t, err, storage.ErrCorrupt, name)
		require.Equal(t, snap, shareSnap(t, r), name)
	}
}

func FuzzShareSMUpdate(f *testing.F) {
	rel := shAck("a", ShareRelease, 2*sec, dl(1, 1))
	rel.Delay = sec
	withReq := shAcquire("a", 2, 10, sec)
	withReq.Req = 9
	latest := shAcquire("b", 5, 10, sec)
	latest.Latest = true
	latest.SharePartitionKey = SharePartitionKey{Group: "g", Topic: "t", TopicID: 7, Partition: 1}
	each := shAck("a", ShareAccept, 2*sec, dl(0, 0), dl(0, 0), dl(2, 1), dl(9, 0))
	each.Each = true
	renewEach := shareCmd{Op: shopRenew, SharePartitionKey: shKey, Member: "a", Records: []ShareDelivery{dl(0, 0), dl(5, 0)},
		Lock: sec, Now: 2 * sec, Each: true}
	for _, c := range []shareCmd{
		latest, each, renewEach,
		shAcquire("a", 3, 10, sec), shAcquire("b", 200, 1000, 40*sec), withReq,
		shAck("a", ShareAccept, 2*sec, dl(0, 1)), shAck("a", ShareReject, 2*sec, dl(2, 1)), rel,
		{Op: shopRenew, SharePartitionKey: shKey, Member: "a", Records: []ShareDelivery{dl(0, 1)}, Lock: sec, Now: 2 * sec},
		{Op: shopLeave, SharePartitionKey: shKey, Member: "a", Now: 2 * sec},
		{Op: shopDelete, SharePartitionKey: shKey, Now: 2 * sec},
		shReset(40*sec, ShareResetOffset{Partition: 0, Offset: 5}, ShareResetOffset{Partition: 3, Offset: 0}),
		shReset(2*sec, ShareResetOffset{Partition: 0, Offset: 0}),
		{Op: shopDeleteGroup, SharePartitionKey: SharePartitionKey{Group: "g"}, Now: 40 * sec},
		{Op: shopDeleteGroup, SharePartitionKey: SharePartitionKey{Group: "g"}, Now: 2 * sec},
		shConfig("g", ShareGroupConfig{AutoOffsetReset: "earliest", LockDuration: time.Minute}, ShareConfigAutoOffsetReset|ShareConfigLockDuration),
		shConfig("g", ShareGroupConfig{HeartbeatInterval: time.Minute}, ShareConfigHeartbeatInterval),
		shConfig("g", ShareGroupConfig{}, ShareConfigAll),
		shDeleteTopic("t", 40*sec), shDeleteTopic("t", 2*sec),
	} {
		b, _ := json.Marshal(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, cmd []byte) {
		s := newShareSM()
		first := shAcquire("a", 3, 10, sec)
		first.Req = 9
		shMust(t, s, first)
		shMust(t, s, shAck("a", ShareAccept, sec, dl(1, 1)))
		for range 2 { // twice: proposals may apply twice
			r, err := s.Update(sm.Entry{Cmd: cmd})
			require.NoError(t, err)
			require.LessOrEqual(t, r.Value, sNoGroup)
		}
		snap := shareSnap(t, s)
		r := newShareSM()
		require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
		require.Equal(t, snap, shareSnap(t, r))
	})
}

// TestShareSMAcquireTwice: an acquisition applied twice (a proposal
// retried through a leader change) answers the same records, as long as
// the member holds them, and acquires nothing more.
func TestShareSMAcquireTwice(t *testing.T) {
	s := newShareSM()
	c := shAcquire("a", 2, 10, sec)
	c.Req = 42
	first := shMust(t, s, c)
	require.Equal(t, []int64{0, 1}, offsets(first))
	c.Now = 2 * sec
	require.Equal(t, first, shMust(t, s, c))
	require.Equal(t, []int64{2, 3}, offsets(shMust(t, s, shAcquire("b", 2, 10, 2*sec))))
	// Once the member let them go, the same id acquires afresh.
	shMust(t, s, shAck("a", ShareAccept, 3*sec, dl(0, 1), dl(1, 1)))
	c.Now = 3 * sec
	require.Equal(t, []int64{4, 5}, offsets(shMust(t, s, c)))
}

func shReset(now int64, rs ...ShareResetOffset) shareCmd {
	k := shKey
	k.Partition = 0
	return shareCmd{Op: shopReset, SharePartitionKey: k, Resets: rs, Now: now}
}

func shGroup(t *testing.T, s *shareSM, group string) []*SharePartitionState {
	t.Helper()
	v, err := s.Lookup(shareGroupQuery{group: group})
	require.NoError(t, err)
	return v.([]*SharePartitionState)
}

// TestShareSMReset: a reset is refused while a member of the group holds
// an unexpired lock, on any partition; once none does (locks expired or
// acknowledged), it sets the start offsets, empties the windows, creates
// partitions the group had none of, and acquisitions go on from there.
func TestShareSMReset(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 2, 10, sec)) // 0, 1 locked until 31s
	other := shAcquire("b", 1, 10, sec)
	other.Partition = 1
	shMust(t, s, other) // partition 1: 0 locked until 31s
	shMust(t, s, shAck("a", ShareAccept, 2*sec, dl(0, 1), dl(1, 1)))
	before := shareSnap(t, s)

	code, _ := shDo(t, s, shReset(3*sec, ShareResetOffset{Partition: 0, Offset: 7}))
	require.Equal(t, sNotEmpty, code, "partition 1's lock counts for the group")
	require.Equal(t, before, shareSnap(t, s))

	// Partition 1's lock expires at 31s: the group is empty.
	shMust(t, s, shReset(31*sec, ShareResetOffset{Partition: 0, Offset: 7}, ShareResetOffset{Partition: 2, Offset: 3}))
	ps := shGroup(t, s, "g")
	require.Len(t, ps, 3)
	require.Equal(t, []int64{7, 0, 3}, []int64{ps[0].Start, ps[1].Start, ps[2].Start})
	require.Empty(t, ps[0].InFlight)
	require.Len(t, ps[1].InFlight, 1, "partitions not named keep their state")
	require.Equal(t, []int64{7, 8}, offsets(shMust(t, s, shAcquire("c", 2, 10, 32*sec))))

	// Backwards too: records done before are delivered again.
	code, _ = shDo(t, s, shReset(33*sec, ShareResetOffset{Partition: 0, Offset: 0}))
	require.Equal(t, sNotEmpty, code)
	shMust(t, s, shareCmd{Op: shopLeave, SharePartitionKey: shKey, Member: "c", Now: 33 * sec})
	shMust(t, s, shReset(33*sec, ShareResetOffset{Partition: 0, Offset: 0}))
	res := shMust(t, s, shAcquire("c", 3, 10, 34*sec))
	require.Equal(t, []int64{0, 1, 2}, offsets(res))
	require.Equal(t, 1, res.Records[0].Deliveries, "delivery counts start afresh")

	// A late acknowledgement of a delivery from before the reset is refused.
	code, _ = shDo(t, s, shAck("a", ShareAccept, 35*sec, dl(5, 1)))
	require.Equal(t, sNotAcquired, code)
}

// TestShareSMResetLimit: a reset that would create more share partitions
// than MaxSharePartitions is refused whole.
func TestShareSMResetLimit(t *testing.T) {
	s := newShareSM()
	for i := range MaxSharePartitions - 1 {
		k := shKey
		k.Group = "x"
		k.Partition = i % MaxPartitions
		k.TopicID = uint64(i / MaxPartitions)
		s.parts[k] = &SharePartitionState{SharePartitionKey: k}
	}
	code, _ := shDo(t, s, shReset(sec, ShareResetOffset{Partition: 0, Offset: 1}, ShareResetOffset{Partition: 1, Offset: 1}))
	require.Equal(t, sTooMany, code)
	require.Empty(t, shGroup(t, s, "g"))
	shMust(t, s, shReset(sec, ShareResetOffset{Partition: 0, Offset: 1}))
}

// TestShareSMDeleteGroup: deleting a group is refused while a member
// holds a lock, forgets every partition of the group (and no other's)
// once none does, and answers sNoGroup for a group with none.
func TestShareSMDeleteGroup(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 2, 10, sec))
	other := shAcquire("a", 1, 10, sec)
	other.Group = "h"
	shMust(t, s, other)
	del := shareCmd{Op: shopDeleteGroup, SharePartitionKey: SharePartitionKey{Group: "g"}, Now: 2 * sec}
	code, _ := shDo(t, s, del)
	require.Equal(t, sNotEmpty, code)
	require.Len(t, shGroup(t, s, "g"), 1)

	shMust(t, s, shAck("a", ShareRelease, 2*sec, dl(0, 1), dl(1, 1)))
	shMust(t, s, del)
	require.Empty(t, shGroup(t, s, "g"))
	require.Len(t, shGroup(t, s, "h"), 1)
	code, _ = shDo(t, s, del)
	require.Equal(t, sNoGroup, code)
	v, err := s.Lookup(shareGroupsQuery{})
	require.NoError(t, err)
	require.Equal(t, []string{"h"}, v)

	// A deleted group starts afresh at its next acquisition.
	require.Equal(t, []int64{0, 1}, offsets(shMust(t, s, shAcquire("b", 2, 10, 3*sec))))
}

// TestShareSMBadAdminCommands: malformed resets and group deletes answer
// sInvalid and change nothing.
func TestShareSMBadAdminCommands(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 1, 1, sec))
	before := shareSnap(t, s)
	for name, cmd := range map[string]string{
		"delete no group": `{"op":"delete_group","now":1}`,
		"delete no time":  `{"op":"delete_group","group":"g"}`,
		"reset no topic":  `{"op":"reset","group":"g","resets":[{"p":0,"o":1}],"now":1}`,
		"reset no group":  `{"op":"reset","topic":"t","resets":[{"p":0,"o":1}],"now":1}`,
		"reset none":      `{"op":"reset","group":"g","topic":"t","now":1}`,
		"reset negative":  `{"op":"reset","group":"g","topic":"t","resets":[{"p":0,"o":-1}],"now":1}`,
		"reset bad part":  `{"op":"reset","group":"g","topic":"t","resets":[{"p":-1,"o":1}],"now":1}`,
		"reset twice":     `{"op":"reset","group":"g","topic":"t","resets":[{"p":0,"o":1},{"p":0,"o":2}],"now":1}`,
	} {
		r, err := s.Update(sm.Entry{Cmd: []byte(cmd)})
		require.NoError(t, err, name)
		require.Equal(t, sInvalid, r.Value, name)
	}
	require.Equal(t, before, shareSnap(t, s))
}

// TestShareSMSnapshotToday: a snapshot as this version writes it, after
// acquisitions, acknowledgements and a reset, loads and writes the same
// bytes (the admin operations add no state to the format).
func TestShareSMSnapshotToday(t *testing.T) {
	const today = `{"partitions":[{"group":"g","topic":"t","topic_id":7,"partition":0,"start":1,"in_flight":[{"s":1,"d":1,"m":"a","dl":31000000000},{"s":2,"d":1,"m":"a"}]},{"group":"g","topic":"t","topic_id":7,"partition":4,"start":9}]}` + "\n"
	s := newShareSM()
	shMust(t, s, shReset(sec, ShareResetOffset{Partition: 4, Offset: 9}))
	shMust(t, s, shAcquire("a", 3, 10, sec))
	shMust(t, s, shAck("a", ShareAccept, sec, dl(0, 1), dl(2, 1)))
	require.Equal(t, today, string(shareSnap(t, s)))
	r := newShareSM()
	require.NoError(t, r.RecoverFromSnapshot(strings.NewReader(today), nil, nil))
	require.Equal(t, today, string(shareSnap(t, r)))
	require.Len(t, shGroup(t, r, "g"), 2)
}

// TestShareSMAckEach: Kafka's acknowledgements (Each, no delivery count)
// apply to the records the member holds and name the others; all-or-none
// acks are unchanged.
func TestShareSMAckEach(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 3, 10, sec))   // 0-2 for a, lock to 31s
	shMust(t, s, shAcquire("b", 2, 10, 2*sec)) // 3-4 for b
	// All or none: one record not held refuses the command.
	code, _ := shDo(t, s, shAck("a", ShareAccept, 3*sec, dl(0, 0), dl(3, 0)))
	require.Equal(t, sNotAcquired, code)
	require.Equal(t, ShareAcquired, shState(t, s).InFlight[0].State)

	c := shAck("a", ShareAccept, 3*sec, dl(0, 0), dl(0, 0), dl(3, 0), dl(9, 0), dl(1, 1))
	c.Each = true
	res := shMust(t, s, c)
	require.Equal(t, []int64{3, 9}, res.Refused)
	p := shState(t, s)
	require.Equal(t, int64(2), p.Start, "0 and 1 accepted")
	require.Equal(t, ShareAcquired, p.InFlight[1].State, "b's record untouched")

	// A delivery count that does not match refuses that record only.
	c = shAck("a", ShareRelease, 3*sec, dl(2, 2))
	c.Each = true
	require.Equal(t, []int64{2}, shMust(t, s, c).Refused)
	// Renew with Each, after a's lock expired: refused.
	r := shareCmd{Op: shopRenew, SharePartitionKey: shKey, Member: "a", Records: []ShareDelivery{dl(2, 0)},
		Lock: 30 * sec, Now: 40 * sec, Each: true}
	require.Equal(t, []int64{2}, shMust(t, s, r).Refused)
	r.Member, r.Records = "b", []ShareDelivery{dl(3, 0), dl(4, 0)}
	r.Now = 20 * sec
	res = shMust(t, s, r)
	require.Empty(t, res.Refused)
	require.Equal(t, 50*sec, shState(t, s).InFlight[1].Deadline)
}

// TestShareSMLatest: a share partition an acquisition with Latest creates
// starts at the high watermark; one that exists is unaffected.
func TestShareSMLatest(t *testing.T) {
	s := newShareSM()
	c := shAcquire("a", 5, 10, sec)
	c.Latest, c.LogStart = true, 2
	require.Empty(t, shMust(t, s, c).Records)
	require.Equal(t, int64(10), shState(t, s).Start)
	c.HighWatermark = 12
	require.Equal(t, []int64{10, 11}, offsets(shMust(t, s, c)))
}
