package replogkafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/kafkabridge"
	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// producing is one partition of a Produce request on its way through Raft.
type producing struct {
	resp           *kmsg.ProduceResponseTopicPartition
	topic          *replog.Topic
	rp             *replication.Partition
	prop           *replication.Proposal
	records, bytes int // for the Log's counters
	// cmd and txn, for a transactional batch: proposed again when its
	// transaction's view was stale (see txn_produce.go).
	cmd []byte
	txn *txnBatch
}

// produce proposes every partition's batch at once, in request order (so
// an idempotent client's batches reach the partition in sequence order),
// and replies once each is committed and applied, or failed, or the
// request's timeout passed.
//
// A client's batch is stored under the client's own producer id, epoch and
// sequence number: the partition's state machine applies Kafka's rules for
// idempotent producers (consecutive sequences per epoch, a retried batch
// answered with its first offset), so a retry after a timeout or a leader
// change is stored once. acks=1 is answered as acks=-1 is: replog
// acknowledges what a quorum stored, never less.
func (s *Server) produce(ctx context.Context, req *kmsg.ProduceRequest) reply {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	var work []producing
	for _, rt := range req.Topics {
		t := kmsg.NewProduceResponseTopic()
		t.Topic = rt.Topic
		topic, terr := s.l.Topic(rt.Topic)
		for _, rp := range rt.Partitions {
			p := kmsg.NewProduceResponseTopicPartition()
			p.Partition = rp.Partition
			t.Partitions = append(t.Partitions, p)
		}
		for i, rp := range rt.Partitions {
			p := &t.Partitions[i]
			err := terr
			var w producing
			if err == nil {
				w, err = s.startProduce(ctx, topic, rp.Partition, rp.Records, req.TransactionID)
			}
			if err != nil {
				if topic != nil {
					kafkabridge.Produced(topic, int(rp.Partition), 0, 0, err)
				}
				s.fail(p, req.Version, err)
				continue
			}
			w.resp = p
			work = append(work, w)
		}
		resp.Topics = append(resp.Topics, t)
	}
	if req.Acks == 0 {
		// No response, as Kafka: the client learns nothing more. The
		// batches count as produced once proposed, as with
		// replog.AcksNone.
		for _, w := range work {
			kafkabridge.Produced(w.topic, int(w.resp.Partition), w.records, w.bytes, nil)
		}
		return func(context.Context) kmsg.Response { return nil }
	}
	timeout := time.Duration(max(req.TimeoutMillis, 0)) * time.Millisecond
	return func(ctx context.Context) kmsg.Response {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		for _, w := range work {
			res, err := waitProposal(ctx, w.prop)
			if err == nil && w.txn != nil && res.Status == storage.StatusTxnInvalid {
				res, err = s.retryTxn(ctx, &w)
			}
			if err == nil {
				err = resultErr(res)
			}
			if err != nil {
				kafkabridge.Produced(w.topic, int(w.resp.Partition), 0, 0, err)
				s.fail(w.resp, req.Version, err)
				continue
			}
			if res.Status == storage.StatusOK { // a retry's duplicate was counted the first time
				kafkabridge.Produced(w.topic, int(w.resp.Partition), w.records, w.bytes, nil)
			}
			w.resp.BaseOffset = res.BaseOffset
			w.resp.LogStartOffset = w.rp.LogStart()
		}
		return resp
	}
}

// fail sets a partition's error in a Produce response.
func (s *Server) fail(p *kmsg.ProduceResponseTopicPartition, version int16, err error) {
	switch {
	case errors.Is(err, errInvalidRecord):
		p.ErrorCode = kerr.InvalidRecord.Code
	case errors.Is(err, errCorruptBatch):
		p.ErrorCode = kerr.CorruptMessage.Code
	case errors.Is(err, errFenced):
		p.ErrorCode = kerr.InvalidProducerEpoch.Code
	case errors.Is(err, errTxnState):
		p.ErrorCode = kerr.InvalidTxnState.Code
	case errors.Is(err, errTxnUnknown):
		p.ErrorCode = kerr.InvalidProducerIDMapping.Code
	case errors.Is(err, errTxnAuth):
		p.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
	case errors.Is(err, errTxnCoordinator):
		p.ErrorCode = kerr.NotEnoughReplicas.Code
	default:
		p.ErrorCode = errorCode(err)
	}
	if version >= 8 {
		p.ErrorMessage = errorMessage(err)
	}
}

// errFenced: the batch carries an older producer epoch than one the
// partition has seen.
var errFenced = errors.New("replogkafka: fenced producer epoch")

// resultErr turns the state machine's verdict on a batch into an error.
func resultErr(res storage.Result) error {
	switch res.Status {
	case storage.StatusOK, storage.StatusDuplicate:
		return nil
	case storage.StatusOutOfOrder:
		return fmt.Errorf("%w: %s", replog.ErrOutOfOrderSequence, res.Status)
	case storage.StatusFenced:
		return errFenced
	case storage.StatusTxnInvalid:
		return fmt.Errorf("%w: the partition refused the batch (%s)", errTxnState, res.Status)
	case storage.StatusInvalid:
		return fmt.Errorf("%w: the partition refused the batch (%s)", errInvalidRecord, res.Status)
	}
	return fmt.Errorf("%w: the partition refused the batch (%s)", errCorruptBatch, res.Status)
}

// startProduce checks a partition's batch and proposes it as it came,
// under the client's producer id, epoch and sequence (see checkProduced).
// The client's codec is kept: a topic's Compression is what replog's own
// producers use, as Kafka's compression.type=producer. With a
// transactional id (txnID not nil) the batch must be transactional and
// part of the id's ongoing transaction (see txn_produce.go).
func (s *Server) startProduce(ctx context.Context, topic *replog.Topic, part int32, raw []byte, txnID *string) (producing, error) {
	info := topic.Info()
	// raw is one batch: its size is what Kafka compares, before
	// decompressing anything.
	if len(raw) > info.MaxMessageBytes {
		return producing{}, fmt.Errorf("%w: a record batch of %d bytes, the topic's max.message.bytes is %d", replog.ErrRecordTooLarge, len(raw), info.MaxMessageBytes)
	}
	pb, err := checkProduced(raw, time.Now(), txnID != nil)
	if err != nil {
		return producing{}, err
	}
	if pb.stats.Keyless > 0 && info.Cleanup&replog.CleanupCompact != 0 {
		return producing{}, fmt.Errorf("%w: %d records have no key, and the topic is compacted", errInvalidRecord, pb.stats.Keyless)
	}
	cmd := pb.cmd

	attempt := s.node.AttemptTimeout()
	pctx, cancel := context.WithTimeout(ctx, attempt)
	defer cancel()
	rp, err := kafkabridge.Partition(pctx, topic, int(part))
	if err != nil {
		return producing{}, err
	}
	if err := rp.Err(); err != nil {
		return producing{}, kafkabridge.MapErr(err)
	}
	if err := s.checkLeader(topic.Name(), part, rp); err != nil {
		// Not proposed through this node's replica, which Raft would
		// forward: the client is sent to the leader, whose answers it
		// can match to its requests.
		return producing{}, err
	}
	w := producing{topic: topic, rp: rp, records: pb.stats.Records, bytes: pb.stats.PayloadBytes}
	if txnID != nil {
		w.cmd = cmd
		w.txn = &txnBatch{id: *txnID, topic: topic.Name(), part: int(part),
			producer: replication.TxnProducer{ProducerID: pb.header.ProducerID, Epoch: int16(pb.header.ProducerEpoch)}}
		if w.txn.serial, err = s.verifyTxn(ctx, w.txn, false); err != nil {
			return producing{}, err
		}
		storage.PutTxnAppendHeader(cmd, w.txn.serial)
	}
	if w.prop, err = rp.ProposeAsync(cmd, attempt); err != nil {
		return producing{}, kafkabridge.MapErr(err)
	}
	return w, nil
}

// retryTxn proposes a transactional batch again after its partition
// refused it as not part of its producer's current transaction there:
// the view it was checked against may have been stale. The batch is
// checked against the coordinator's current view and, if it belongs to
// another transaction than the one it was proposed in, proposed in that
// one and waited for; else it is refused with INVALID_TXN_STATE.
func (s *Server) retryTxn(ctx context.Context, w *producing) (storage.Result, error) {
	serial, err := s.verifyTxn(ctx, w.txn, true)
	if err != nil {
		return storage.Result{}, err
	}
	if serial == w.txn.serial {
		return storage.Result{}, fmt.Errorf("%w: the partition ended the transaction", errTxnState)
	}
	w.txn.serial = serial
	storage.PutTxnAppendHeader(w.cmd, serial)
	if err := s.checkLeader(w.topic.Name(), w.resp.Partition, w.rp); err != nil {
		return storage.Result{}, err
	}
	pr, err := w.rp.ProposeAsync(w.cmd, s.node.AttemptTimeout())
	if err != nil {
		return storage.Result{}, kafkabridge.MapErr(err)
	}
	w.prop = pr
	res, err := waitProposal(ctx, pr)
	if err == nil && res.Status == storage.StatusTxnInvalid {
		err = fmt.Errorf("%w: the partition ended the transaction", errTxnState)
	}
	return res, err
}

// payloadBytes is what replog's counters count of a record: its key, value
// and headers.
func payloadBytes(r *storage.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// waitProposal waits for a proposal's outcome. A proposal whose partition
// changed leader may never be answered: the client is told to retry
// (NOT_LEADER_OR_FOLLOWER), which an idempotent client does safely.
func waitProposal(ctx context.Context, pr *replication.Proposal) (storage.Result, error) {
	for {
		select {
		case r := <-pr.Done():
			res, err := pr.Result(r)
			return res, kafkabridge.MapErr(err)
		case <-pr.LeaderChanged():
			if pr.LeaderMoved() {
				return storage.Result{}, fmt.Errorf("%w: the partition's leader changed", replog.ErrUnavailable)
			}
		case <-ctx.Done():
			return storage.Result{}, ctx.Err()
		}
	}
}

// initProducerID issues an idempotent producer id from replog's own
// counter (the one its Go producers use), epoch 0. A client that asks to
// bump its epoch (KIP-360, after an error) gets the next one. With a
// transactional id, the transaction coordinator answers (see
// initTxnProducerID).
func (s *Server) initProducerID(ctx context.Context, req *kmsg.InitProducerIDRequest) kmsg.Response {
	if req.TransactionalID != nil {
		return s.initTxnProducerID(ctx, req)
	}
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	switch {
	case req.ProducerID >= 0 && req.ProducerEpoch >= 0 && req.ProducerEpoch < math.MaxInt16-1:
		resp.ProducerID, resp.ProducerEpoch = req.ProducerID, req.ProducerEpoch+1
	default:
		ctx, cancel := requestCtx(ctx, 0)
		defer cancel()
		id, err := s.node.AllocProducerID(ctx)
		switch err = kafkabridge.MapErr(err); {
		case err == nil && id <= math.MaxInt64:
			resp.ProducerID, resp.ProducerEpoch = int64(id), 0
		case err == nil:
			resp.ErrorCode = kerr.UnknownServerError.Code
		case errors.Is(err, replog.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded):
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code // retriable
		default:
			resp.ErrorCode = errorCode(err)
		}
	}
	return resp
}
