package replogkafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/replog/replog/replication"
)

// Transactional batches on their way to their partitions.
//
// A Produce request with a transactional id carries transactional
// batches. Before one is proposed, the listener checks it against the
// transaction coordinator: the transactional id's transaction must be
// Ongoing, under the batch's producer id and epoch, with the batch's
// partition added to it. A batch that comes after its transaction ended
// (a late retry, a zombie) is refused there (INVALID_TXN_STATE,
// INVALID_PRODUCER_EPOCH) instead of opening a transaction in the
// partition that no marker would ever end: Kafka's "hanging
// transactions", which KIP-890 part 1 closes the same way.
//
// The coordinator's view is cached per transactional id (txnCache):
// reading it for every batch would put a linearizable read of the
// coordinator in front of each produce. A cached view may be stale; the
// partition makes up for it. The batch is proposed with the serial number
// of the transaction the view names, and the partition's state machine
// refuses a batch whose serial is not that of the producer's current
// transaction in the partition (storage.StatusTxnInvalid: the transaction
// ended there, or it is an older one). On that answer, or when a cached
// view refuses a batch, the view is read again from the coordinator and
// the batch checked, and proposed, once more.
//
// Kafka clients keep one Produce request in flight per broker when
// transactional, so a retried batch is not overtaken by the next one. A
// client with more in flight whose view went stale may see the next batch
// refused as out of order: the same as after any failed batch of an
// idempotent producer.

// txnBatch is a transactional batch's identity for the checks: where it
// goes and whose it is.
type txnBatch struct {
	id       string // transactional id
	topic    string
	part     int
	producer replication.TxnProducer
	serial   uint64 // of the transaction it was proposed in
}

// txnView is what the listener knows of a transactional id's transaction.
type txnView struct {
	producer   replication.TxnProducer
	status     replication.TxnStatus
	serial     uint64
	partitions map[string][]int // sorted
}

// check tells whether b belongs to the transaction the view describes.
func (v *txnView) check(b *txnBatch) error {
	switch {
	case v.producer.ProducerID != b.producer.ProducerID:
		return fmt.Errorf("%w: producer id %d, the transactional id's is %d", errFenced, b.producer.ProducerID, v.producer.ProducerID)
	case v.producer.Epoch != b.producer.Epoch:
		return fmt.Errorf("%w: producer epoch %d, the transactional id's is %d", errFenced, b.producer.Epoch, v.producer.Epoch)
	case v.status != replication.TxnOngoing:
		return fmt.Errorf("%w: the transaction is %s", errTxnState, v.status)
	}
	if _, ok := slices.BinarySearch(v.partitions[b.topic], b.part); !ok {
		return fmt.Errorf("%w: partition %d of %q was not added to the transaction", errTxnState, b.part, b.topic)
	}
	return nil
}

// maxCachedTxns bounds the transactional ids whose view a listener keeps;
// past it, an arbitrary one is forgotten, and read again when needed.
const maxCachedTxns = 10000

// txnCache holds the views of transactional ids. Safe for concurrent use.
type txnCache struct {
	mu    sync.Mutex
	views map[string]*txnView // never modified once stored: replaced
}

func newTxnCache() *txnCache { return &txnCache{views: map[string]*txnView{}} }

func (c *txnCache) get(id string) *txnView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.views[id]
}

// put stores a view of id, replacing the one there.
func (c *txnCache) put(id string, v *txnView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.views[id]; !ok && len(c.views) >= maxCachedTxns {
		for k := range c.views {
			delete(c.views, k)
			break
		}
	}
	c.views[id] = v
}

// forget drops the view of id: its transaction ended, or its producer
// changed.
func (c *txnCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.views, id)
}

// added records that AddPartitionsToTxn added parts to the transaction
// serial of producer p, which is Ongoing: merged into the view if it
// names the same transaction, else the view of a transaction with parts
// only (a batch for another partition reads the coordinator).
func (c *txnCache) added(id string, p replication.TxnProducer, serial uint64, parts map[string][]int) {
	c.mu.Lock()
	old := c.views[id]
	c.mu.Unlock()
	v := &txnView{producer: p, status: replication.TxnOngoing, serial: serial, partitions: map[string][]int{}}
	if old != nil && old.producer == p && old.serial == serial && old.status == replication.TxnOngoing {
		for topic, ps := range old.partitions {
			v.partitions[topic] = ps // shared: never modified
		}
	}
	for topic, ps := range parts {
		all := append(slices.Clone(v.partitions[topic]), ps...)
		slices.Sort(all)
		v.partitions[topic] = slices.Compact(all)
	}
	c.put(id, v)
}

// viewOf is the view of a coordinator's state.
func viewOf(t *replication.TxnState) *txnView {
	return &txnView{producer: t.TxnProducer, status: t.Status, serial: t.Serial, partitions: t.Partitions}
}

// readTxn reads id's transaction from the coordinator into the cache.
func (s *Server) readTxn(ctx context.Context, id string) (*txnView, error) {
	cctx, cancel := s.txnCtx(ctx)
	defer cancel()
	t, err := s.node.Transaction(cctx, id)
	if err != nil {
		if errors.Is(err, replication.ErrUnknownTransactionalID) {
			s.txns.forget(id)
			return nil, fmt.Errorf("%w: %w", errTxnUnknown, err)
		}
		if errors.Is(err, replication.ErrInvalid) {
			return nil, fmt.Errorf("%w: %w", errTxnState, err)
		}
		return nil, fmt.Errorf("%w: %w", errTxnCoordinator, err)
	}
	v := viewOf(t)
	s.txns.put(id, v)
	return v, nil
}

// verifyTxn checks b against the view of its transaction (cached, or read
// from the coordinator when none is, when the cached one refuses b, or
// when fresh is set) and returns the serial of the transaction b belongs
// to.
func (s *Server) verifyTxn(ctx context.Context, b *txnBatch, fresh bool) (uint64, error) {
	v := s.txns.get(b.id)
	if v != nil && !fresh {
		if v.check(b) == nil {
			return v.serial, nil
		}
	}
	v, err := s.readTxn(ctx, b.id)
	if err != nil {
		return 0, err
	}
	if err := v.check(b); err != nil {
		return 0, err
	}
	return v.serial, nil
}

// Errors of transactional produce, besides errFenced.
var (
	// errTxnState: the batch is not part of its producer's ongoing
	// transaction in the partition (INVALID_TXN_STATE), or it is not
	// transactional while the request names a transactional id.
	errTxnState = errors.New("replogkafka: batch not part of an ongoing transaction")
	// errTxnUnknown: the coordinator has no such transactional id
	// (INVALID_PRODUCER_ID_MAPPING).
	errTxnUnknown = errors.New("replogkafka: unknown transactional id")
	// errTxnAuth: a transactional batch in a request without a
	// transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka
	// answers it).
	errTxnAuth = errors.New("replogkafka: transactional batch without a transactional id")
	// errTxnCoordinator: the coordinator could not be asked
	// (NOT_ENOUGH_REPLICAS, retriable, as Kafka answers a produce whose
	// verification could not reach the coordinator).
	errTxnCoordinator = errors.New("replogkafka: transaction coordinator not available")
)
