package replogkafka

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog/replication"
)

// Kafka transactions (KIP-98, KIP-447) over replog's transaction
// coordinator (replication's own Raft group, see replication.TxnShardID).
//
// The coordinator keeps each transactional id's producer id, epoch and
// transaction; the listener translates the coordinator's requests to it
// and back (this file), checks transactional batches against it before
// proposing them (txn_produce.go), checks KIP-447 group membership for
// transactional offset commits and keeps them from read-committed offset
// fetches until their transaction ends (txn_offsets.go), and serves
// read-committed fetches up to the last stable offset (fetch.go).
//
// Every node answers the coordinator's requests: each is a proposal to the
// coordinator's Raft group, which forwards it to its leader.
// FindCoordinator names the group coordinator for transactions too, so
// that a client's TxnOffsetCommit (checked against the group's membership,
// held in that node's memory) and the rest of its transaction meet one
// node.
//
// replog does not do KIP-890 part 2: ApiVersions stops EndTxn at v4,
// TxnOffsetCommit at v4 and AddPartitionsToTxn at v3, and advertises no
// transaction.version feature, so that clients add partitions and groups
// explicitly and keep their epoch across transactions.

// txnAPIs are the transaction coordinator's APIs. AddPartitionsToTxn v4+
// is broker to broker; EndTxn v5, TxnOffsetCommit v5 and AddOffsetsToTxn
// v4 are KIP-890 part 2's.
func txnAPIs() []servedAPI {
	return []servedAPI{
		{kmsg.AddPartitionsToTxn.Int16(), versionRange{0, 3}},
		{kmsg.AddOffsetsToTxn.Int16(), versionRange{0, 3}},
		{kmsg.EndTxn.Int16(), versionRange{0, 4}},
		{kmsg.TxnOffsetCommit.Int16(), versionRange{0, 4}},
	}
}

// handleTxn starts a transaction coordinator request; ok is false for
// other APIs. Each runs in the connection's writer, in request order.
func (s *Server) handleTxn(req kmsg.Request) (reply, bool) {
	switch req := req.(type) {
	case *kmsg.AddPartitionsToTxnRequest:
		return func(ctx context.Context) kmsg.Response { return s.addPartitionsToTxn(ctx, req) }, true
	case *kmsg.AddOffsetsToTxnRequest:
		return func(ctx context.Context) kmsg.Response { return s.addOffsetsToTxn(ctx, req) }, true
	case *kmsg.EndTxnRequest:
		return func(ctx context.Context) kmsg.Response { return s.endTxn(ctx, req) }, true
	case *kmsg.TxnOffsetCommitRequest:
		return func(ctx context.Context) kmsg.Response { return s.txnOffsetCommit(ctx, req) }, true
	}
	return nil, false
}

// txnCtx bounds a request to the transaction coordinator.
func (s *Server) txnCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.node.AttemptTimeout())
}

// txnErrorCode maps an error of the transaction coordinator to a Kafka
// code. fencedCode is what the request's version answers for a fenced
// producer: PRODUCER_FENCED from the versions of KIP-588, else
// INVALID_PRODUCER_EPOCH. An unavailable or slow coordinator is
// COORDINATOR_NOT_AVAILABLE, which clients retry after looking the
// coordinator up again; every coordinator request is safe to repeat.
func txnErrorCode(err error, fencedCode int16) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, replication.ErrFenced):
		return fencedCode
	case errors.Is(err, replication.ErrConcurrentTransactions):
		return kerr.ConcurrentTransactions.Code
	case errors.Is(err, replication.ErrInvalidTxnState):
		return kerr.InvalidTxnState.Code
	case errors.Is(err, replication.ErrUnknownTransactionalID):
		return kerr.InvalidProducerIDMapping.Code
	case errors.Is(err, replication.ErrInvalidTxnTimeout):
		return kerr.InvalidTransactionTimeout.Code
	case errors.Is(err, replication.ErrTxnTooLarge), errors.Is(err, replication.ErrInvalid):
		return kerr.InvalidRequest.Code
	}
	return kerr.CoordinatorNotAvailable.Code
}

// fencedCode is the code of a fenced producer in a coordinator response of
// version v: PRODUCER_FENCED from version from on (KIP-588), before it
// INVALID_PRODUCER_EPOCH, which older clients know.
func fencedCode(v, from int16) int16 {
	if v >= from {
		return kerr.ProducerFenced.Code
	}
	return kerr.InvalidProducerEpoch.Code
}

// txnProducer checks a request's producer id and epoch; a zero code means
// p holds them.
func txnProducer(id int64, epoch int16, fenced int16) (p replication.TxnProducer, code int16) {
	switch {
	case id <= 0:
		return p, kerr.InvalidProducerIDMapping.Code
	case epoch < 0:
		return p, fenced
	}
	return replication.TxnProducer{ProducerID: uint64(id), Epoch: epoch}, 0
}

// initTxnProducerID is InitProducerId with a transactional id: a new
// producer id, or the id's epoch bumped, which fences its previous
// producer and aborts a transaction it left open (the client retries on
// CONCURRENT_TRANSACTIONS until the abort is written).
//
// A client recovering from an error (KIP-360) names its current producer
// id and epoch: they must be the transactional id's current ones, or the
// epoch before them if the id's last transaction was aborted (the
// coordinator bumps the epoch when it aborts a transaction that timed
// out); others are PRODUCER_FENCED, so that a zombie cannot fence its
// successor by asking again. Kafka remembers the epoch its coordinator
// fenced; replog's coordinator does not, so a zombie one epoch behind
// still passes after its successor aborted a transaction. The check
// reads the coordinator before the InitProducerID proposal, which is not
// atomic with it: a zombie racing its successor's own InitProducerID
// still fences it, as a fresh InitProducerID would.
func (s *Server) initTxnProducerID(ctx context.Context, req *kmsg.InitProducerIDRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	fenced := fencedCode(req.Version, 4)
	id := *req.TransactionalID
	if req.TransactionTimeoutMillis <= 0 {
		resp.ErrorCode = kerr.InvalidTransactionTimeout.Code
		return resp
	}
	timeout := time.Duration(req.TransactionTimeoutMillis) * time.Millisecond
	cctx, cancel := s.txnCtx(ctx)
	defer cancel()
	if req.Version >= 3 && req.ProducerID >= 0 {
		t, err := s.node.Transaction(cctx, id)
		switch {
		case errors.Is(err, replication.ErrUnknownTransactionalID):
			resp.ErrorCode = kerr.InvalidProducerIDMapping.Code
			return resp
		case err != nil:
			resp.ErrorCode = txnErrorCode(err, fenced)
			return resp
		case uint64(req.ProducerID) != t.ProducerID || req.ProducerEpoch != t.Epoch && !(req.ProducerEpoch == t.Epoch-1 && aborted(t.Status)):
			resp.ErrorCode = fenced
			return resp
		}
	}
	p, err := s.node.InitProducerID(cctx, id, timeout)
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		resp.ErrorCode = txnErrorCode(err, fenced)
	case p.ProducerID > math.MaxInt64:
		resp.ErrorCode = kerr.UnknownServerError.Code
	default:
		resp.ProducerID, resp.ProducerEpoch = int64(p.ProducerID), p.Epoch
	}
	s.txns.forget(id)
	return resp
}

// aborted reports whether a transaction in state st was aborted.
func aborted(st replication.TxnStatus) bool {
	return st == replication.TxnPrepareAbort || st == replication.TxnCompleteAbort
}

// addPartitionsToTxn adds partitions to the producer's transaction, as
// Kafka's coordinator: if any partition is unknown, nothing is added, the
// unknown ones get UNKNOWN_TOPIC_OR_PARTITION and the others
// OPERATION_NOT_ATTEMPTED; else every partition gets the coordinator's
// answer.
func (s *Server) addPartitionsToTxn(ctx context.Context, req *kmsg.AddPartitionsToTxnRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	parts := map[string][]int{}
	unknown := false
	for _, rt := range req.Topics {
		t := kmsg.NewAddPartitionsToTxnResponseTopic()
		t.Topic = rt.Topic
		topic, terr := s.l.Topic(rt.Topic)
		for _, rp := range rt.Partitions {
			p := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			p.Partition = rp
			if terr != nil || rp < 0 || int(rp) >= topic.Partitions() {
				p.ErrorCode = kerr.UnknownTopicOrPartition.Code
				unknown = true
			} else {
				parts[rt.Topic] = append(parts[rt.Topic], int(rp))
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	setAll := func(code int16) {
		for i := range resp.Topics {
			for j := range resp.Topics[i].Partitions {
				if p := &resp.Topics[i].Partitions[j]; p.ErrorCode == 0 {
					p.ErrorCode = code
				}
			}
		}
	}
	fenced := fencedCode(req.Version, 2)
	p, code := txnProducer(req.ProducerID, req.ProducerEpoch, fenced)
	switch {
	case unknown:
		setAll(kerr.OperationNotAttempted.Code)
		return resp
	case code != 0:
		setAll(code)
		return resp
	case len(parts) == 0:
		return resp
	}
	cctx, cancel := s.txnCtx(ctx)
	defer cancel()
	serial, err := s.node.AddTxnPartitions(cctx, req.TransactionalID, p, parts)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		setAll(txnErrorCode(err, fenced))
		if errors.Is(err, replication.ErrFenced) {
			s.txns.forget(req.TransactionalID)
		}
		return resp
	}
	s.txns.added(req.TransactionalID, p, serial, parts)
	return resp
}

// addOffsetsToTxn adds a group to the producer's transaction: its
// TxnOffsetCommit requests come next.
func (s *Server) addOffsetsToTxn(ctx context.Context, req *kmsg.AddOffsetsToTxnRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	fenced := fencedCode(req.Version, 2)
	p, code := txnProducer(req.ProducerID, req.ProducerEpoch, fenced)
	switch {
	case code != 0:
		resp.ErrorCode = code
		return resp
	case req.Group == "":
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	cctx, cancel := s.txnCtx(ctx)
	defer cancel()
	err := s.node.AddTxnOffsets(cctx, req.TransactionalID, p, req.Group)
	if ctx.Err() != nil {
		return nil
	}
	resp.ErrorCode = txnErrorCode(err, fenced)
	return resp
}

// endTxn commits or aborts the producer's transaction. The coordinator
// writes the markers (and commits the offsets) before it answers when it
// can, and otherwise finishes in the background: the next transaction of
// the id waits for it (CONCURRENT_TRANSACTIONS), and read-committed
// readers and offset fetches wait for the markers.
func (s *Server) endTxn(ctx context.Context, req *kmsg.EndTxnRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.EndTxnResponse)
	fenced := fencedCode(req.Version, 2)
	p, code := txnProducer(req.ProducerID, req.ProducerEpoch, fenced)
	if code != 0 {
		resp.ErrorCode = code
		return resp
	}
	cctx, cancel := s.txnCtx(ctx)
	defer cancel()
	err := s.node.EndTxn(cctx, req.TransactionalID, p, req.Commit)
	if ctx.Err() != nil {
		return nil
	}
	// Whatever the answer, the transaction this listener knew is over
	// or unknown: its produce checks read the coordinator again.
	s.txns.forget(req.TransactionalID)
	resp.ErrorCode = txnErrorCode(err, fenced)
	return resp
}

// txnOffsetCommit records offsets that commit with the producer's
// transaction, after the KIP-447 check of the consumer's membership
// against the group held here (see coordinator.txnCommitAllowed): a
// consumer fenced by a rebalance cannot commit the offsets of partitions
// it lost. The check is Kafka's, made when the offsets arrive, not when
// the transaction commits. Like OffsetCommit, it is answered by the group
// coordinator only.
func (s *Server) txnOffsetCommit(ctx context.Context, req *kmsg.TxnOffsetCommitRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	fenced := fencedCode(req.Version, 2)
	p, code := txnProducer(req.ProducerID, req.ProducerEpoch, fenced)
	generation, member, instance := int32(-1), "", ""
	if req.Version >= 3 {
		generation, member = req.Generation, req.MemberID
		if req.InstanceID != nil {
			instance = *req.InstanceID
		}
	}
	switch {
	case req.Group == "":
		code = kerr.InvalidGroupID.Code
	case code == 0:
		if c := s.coordinatorCode(); c != 0 {
			code = c
		} else {
			code = s.groups.txnCommitAllowed(req.Group, member, req.InstanceID, generation)
		}
	}
	offsets := map[string]map[int]replication.TxnOffset{}
	for _, rt := range req.Topics {
		t := kmsg.NewTxnOffsetCommitResponseTopic()
		t.Topic = rt.Topic
		topic, terr := s.l.Topic(rt.Topic)
		for _, rp := range rt.Partitions {
			p := kmsg.NewTxnOffsetCommitResponseTopicPartition()
			p.Partition = rp.Partition
			switch {
			case code != 0:
				p.ErrorCode = code
			case terr != nil || rp.Partition < 0 || int(rp.Partition) >= topic.Partitions():
				p.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case rp.Metadata != nil && len(*rp.Metadata) > replication.MaxOffsetMetadata:
				p.ErrorCode = kerr.OffsetMetadataTooLarge.Code
			case rp.Offset < 0:
				p.ErrorCode = kerr.OffsetOutOfRange.Code
			default:
				if offsets[rt.Topic] == nil {
					offsets[rt.Topic] = map[int]replication.TxnOffset{}
				}
				o := replication.TxnOffset{Offset: rp.Offset, Generation: generation, Member: member, Instance: instance}
				if rp.Metadata != nil {
					o.Metadata = *rp.Metadata
				}
				offsets[rt.Topic][int(rp.Partition)] = o
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	if len(offsets) == 0 {
		return resp
	}
	cctx, cancel := s.txnCtx(ctx)
	defer cancel()
	var err error
	if !s.groups.formed(req.Group) {
		// Claimed as a Kafka group (JoinGroup did it for a group that
		// formed here), so that the offsets cannot go to replog
		// consumers' group of that name.
		_, err = s.node.ClaimKafkaGroup(cctx, req.Group)
	}
	if err == nil {
		err = s.node.TxnOffsetCommit(cctx, req.TransactionalID, p, req.Group, offsets)
	}
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		code := txnErrorCode(err, fenced)
		if errors.Is(err, replication.ErrGroupKind) {
			code = groupErrorCode(err)
		}
		for i := range resp.Topics {
			for j := range resp.Topics[i].Partitions {
				if rp := &resp.Topics[i].Partitions[j]; rp.ErrorCode == 0 {
					rp.ErrorCode = code
				}
			}
		}
		return resp
	}
	return resp
}
