package replogkafka_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// Tests of Kafka transactions over the listener. Those that end a
// transaction and then read its outcome (markers, committed offsets,
// the next transaction of the id) need the coordinator to write the
// markers when a transaction ends; the others check what the listener
// itself decides.

// txnBatch is rawBatch with the transactional attribute.
func txnBatch(pid int64, epoch int16, seq int32, values ...string) []byte {
	b := rawBatch(pid, epoch, seq, values...)
	b[22] |= 0x10 // attributes, low byte
	// The CRC covers the attributes: sign again.
	crc := crc32c(b[21:])
	b[17], b[18], b[19], b[20] = byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc)
	return b
}

// produceTxnRaw produces batch to partition 0 of topic in a request
// naming txnID (nil: none).
func produceTxnRaw(t *testing.T, cl *kgo.Client, txnID *string, topic string, batch []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis, req.TransactionID = -1, 10000, txnID
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	return resp.Topics[0].Partitions[0]
}

// initTxn is InitProducerId for transactional id id.
func initTxn(t *testing.T, cl *kgo.Client, id string) (int64, int16) {
	t.Helper()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID, req.TransactionTimeoutMillis = kmsg.StringPtr(id), 60000
	resp, err := req.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	require.NoError(t, kerr.ErrorForCode(resp.ErrorCode), "InitProducerId")
	return resp.ProducerID, resp.ProducerEpoch
}

// addPartition adds partition 0 of topic to id's transaction and returns
// the answer's error.
func addPartition(t *testing.T, cl *kgo.Client, id string, pid int64, epoch int16, topic string) error {
	t.Helper()
	resp, err := addPartitionReq(id, pid, epoch, topic).RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	return kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode)
}

func addPartitionReq(id string, pid int64, epoch int16, topic string) *kmsg.AddPartitionsToTxnRequest {
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.Version, req.TransactionalID, req.ProducerID, req.ProducerEpoch = 3, id, pid, epoch
	rt := kmsg.NewAddPartitionsToTxnRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{0}
	req.Topics = append(req.Topics, rt)
	return req
}

func endTxn(t *testing.T, cl *kgo.Client, id string, pid int64, epoch int16, commit bool) error {
	t.Helper()
	resp, err := endTxnReq(id, pid, epoch, commit).RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	return kerr.ErrorForCode(resp.ErrorCode)
}

func endTxnReq(id string, pid int64, epoch int16, commit bool) *kmsg.EndTxnRequest {
	req := kmsg.NewPtrEndTxnRequest()
	req.Version, req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit = 4, id, pid, epoch, commit
	return req
}

// fetchIsolated fetches partition 0 of topic from offset 0 at isolation
// level iso.
func fetchIsolated(t *testing.T, cl *kgo.Client, topic string, iso int8) kmsg.FetchResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.IsolationLevel = 0, 0, 1<<20, iso
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	p := resp.Topics[0].Partitions[0]
	require.NoError(t, kerr.ErrorForCode(p.ErrorCode), "fetch")
	return p
}

// batchValues decodes the values of the data records of Kafka batches,
// and counts the control batches.
func batchValues(t *testing.T, raw []byte) (values []string, control int) {
	t.Helper()
	for len(raw) > 0 {
		var b kmsg.RecordBatch
		require.GreaterOrEqual(t, len(raw), 12)
		size := 12 + int(binary.BigEndian.Uint32(raw[8:]))
		require.NoError(t, b.ReadFrom(raw[:size]))
		raw = raw[size:]
		if b.Attributes&0x20 != 0 {
			control++
			continue
		}
		recs := b.Records
		for range b.NumRecords {
			var r kmsg.Record
			n, size := varint(recs)
			require.NoError(t, r.ReadFrom(recs[:n+int(size)]))
			values = append(values, string(r.Value))
			recs = recs[n+int(size):]
		}
	}
	return values, control
}

// varint decodes a zigzag varint: its length in bytes and its value.
func varint(b []byte) (int, int64) {
	var ux uint64
	for i, c := range b {
		ux |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return i + 1, int64(ux>>1) ^ -int64(ux&1)
		}
	}
	return len(b), 0
}

func TestTxnApiVersions(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	want := map[int16]int16{ // KIP-890 part 2 starts past these
		kmsg.InitProducerID.Int16():     4,
		kmsg.AddPartitionsToTxn.Int16(): 3,
		kmsg.AddOffsetsToTxn.Int16():    3,
		kmsg.EndTxn.Int16():             4,
		kmsg.TxnOffsetCommit.Int16():    4,
	}
	for _, k := range resp.ApiKeys {
		if v, ok := want[k.ApiKey]; ok {
			require.Equal(t, v, k.MaxVersion, kmsg.NameForKey(k.ApiKey))
			delete(want, k.ApiKey)
		}
	}
	require.Empty(t, want, "not listed")
	for _, f := range resp.FinalizedFeatures {
		require.NotEqual(t, "transaction.version", f.Name)
	}
}

func TestFindTxnCoordinator(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	cl := newClient(t, srv)
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorType, req.CoordinatorKeys = 1, []string{"t1", ""}
	ctx := testCtx(t)
	var resp *kmsg.FindCoordinatorResponse
	for {
		var err error
		resp, err = req.RequestWith(ctx, cl)
		require.NoError(t, err)
		require.Len(t, resp.Coordinators, 2)
		// franz-go may split the keys and merge the answers in any
		// order.
		slices.SortFunc(resp.Coordinators, func(a, b kmsg.FindCoordinatorResponseCoordinator) int { return strings.Compare(a.Key, b.Key) })
		// Until the listener's address is registered.
		if resp.Coordinators[1].ErrorCode != kerr.CoordinatorNotAvailable.Code {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, kerr.InvalidRequest.Code, resp.Coordinators[0].ErrorCode, "empty transactional id")
	require.Zero(t, resp.Coordinators[1].ErrorCode)
	require.Equal(t, int32(l.NodeID()), resp.Coordinators[1].NodeID)
}

// TestTxnProduceChecks: a transactional batch is stored only as part of
// its producer's ongoing transaction, in a partition added to it.
func TestTxnProduceChecks(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "t", 1)
	createTopic(t, cl, "other", 1)
	id := "checks"
	pid, epoch := initTxn(t, cl, id)

	p := produceTxnRaw(t, cl, &id, "t", txnBatch(pid, epoch, 0, "not added"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.InvalidTxnState, "before AddPartitionsToTxn")

	require.NoError(t, addPartition(t, cl, id, pid, epoch, "t"))
	p = produceTxnRaw(t, cl, &id, "t", txnBatch(pid, epoch, 0, "a", "b"))
	require.Zero(t, p.ErrorCode, "in the transaction: %v", kerr.ErrorForCode(p.ErrorCode))
	require.Equal(t, int64(0), p.BaseOffset)

	p = produceTxnRaw(t, cl, &id, "other", txnBatch(pid, epoch, 0, "x"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.InvalidTxnState, "a partition not added")
	p = produceTxnRaw(t, cl, &id, "t", rawBatch(pid, epoch, 2, "plain"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.InvalidTxnState, "not transactional, with a transactional id")
	p = produceTxnRaw(t, cl, nil, "t", txnBatch(pid, epoch, 2, "no id"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.TransactionalIDAuthorizationFailed, "transactional, without a transactional id")
	unknown := "unknown"
	p = produceTxnRaw(t, cl, &unknown, "t", txnBatch(pid, epoch, 2, "x"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.InvalidProducerIDMapping, "an unknown transactional id")
	p = produceTxnRaw(t, cl, &id, "t", txnBatch(pid+1, epoch, 0, "x"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.InvalidProducerEpoch, "another producer id")

	// Until it ends, the transaction's records are past the last stable
	// offset: read_committed sees none, read_uncommitted sees them.
	rc := fetchIsolated(t, cl, "t", 1)
	require.Equal(t, int64(0), rc.LastStableOffset)
	require.Equal(t, int64(2), rc.HighWatermark)
	require.Empty(t, rc.RecordBatches)
	ru := fetchIsolated(t, cl, "t", 0)
	require.Equal(t, int64(0), ru.LastStableOffset, "reported at read_uncommitted too")
	vs, _ := batchValues(t, ru.RecordBatches)
	require.Equal(t, []string{"a", "b"}, vs)
	ends, err := kadm.NewClient(cl).ListEndOffsets(testCtx(t), "t")
	require.NoError(t, err)
	if o, _ := ends.Lookup("t", 0); o.Offset != 2 {
		t.Fatalf("read_uncommitted end offset %d, want 2", o.Offset)
	}
	lo := kmsg.NewPtrListOffsetsRequest()
	lo.IsolationLevel = 1
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = "t"
	lp := kmsg.NewListOffsetsRequestTopicPartition()
	lp.Timestamp = -1
	lt.Partitions = append(lt.Partitions, lp)
	lo.Topics = append(lo.Topics, lt)
	lr, err := lo.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	require.Equal(t, int64(0), lr.Topics[0].Partitions[0].Offset, "read_committed end offset")

	// Once the transaction is decided, its late batches are refused: they
	// would open a transaction no marker ends.
	require.NoError(t, endTxn(t, cl, id, pid, epoch, false))
	p = produceTxnRaw(t, cl, &id, "t", txnBatch(pid, epoch, 2, "late"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.InvalidTxnState, "after EndTxn")
}

// TestTxnZombieFencedRaw: a second InitProducerId of a transactional id
// fences the first producer's epoch at the coordinator and at the
// partitions.
func TestTxnZombieFencedRaw(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "z", 1)
	id := "zombie"
	pid, old := initTxn(t, cl, id)
	pid2, epoch := initTxn(t, cl, id)
	require.Equal(t, pid, pid2)
	require.Equal(t, old+1, epoch)

	kip360 := func(epoch int16) *kmsg.InitProducerIDResponse {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID, req.TransactionTimeoutMillis = kmsg.StringPtr(id), 60000
		req.ProducerID, req.ProducerEpoch = pid, epoch
		resp, err := req.RequestWith(testCtx(t), cl)
		require.NoError(t, err)
		return resp
	}
	// KIP-360: a zombie asking again with its epoch fences nobody.
	resp := kip360(old)
	require.ErrorIs(t, kerr.ErrorForCode(resp.ErrorCode), kerr.ProducerFenced, "the zombie's KIP-360 InitProducerId")

	require.ErrorIs(t, addPartition(t, cl, id, pid, old, "z"), kerr.ProducerFenced)
	p := produceTxnRaw(t, cl, &id, "z", txnBatch(pid, old, 0, "zombie"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.InvalidProducerEpoch)
	require.ErrorIs(t, endTxn(t, cl, id, pid, old, true), kerr.ProducerFenced)

	// A producer recovering names its epoch, and gets the next one; the
	// zombie is two behind now.
	resp = kip360(epoch)
	require.Zero(t, resp.ErrorCode, "%v", kerr.ErrorForCode(resp.ErrorCode))
	require.Equal(t, epoch+1, resp.ProducerEpoch)
	epoch = resp.ProducerEpoch
	resp = kip360(old)
	require.ErrorIs(t, kerr.ErrorForCode(resp.ErrorCode), kerr.ProducerFenced)

	require.NoError(t, addPartition(t, cl, id, pid, epoch, "z"))
	p = produceTxnRaw(t, cl, &id, "z", txnBatch(pid, epoch, 0, "current"))
	require.Zero(t, p.ErrorCode, "%v", kerr.ErrorForCode(p.ErrorCode))
}

// joinGroup makes one member of group with raw requests, as a consumer
// joins, and returns its member id and generation.
func joinGroup(t *testing.T, cl *kgo.Client, group string, instance *string) (string, int32) {
	t.Helper()
	join := func(member string) *kmsg.JoinGroupResponse {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.MemberID, req.InstanceID, req.ProtocolType = group, member, instance, "consumer"
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 10000, 10000
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "range", []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		req.Protocols = append(req.Protocols, p)
		resp, err := req.RequestWith(testCtx(t), cl)
		require.NoError(t, err)
		return resp
	}
	resp := join("")
	if resp.ErrorCode == kerr.MemberIDRequired.Code {
		resp = join(resp.MemberID)
	}
	require.NoError(t, kerr.ErrorForCode(resp.ErrorCode), "JoinGroup")
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation, sync.InstanceID = group, resp.MemberID, resp.Generation, instance
	sresp, err := sync.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	require.NoError(t, kerr.ErrorForCode(sresp.ErrorCode), "SyncGroup")
	return resp.MemberID, resp.Generation
}

// txnCommit sends TxnOffsetCommit of partition 0 of topic at offset.
func txnCommit(t *testing.T, cl *kgo.Client, id string, pid int64, epoch int16, group, member string, instance *string, generation int32, topic string, offset int64) error {
	t.Helper()
	resp, err := txnCommitReq(id, pid, epoch, group, member, instance, generation, topic, offset).RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	return kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode)
}

func txnCommitReq(id string, pid int64, epoch int16, group, member string, instance *string, generation int32, topic string, offset int64) *kmsg.TxnOffsetCommitRequest {
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.Version, req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = 4, id, group, pid, epoch
	req.Generation, req.MemberID, req.InstanceID = generation, member, instance
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Offset = offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

// fetchStable fetches group's committed offset of partition 0 of topic
// with RequireStable, and returns it with the partition's error.
func fetchStable(t *testing.T, cl *kgo.Client, group, topic string, stable bool) (int64, error) {
	t.Helper()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.RequireStable = stable
	rg := kmsg.NewOffsetFetchRequestGroup()
	rg.Group = group
	rt := kmsg.NewOffsetFetchRequestGroupTopic()
	rt.Topic, rt.Partitions = topic, []int32{0}
	rg.Topics = append(rg.Topics, rt)
	req.Groups = append(req.Groups, rg)
	resp, err := req.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	g := resp.Groups[0]
	require.NoError(t, kerr.ErrorForCode(g.ErrorCode))
	p := g.Topics[0].Partitions[0]
	return p.Offset, kerr.ErrorForCode(p.ErrorCode)
}

// TestTxnOffsetCommitChecksMembership: TxnOffsetCommit is refused for a
// member fenced by a rebalance (KIP-447), and its offsets are unstable
// for RequireStable fetches until the transaction ends.
func TestTxnOffsetCommitChecksMembership(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "in", 1)
	id, group := "etl", "g"
	instance := kmsg.StringPtr("static-1")
	member, gen := joinGroup(t, cl, group, instance)
	pid, epoch := initTxn(t, cl, id)

	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = id, pid, epoch, group
	aresp, err := add.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	require.NoError(t, kerr.ErrorForCode(aresp.ErrorCode), "AddOffsetsToTxn")

	for _, tc := range []struct {
		name       string
		member     string
		instance   *string
		generation int32
		want       error
	}{
		{"stale generation", member, instance, gen - 1, kerr.IllegalGeneration},
		{"unknown member", "someone", nil, gen, kerr.UnknownMemberID},
		{"replaced static member", "someone", instance, gen, kerr.FencedInstanceID},
	} {
		require.ErrorIs(t, txnCommit(t, cl, id, pid, epoch, group, tc.member, tc.instance, tc.generation, "in", 5), tc.want, tc.name)
	}
	require.ErrorIs(t, txnCommit(t, cl, id, pid, epoch, group, member, instance, gen, "missing", 5), kerr.UnknownTopicOrPartition)
	require.ErrorIs(t, txnCommit(t, cl, id, pid+1, epoch, group, member, instance, gen, "in", 5), kerr.ProducerFenced, "another producer")

	off, err := fetchStable(t, cl, group, "in", true)
	require.NoError(t, err, "nothing pending yet")
	require.Equal(t, int64(-1), off)

	require.NoError(t, txnCommit(t, cl, id, pid, epoch, group, member, instance, gen, "in", 5))
	_, err = fetchStable(t, cl, group, "in", true)
	require.ErrorIs(t, err, kerr.UnstableOffsetCommit, "pending in an open transaction")
	off, err = fetchStable(t, cl, group, "in", false)
	require.NoError(t, err)
	require.Equal(t, int64(-1), off, "not committed before the transaction")

	// Clients before KIP-447 send no membership: not checked.
	require.NoError(t, txnCommit(t, cl, id, pid, epoch, group, "", nil, -1, "in", 6))
}

// TestTxnOffsetsCommitWithTransaction: offsets committed in a transaction
// reach the group when it commits, and not when it aborts. Needs the
// coordinator's markers.
func TestTxnOffsetsCommitWithTransaction(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "in", 1)
	id, group := "etl", "g"
	member, gen := joinGroup(t, cl, group, nil)
	pid, epoch := initTxn(t, cl, id)
	for i, commit := range []bool{false, true} {
		add := kmsg.NewPtrAddOffsetsToTxnRequest()
		add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = id, pid, epoch, group
		ctx := testCtx(t)
		for {
			aresp, err := add.RequestWith(ctx, cl)
			require.NoError(t, err)
			if aresp.ErrorCode != kerr.ConcurrentTransactions.Code {
				require.NoError(t, kerr.ErrorForCode(aresp.ErrorCode), "AddOffsetsToTxn")
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		require.NoError(t, txnCommit(t, cl, id, pid, epoch, group, member, nil, gen, "in", int64(10+i)))
		require.NoError(t, endTxn(t, cl, id, pid, epoch, commit))
		var off int64
		var err error
		for {
			off, err = fetchStable(t, cl, group, "in", true)
			if !errors.Is(err, kerr.UnstableOffsetCommit) || ctx.Err() != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		require.NoError(t, err)
		if commit {
			require.Equal(t, int64(11), off, "committed with the transaction")
		} else {
			require.Equal(t, int64(-1), off, "dropped with the transaction")
		}
	}
}

// txnProducer is a franz-go transactional producer of topic.
func txnProducer(t *testing.T, srv *replogkafka.Server, id, topic string) *kgo.Client {
	return newClient(t, srv, kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic),
		kgo.TransactionTimeout(time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
}

// produceInTxn produces values to partition 0 in one transaction of cl,
// committed or aborted.
func produceInTxn(t *testing.T, cl *kgo.Client, commit bool, values ...string) {
	t.Helper()
	ctx := testCtx(t)
	require.NoError(t, cl.BeginTransaction())
	for _, v := range values {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr())
	}
	require.NoError(t, cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
}

// consumeValues reads n records of topic from the start with a new
// client at the isolation level.
func consumeValues(t *testing.T, srv *replogkafka.Server, topic string, committed bool, n int) []string {
	t.Helper()
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	cl := newClient(t, srv, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(iso),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	var vs []string
	for _, r := range consumeN(t, cl, n) {
		vs = append(vs, string(r.Value))
	}
	// Nothing more comes.
	ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel()
	fs := cl.PollFetches(ctx)
	for _, r := range fs.Records() {
		vs = append(vs, string(r.Value))
	}
	return vs
}

// TestTxnCommitAndAbort: a committed transaction's records are seen by
// read_committed consumers, an aborted one's are not, though
// read_uncommitted consumers see both. Needs the coordinator's markers.
func TestTxnCommitAndAbort(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "tx", 1)
	p := txnProducer(t, srv, "commit-abort", "tx")
	produceInTxn(t, p, true, "c1", "c2")
	produceInTxn(t, p, false, "a1", "a2")
	produceInTxn(t, p, true, "c3")

	require.Equal(t, []string{"c1", "c2", "c3"}, consumeValues(t, srv, "tx", true, 3))
	require.Equal(t, []string{"c1", "c2", "a1", "a2", "c3"}, consumeValues(t, srv, "tx", false, 5))

	f := fetchIsolated(t, cl, "tx", 1)
	require.Equal(t, f.HighWatermark, f.LastStableOffset, "no transaction open")
	require.Len(t, f.AbortedTransactions, 1)
	require.Equal(t, int64(3), f.AbortedTransactions[0].FirstOffset, "a1 after c1, c2 and a marker")
	_, control := batchValues(t, f.RecordBatches)
	require.Equal(t, 3, control, "a marker per transaction")
}

// TestTxnZombieFenced: a second producer with the same transactional id
// fences the first, whose open transaction is aborted; its later produce
// and EndTxn fail. Needs the coordinator's markers.
func TestTxnZombieFenced(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "z", 1)
	ctx := testCtx(t)
	zombie := txnProducer(t, srv, "fenced", "z")
	require.NoError(t, zombie.BeginTransaction())
	require.NoError(t, zombie.ProduceSync(ctx, &kgo.Record{Value: []byte("zombie")}).FirstErr())

	successor := txnProducer(t, srv, "fenced", "z")
	produceInTxn(t, successor, true, "successor")

	err := zombie.ProduceSync(ctx, &kgo.Record{Value: []byte("late")}).FirstErr()
	require.True(t, errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.ProducerFenced), "zombie's produce: %v", err)
	// franz-go does not attempt the commit of a transaction whose
	// produce failed; its abort recovers the producer (KIP-360), at
	// once or with its next transaction, which the coordinator refuses:
	// the epoch it names is not the id's.
	require.Error(t, zombie.EndTransaction(ctx, kgo.TryCommit), "zombie's commit")
	err = zombie.EndTransaction(ctx, kgo.TryAbort)
	if err == nil {
		err = zombie.BeginTransaction()
	}
	if err == nil {
		err = zombie.ProduceSync(ctx, &kgo.Record{Value: []byte("zombie again")}).FirstErr()
	}
	require.True(t, errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.ProducerFenced), "zombie's recovery: %v", err)

	// The successor was not fenced by the zombie's attempts.
	produceInTxn(t, successor, true, "successor 2")
	require.Equal(t, []string{"successor", "successor 2"}, consumeValues(t, srv, "z", true, 2))
}

// TestGroupTransactSession: consume-transform-produce with franz-go's
// GroupTransactSession: every input record reaches the output once,
// and the group's offsets are committed with the transactions. Needs the
// coordinator's markers.
func TestGroupTransactSession(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	ctx := testCtx(t)
	createTopic(t, cl, "in", 2)
	createTopic(t, cl, "out", 1)
	const n = 200
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: "in", Partition: int32(i % 2), Value: fmt.Appendf(nil, "%03d", i)})
	}
	in := newClient(t, srv, manualPartitioner())
	require.NoError(t, in.ProduceSync(ctx, recs...).FirstErr())

	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(srv.Addr().String()),
		kgo.TransactionalID("etl-session"), kgo.TransactionTimeout(time.Minute),
		kgo.ConsumerGroup("etl"), kgo.ConsumeTopics("in"), kgo.DefaultProduceTopic("out"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer sess.Close()
	done := 0
	for done < n {
		require.NoError(t, ctx.Err(), "transformed %d of %d", done, n)
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := sess.PollFetches(pctx)
		cancel()
		if fs.Empty() {
			continue
		}
		require.NoError(t, sess.Begin())
		got := 0
		fs.EachRecord(func(r *kgo.Record) {
			sess.Produce(ctx, &kgo.Record{Value: append([]byte("out-"), r.Value...)}, nil)
			got++
		})
		committed, err := sess.End(ctx, kgo.TryCommit)
		require.NoError(t, err)
		if committed {
			done += got
		}
	}
	vs := consumeValues(t, srv, "out", true, n)
	slices.Sort(vs)
	require.Len(t, vs, n)
	for i, v := range vs {
		require.Equal(t, fmt.Sprintf("out-%03d", i), v)
	}
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, "etl")
	require.NoError(t, err)
	for p := range int32(2) {
		o, _ := offs.Lookup("in", p)
		require.Equal(t, int64(n/2), o.At, "partition %d", p)
	}
}

// rawRequest sends req on a connection of its own to srv, not through a
// client, which may follow the cluster's metadata to another listener of
// the node, and decodes the response into resp.
func rawRequest(t *testing.T, srv *replogkafka.Server, req kmsg.Request, resp kmsg.Response) {
	t.Helper()
	c := dial(t, srv)
	c.Write(frame(req, 1))
	_, body := readResponse(t, c)
	if req.IsFlexible() {
		body = body[1:] // the header's tags
	}
	resp.SetVersion(req.GetVersion())
	require.NoError(t, resp.ReadFrom(body))
}

// rawProduce produces batch to partition 0 of topic through srv only.
func rawProduce(t *testing.T, srv *replogkafka.Server, txnID *string, topic string, batch []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis, req.TransactionID = 9, -1, 10000, txnID
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := kmsg.NewPtrProduceResponse()
	rawRequest(t, srv, req, resp)
	return resp.Topics[0].Partitions[0]
}

// TestTxnStaleViewRetried: a listener whose view of a transactional id
// names a transaction that ended (it learned of the next one through
// another listener) proposes the next transaction's batch under the old
// serial; the partition refuses it, and the listener reads the
// coordinator again and stores the batch in the right transaction.
func TestTxnStaleViewRetried(t *testing.T) {
	l := openLog(t)
	coord, other := listen(t, l, nil), listen(t, l, nil)
	cl := newClient(t, coord)
	createTopic(t, cl, "s", 1)
	id := "stale"
	pid, epoch := initTxn(t, cl, id)

	// The coordinator's requests go to coord only.
	add := func() {
		resp := kmsg.NewPtrAddPartitionsToTxnResponse()
		rawRequest(t, coord, addPartitionReq(id, pid, epoch, "s"), resp)
		require.Zero(t, resp.Topics[0].Partitions[0].ErrorCode)
	}
	commit := func() {
		resp := kmsg.NewPtrEndTxnResponse()
		rawRequest(t, coord, endTxnReq(id, pid, epoch, true), resp)
		require.Zero(t, resp.ErrorCode)
	}
	add()
	p := rawProduce(t, other, &id, "s", txnBatch(pid, epoch, 0, "first"))
	require.Zero(t, p.ErrorCode, "%v", kerr.ErrorForCode(p.ErrorCode))
	commit()

	add()
	p = rawProduce(t, other, &id, "s", txnBatch(pid, epoch, 1, "second"))
	require.Zero(t, p.ErrorCode, "through the stale view: %v", kerr.ErrorForCode(p.ErrorCode))
	commit()

	// A late copy of the first transaction's batch, with a sequence
	// past the last, names no open transaction: refused.
	p = rawProduce(t, other, &id, "s", txnBatch(pid, epoch, 2, "late"))
	require.ErrorIs(t, kerr.ErrorForCode(p.ErrorCode), kerr.InvalidTxnState)
	require.Equal(t, []string{"first", "second"}, consumeValues(t, coord, "s", true, 2))
}

// TestClusterTransactions: transactions over a 3-node cluster, whose
// partitions' leaders and coordinator may be three different nodes, and
// through a crash of the coordinator with a transaction open: its
// successor (the producer restarted elsewhere) aborts it and goes on, and
// a read_committed consumer reads the committed records once and the
// aborted ones never.
//
// The producer that saw the coordinator crash is replaced, not kept:
// franz-go v1.22.3 sends AddPartitionsToTxn to its cached coordinator
// until the broker leaves the cluster's metadata, and replog lists a
// crashed node until it is removed (see the package doc's Clusters).
func TestClusterTransactions(t *testing.T) {
	kc := newKafkaCluster(t, 3)
	kc.createTopic("tx")
	ctx := testCtx(t)
	producer := func(seeds ...string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.TransactionalID("cluster"), kgo.DefaultProduceTopic("tx"),
			kgo.TransactionTimeout(time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		return cl
	}
	produce := func(p *kgo.Client, values ...string) {
		t.Helper()
		require.NoError(t, p.BeginTransaction())
		for i, v := range values {
			require.NoError(t, p.ProduceSync(ctx, &kgo.Record{Partition: int32(i % 2), Value: []byte(v)}).FirstErr())
		}
	}
	end := func(p *kgo.Client, commit bool) {
		t.Helper()
		require.NoError(t, p.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
	}
	p := producer(kc.addrs...)
	produce(p, "c1", "c2")
	end(p, true)
	produce(p, "a1", "a2")
	end(p, false)
	produce(p, "a3", "a4") // left open by the crash

	var coordinator int32
	kc.eventually(func() bool {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.Version, req.CoordinatorKey, req.CoordinatorType = 2, "cluster", 1
		resp := kmsg.NewPtrFindCoordinatorResponse()
		kc.request(0, req, resp)
		coordinator = resp.NodeID
		return resp.ErrorCode == 0
	}, "a transaction coordinator")
	dead := int(coordinator) - 1
	kc.crash(dead)
	var live []string
	for i, a := range kc.addrs {
		if i != dead {
			live = append(live, a)
		}
	}
	p.Close()
	p = producer(live...)
	produce(p, "c3", "c4")
	end(p, true)
	kc.restart(dead)
	produce(p, "a5")
	end(p, false)
	produce(p, "c5")
	end(p, true)

	c, err := kgo.NewClient(kgo.SeedBrokers(kc.addrs...), kgo.ConsumeTopics("tx"), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	var got []string
	for _, r := range consumeN(t, c, 5) {
		got = append(got, string(r.Value))
	}
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	for _, r := range c.PollFetches(pctx).Records() {
		got = append(got, string(r.Value))
	}
	slices.Sort(got)
	require.Equal(t, []string{"c1", "c2", "c3", "c4", "c5"}, got)
}

// rawOffsetFetch fetches group's offsets of partitions of topic with
// RequireStable, on a connection of its own to srv, and returns each
// partition's error.
func rawOffsetFetch(t *testing.T, srv *replogkafka.Server, group, topic string, partitions ...int32) []error {
	t.Helper()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Version, req.RequireStable = 8, true
	rg := kmsg.NewOffsetFetchRequestGroup()
	rg.Group = group
	rt := kmsg.NewOffsetFetchRequestGroupTopic()
	rt.Topic, rt.Partitions = topic, partitions
	rg.Topics = append(rg.Topics, rt)
	req.Groups = append(req.Groups, rg)
	resp := kmsg.NewPtrOffsetFetchResponse()
	rawRequest(t, srv, req, resp)
	require.Zero(t, resp.Groups[0].ErrorCode)
	var errs []error
	for _, p := range resp.Groups[0].Topics[0].Partitions {
		errs = append(errs, kerr.ErrorForCode(p.ErrorCode))
	}
	return errs
}

// TestTxnUnstableOffsetsUnseen: a listener that did not see the
// TxnOffsetCommit of a transaction with offsets pending (it came through
// the group's previous coordinator) names the partition unstable as the
// one that saw it does: the transaction coordinator tells them which.
func TestTxnUnstableOffsetsUnseen(t *testing.T) {
	l := openLog(t)
	seen, unseen := listen(t, l, nil), listen(t, l, nil)
	cl := newClient(t, seen)
	createTopic(t, cl, "in", 2)
	id, group := "unseen", "g"
	member, gen := joinGroup(t, cl, group, nil)
	pid, epoch := initTxn(t, cl, id)
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = id, pid, epoch, group
	aresp, err := add.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	require.NoError(t, kerr.ErrorForCode(aresp.ErrorCode))

	require.Equal(t, []error{nil, nil}, rawOffsetFetch(t, unseen, group, "in", 0, 1), "nothing pending")
	cresp := kmsg.NewPtrTxnOffsetCommitResponse()
	rawRequest(t, seen, txnCommitReq(id, pid, epoch, group, member, nil, gen, "in", 3), cresp)
	require.Zero(t, cresp.Topics[0].Partitions[0].ErrorCode)
	require.Equal(t, []error{kerr.UnstableOffsetCommit, nil}, rawOffsetFetch(t, seen, group, "in", 0, 1))
	require.Equal(t, []error{kerr.UnstableOffsetCommit, nil}, rawOffsetFetch(t, unseen, group, "in", 0, 1))

	require.NoError(t, endTxn(t, cl, id, pid, epoch, true))
	require.Equal(t, []error{nil, nil}, rawOffsetFetch(t, unseen, group, "in", 0, 1), "after the transaction")
}

// TestTxnOffsetCommitReplogGroup: a transaction may not commit offsets
// to a group of replog consumers: the name is theirs, and their offsets
// mean one topic's. The commit is refused as a plain OffsetCommit is.
func TestTxnOffsetCommitReplogGroup(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "in", 1)
	tp, err := l.Topic("in")
	require.NoError(t, err)
	c, err := replog.NewConsumer(tp, replog.String(), &replog.ConsumerOptions{Group: "replog-group"})
	require.NoError(t, err)
	defer c.Close()
	pctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	_, _ = c.Poll(pctx) // joins
	cancel()

	id := "to-replog-group"
	pid, epoch := initTxn(t, cl, id)
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = id, pid, epoch, "replog-group"
	aresp, err := add.RequestWith(testCtx(t), cl)
	require.NoError(t, err)
	require.NoError(t, kerr.ErrorForCode(aresp.ErrorCode))
	cresp := kmsg.NewPtrTxnOffsetCommitResponse()
	rawRequest(t, srv, txnCommitReq(id, pid, epoch, "replog-group", "", nil, -1, "in", 3), cresp)
	require.Equal(t, kerr.InconsistentGroupProtocol, kerr.ErrorForCode(cresp.Topics[0].Partitions[0].ErrorCode))
}
