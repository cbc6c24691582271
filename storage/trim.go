package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Trim and retention: the two commands that delete records from the front
// of a partition. Both are decided by the state machine from the command
// and the stored batches alone (offsets, record times, lengths), so every
// replica deletes the same batches at the same entry.
//
// Only whole batches are deleted. A batch that straddles the new log start
// stays stored; readers skip its records below the log start.

// TrimCommand is the command that moves the log start to offset, as
// Kafka's DeleteRecords does: the batches wholly below it are deleted.
// Applied, it answers StatusOK with BaseOffset the log start then (an
// offset at or below the log start changes nothing), or StatusInvalid
// for an offset beyond the high watermark.
func TrimCommand(offset int64) []byte {
	return binary.LittleEndian.AppendUint64([]byte{CmdTrim}, uint64(offset))
}

// RetainCommand is the command that applies retention limits as of now
// (unix ns, the proposer's clock, carried in the command so that every
// replica decides alike). From the front, batches are deleted while one of
// the limits holds for the oldest: its newest record time is before
// now - age (age > 0), or the partition stores more than maxBytes
// (maxBytes > 0). The newest batch is never deleted, so that the log's
// clock and the next offset stay backed by a stored batch and a partition
// that receives one large batch is not emptied at once (as Kafka never
// deletes its active segment). Applied, it answers StatusOK with
// BaseOffset the log start then, or StatusInvalid for a negative limit.
func RetainCommand(now, age, maxBytes int64) []byte {
	b := []byte{CmdRetain}
	b = binary.LittleEndian.AppendUint64(b, uint64(now))
	b = binary.LittleEndian.AppendUint64(b, uint64(age))
	return binary.LittleEndian.AppendUint64(b, uint64(maxBytes))
}

// RetentionDue reports whether a [RetainCommand] with these arguments would
// delete anything now: a cheap check (the oldest batch's header and the
// stored bytes) so that a leader proposes only when there is work. Safe
// for concurrent use with the writer; its answer is a hint, since the
// writer may move on meanwhile.
func (p *Partition) RetentionDue(now, age, maxBytes int64) (bool, error) {
	st := p.state.Load()
	var buf [1]*pebble.Iterator
	its, _, err := p.openIters(buf[:0], iterSpan{kind: kindData})
	if err != nil {
		return false, err
	}
	it := its[0]
	defer it.Close()
	if !it.First() {
		return false, p.readErr(it.Error(), -1)
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return false, p.readErr(err, -1)
	}
	h, err := ParseHeader(v)
	if err != nil || h.BaseOffset+int64(h.Count) >= st.NextOffset {
		return false, err // the newest batch always stays
	}
	return age > 0 && now > math.MinInt64+age && h.MaxTime < now-age || maxBytes > 0 && st.stored > maxBytes, nil
}

// applyControl applies one trim or retention command in a write of its
// own. It reads the store, which the previous write left exactly as the
// entries before this one made it.
func (p *Partition) applyControl(e Entry) (Result, error) {
	cur := p.state.Load()
	if e.Index <= cur.AppliedIndex {
		return Result{BaseOffset: -1, Status: StatusDuplicate}, nil
	}
	next := *cur
	next.AppliedIndex = e.Index
	wb := p.s.db.NewBatch()
	defer wb.Close()
	res, span, err := p.control(wb, &next, e.Cmd)
	if err != nil {
		return Result{}, err
	}
	if err := wb.Set(key(kindMeta, p.shard), next.encode(), nil); err != nil {
		return Result{}, err
	}
	if err := wb.Commit(pebble.NoSync); err != nil {
		return Result{}, err
	}
	p.state.Store(&next)
	if span.end != nil {
		// Deleted and overwritten keys take disk space until a compaction
		// drops them; the log is append-only, so none may come by itself
		// for a long time. Only the range written: the rest needs no
		// rewriting.
		p.s.compactLater(span.start, span.end)
	}
	return res, nil
}

// control applies a trim, retention or compaction command to next,
// writing into wb. It returns the span of data keys it deleted or
// rewrote, empty if none.
func (p *Partition) control(wb *pebble.Batch, next *partState, cmd []byte) (Result, keySpan, error) {
	if cmd[0] == CmdCompact {
		return p.applyCompact(wb, next, cmd)
	}
	before := next.LogStart
	res, dropped, err := p.dropCommand(wb, next, cmd)
	if err == nil && next.LogStart > before {
		// The aborted transactions whose marker is below the log start
		// describe no stored batch any more: each of their batches ends
		// before the marker, so was wholly below it and deleted.
		ak := slotKind(kindAborted, next.slot)
		err = wb.DeleteRange(key(ak, p.shard), key(ak, p.shard, uint64(next.LogStart)), nil)
		next.LastStable = max(next.LastStable, next.LogStart)
	}
	if dropped == nil {
		return res, keySpan{}, err
	}
	return res, keySpan{start: key(slotKind(kindData, next.slot), p.shard), end: dropped}, err
}

// dropCommand applies a trim or retention command to next, writing into
// wb. It returns the end of the range of data keys it deleted (which
// starts at the partition's first), nil if it deleted none.
func (p *Partition) dropCommand(wb *pebble.Batch, next *partState, cmd []byte) (Result, []byte, error) {
	invalid := Result{BaseOffset: -1, Status: StatusInvalid}
	le := binary.LittleEndian
	switch {
	case cmd[0] == CmdTrim && len(cmd) == 9:
		to := int64(le.Uint64(cmd[1:]))
		switch {
		case to < 0 || to > next.NextOffset:
			return invalid, nil, nil
		case to <= next.LogStart:
			return Result{BaseOffset: next.LogStart}, nil, nil
		}
		dropped, err := p.dropFront(wb, next, func(h BatchHeader, _ int64) bool {
			return h.BaseOffset+int64(h.Count) <= to
		})
		next.LogStart = to
		return Result{BaseOffset: to}, dropped, err
	case cmd[0] == CmdRetain && len(cmd) == 25:
		now, age, maxBytes := int64(le.Uint64(cmd[1:])), int64(le.Uint64(cmd[9:])), int64(le.Uint64(cmd[17:]))
		if age < 0 || maxBytes < 0 {
			return invalid, nil, nil
		}
		byTime := age > 0 && now > math.MinInt64+age
		dropped, err := p.dropFront(wb, next, func(h BatchHeader, stored int64) bool {
			end := h.BaseOffset + int64(h.Count)
			return end < next.NextOffset && // not the newest batch
				(byTime && h.MaxTime < now-age || maxBytes > 0 && stored > maxBytes)
		})
		return Result{BaseOffset: next.LogStart}, dropped, err
	}
	return Result{BaseOffset: -1, Status: StatusCorrupt}, nil, nil
}

// dropFront deletes the stored batches from the first on while drop (given
// the batch's header and the partition's stored bytes before deleting it)
// says so, with their time index entries, and moves next's log start past
// them. It returns the end of the deleted range of data keys, nil if it
// deleted none.
func (p *Partition) dropFront(wb *pebble.Batch, next *partState, drop func(h BatchHeader, stored int64) bool) ([]byte, error) {
	dk := slotKind(kindData, next.slot)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: key(dk, p.shard), UpperBound: upper(dk, p.shard)})
	if err != nil {
		return nil, p.readErr(err, -1)
	}
	defer it.Close()
	n := 0
	keep := next.NextOffset // the base of the first batch kept
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, p.readErr(err, -1)
		}
		h, err := ParseHeader(v)
		if err != nil {
			return nil, fmt.Errorf("shard %d: stored batch: %w", p.shard, err)
		}
		if !drop(h, next.stored) {
			keep = h.BaseOffset
			break
		}
		n++
		next.stored -= int64(len(v))
		next.LogStart = max(next.LogStart, h.BaseOffset+int64(h.Count))
	}
	if err := it.Error(); err != nil {
		return nil, p.readErr(err, -1)
	}
	if n == 0 {
		return nil, nil
	}
	end := upper(dk, p.shard)
	if keep < next.NextOffset {
		end = key(dk, p.shard, uint64(keep))
	}
	if err := wb.DeleteRange(key(dk, p.shard), end, nil); err != nil {
		return nil, err
	}
	// The time index is in offset order too (its keys lead with the
	// running maximum time): its entries below the first kept batch's go.
	tk := slotKind(kindTime, next.slot)
	ti, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: key(tk, p.shard), UpperBound: upper(tk, p.shard)})
	if err != nil {
		return nil, p.readErr(err, -1)
	}
	defer ti.Close()
	tend := upper(tk, p.shard)
	for ti.First(); ti.Valid(); ti.Next() {
		if k := ti.Key(); len(k) == 25 && int64(binary.BigEndian.Uint64(k[17:])) >= keep {
			tend = append([]byte(nil), k...)
			break
		}
	}
	if err := ti.Error(); err != nil {
		return nil, p.readErr(err, -1)
	}
	return end, wb.DeleteRange(key(tk, p.shard), tend, nil)
}

// compactor compacts key ranges that trims and retention deleted, in the
// background: Apply must not wait for it.
type compactor struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}
	mu     struct {
		sync.Mutex
		spans map[string][]byte // start -> the largest end queued
	}
}

// compactLater queues [start, end) for compaction.
func (s *Store) compactLater(start, end []byte) {
	c := &s.compactor
	c.mu.Lock()
	if c.mu.spans == nil {
		c.mu.spans = map[string][]byte{}
	}
	if cur, ok := c.mu.spans[string(start)]; !ok || bytes.Compare(cur, end) < 0 {
		c.mu.spans[string(start)] = end
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (s *Store) startCompactor() {
	c := &s.compactor
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.kick = make(chan struct{}, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-c.kick:
			}
			c.mu.Lock()
			spans := c.mu.spans
			c.mu.spans = nil
			c.mu.Unlock()
			// The memtable holds the range deletions at first: flush it
			// so that the compactions see them.
			err := s.db.Flush()
			for start, end := range spans {
				if err == nil {
					err = s.db.Compact(c.ctx, []byte(start), end, true)
				}
				if c.ctx.Err() != nil {
					return
				}
			}
			if err != nil {
				s.log.Warn("replog: compacting deleted records failed; their space comes back with later compactions", "err", err)
			}
		}
	}()
}

// stopCompactor stops the compactor and waits for it; before the db
// closes, since Pebble panics on a compaction of a closed db.
func (s *Store) stopCompactor() {
	s.compactor.cancel()
	s.compactor.wg.Wait()
}
