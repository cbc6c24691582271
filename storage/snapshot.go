package storage

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// Snapshot is a consistent view of one partition for streaming to a replica
// that fell behind. Close it when done.
type Snapshot struct {
	p    *Partition
	snap *pebble.Snapshot
	Meta Meta
}

// Snapshot takes a consistent view of the partition. Writer only.
func (p *Partition) Snapshot() *Snapshot {
	return &Snapshot{p: p, snap: p.s.db.NewSnapshot(), Meta: p.Meta()}
}

// Close releases the view.
func (s *Snapshot) Close() error { return s.snap.Close() }

// WriteTo streams the partition as (kind, suffix, value) records, each
// length-prefixed, ended by a zero byte. The shard id is left out so the
// stream does not depend on it.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	var n int64
	var hdr [2 * binary.MaxVarintLen64]byte
	for _, k := range kinds {
		it, err := s.snap.NewIter(&pebble.IterOptions{
			LowerBound: key(k, s.p.shard),
			UpperBound: upper(k, s.p.shard),
		})
		if err != nil {
			return n, s.p.readErr(err, -1)
		}
		for it.First(); it.Valid(); it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return n, s.p.readErr(err, -1)
			}
			suffix := it.Key()[9:]
			h := binary.AppendUvarint(hdr[:0], uint64(len(suffix))+1)
			h = binary.AppendUvarint(h, uint64(len(v)))
			for _, part := range [][]byte{h, {k}, suffix, v} {
				m, err := bw.Write(part)
				n += int64(m)
				if err != nil {
					it.Close()
					return n, err
				}
			}
		}
		if err := it.Close(); err != nil {
			return n, s.p.readErr(err, -1)
		}
	}
	if err := bw.WriteByte(0); err != nil {
		return n, err
	}
	return n + 1, bw.Flush()
}

// Restore replaces the partition's contents with a stream written by
// [Snapshot.WriteTo]. Writer only.
func (p *Partition) Restore(r io.Reader) error {
	if err := p.Delete(); err != nil {
		return err
	}
	br := bufio.NewReaderSize(r, 256<<10)
	b := p.s.db.NewBatch()
	defer func() { b.Close() }()
	for {
		kl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: snapshot: %v", ErrCorrupt, err)
		}
		if kl == 0 {
			break
		}
		vl, err := binary.ReadUvarint(br)
		if err != nil || kl > 64 || vl > MaxBatchBytes {
			return fmt.Errorf("%w: snapshot record header", ErrCorrupt)
		}
		buf := make([]byte, kl+vl)
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("%w: snapshot: %v", ErrCorrupt, err)
		}
		k := key(buf[0], p.shard)
		k = append(k, buf[1:kl]...)
		if err := b.Set(k, buf[kl:], nil); err != nil {
			return err
		}
		if b.Len() > 8<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = p.s.db.NewBatch()
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	// A restored snapshot is not in the Raft log: it must be durable now.
	if err := p.s.db.Flush(); err != nil {
		return err
	}
	return p.load()
}
