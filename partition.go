package replog

import (
	"sync/atomic"
)

// Partitioner chooses the partition of a record. Implementations must be
// safe for concurrent use.
type Partitioner interface {
	// Partition returns a partition in [0, n) for a record with this key
	// (nil for a keyless record).
	Partition(key []byte, n int) int
}

// PartitionerFunc adapts a function to [Partitioner].
type PartitionerFunc func(key []byte, n int) int

// Partition implements [Partitioner].
func (f PartitionerFunc) Partition(key []byte, n int) int { return f(key, n) }

// KafkaPartitioner is the default [Partitioner]: a keyed record goes to
// murmur2(key) mod n, exactly as Kafka's default partitioner does (so a key
// lands on the same partition number in both); keyless records stick to one
// partition until the producer closes a batch there, then move to the next
// (Kafka's sticky partitioning), which keeps batches full.
type KafkaPartitioner struct {
	sticky atomic.Int64
}

// Partition implements [Partitioner].
func (p *KafkaPartitioner) Partition(key []byte, n int) int {
	if key == nil {
		return int(p.sticky.Load() % int64(n))
	}
	return int(uint32(murmur2(key))&0x7fffffff) % n
}

// batchDone tells the sticky partitioner that a batch was closed on part.
func (p *KafkaPartitioner) batchDone(part, n int) {
	p.sticky.CompareAndSwap(int64(part), int64((part+1)%n))
}

// murmur2 is Kafka's Utils.murmur2 (seed 0x9747b28c), bit for bit.
func murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n := length / 4
	for i := range n {
		k := uint32(data[i*4]) | uint32(data[i*4+1])<<8 | uint32(data[i*4+2])<<16 | uint32(data[i*4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n*4:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}
