package replog

import (
	"context"
	"time"
)

// A Hook watches producers and consumers: any value that implements one or
// more of [HookRecordProduced], [HookRecordWritten], [HookBatchWritten],
// [HookBatchFetched] and [HookRecordConsumed]. Hooks are set for every handle of a Log in
// [Options.Hooks], or for one handle in [ProducerOptions.Hooks] and
// [ConsumerOptions.Hooks] (called after the Log's). The metrics adapters
// (replogprom, replogotel) are built on [Log.Stats] and these hooks; users
// can write their own, as franz-go's hooks allow.
//
// Hooks run on replog's goroutines, inline: they must be fast and must not
// block or call back into the handle that called them. A handle without
// hooks pays nothing for them.
type Hook any

// HookRecordProduced is called by Produce and ProduceAsync for each record
// they accept, before it is buffered, with the caller's ctx. It may add
// headers to r (to propagate a trace, as replogotel does); r is not used
// after the call returns.
type HookRecordProduced interface {
	OnRecordProduced(ctx context.Context, r *ProducedRecord)
}

// ProducedRecord is what a [HookRecordProduced] sees of a record.
type ProducedRecord struct {
	// Context is the Produce call's ctx. A HookRecordProduced may replace
	// it (with a span it started, say): [HookRecordWritten] gets it back.
	Context context.Context
	Topic   string
	// Partition is the partition asked for, -1 if the partitioner will
	// choose.
	Partition int
	Key       []byte
	Tombstone bool
	// Headers may be appended to; the record is written with them.
	Headers []Header
}

// HookRecordWritten is called once a produced record's outcome is known,
// just before its callback, on the partition's sending goroutine, with
// the record as the [HookRecordProduced] hooks left it: where it was
// stored, or why it failed. A record refused before the hooks run (a done
// ctx, a value that does not encode) reaches neither hook; one refused
// after (too large, a closed producer) reaches both.
type HookRecordWritten interface {
	OnRecordWritten(r *ProducedRecord, pos Position, err error)
}

// HookBatchWritten is called once the outcome of a produced batch is known,
// before its records' callbacks run, on the partition's sending goroutine.
type HookBatchWritten interface {
	OnBatchWritten(BatchWritten)
}

// BatchWritten describes a produced batch.
type BatchWritten struct {
	Topic     string
	Partition int
	// BaseOffset is the offset of the batch's first record, -1 if it
	// failed.
	BaseOffset int64
	Records    int
	// Bytes is the records' keys, values and headers, uncompressed.
	Bytes int
	// Latency is from the first record's buffering to the outcome.
	Latency time.Duration
	Err     error
}

// HookBatchFetched is called each time a consumer reads records from its
// node's replica (its read-ahead, before Poll hands them out), on the
// consumer's fetching goroutine.
type HookBatchFetched interface {
	OnBatchFetched(BatchFetched)
}

// BatchFetched describes records a consumer read.
type BatchFetched struct {
	Topic     string
	Partition int
	Group     string // "" without a group
	// FirstOffset and LastOffset are those of the first and last record.
	FirstOffset, LastOffset int64
	Records                 int
	Bytes                   int // keys, values and headers
}

// HookRecordConsumed is called by Poll and Records for each record they
// hand out, in order, on the caller's goroutine.
type HookRecordConsumed interface {
	OnRecordConsumed(ConsumedRecord)
}

// ConsumedRecord is what a [HookRecordConsumed] sees of a record. Its
// slices are the record's: the hook must not modify them.
type ConsumedRecord struct {
	Topic     string
	Partition int
	Group     string
	Offset    int64
	Key       []byte
	Tombstone bool
	Headers   []Header
	Time      time.Time
}

// hookSet holds a handle's hooks sorted by kind, so that calling them is a
// slice range and a handle without any pays a length check.
type hookSet struct {
	produced []HookRecordProduced
	recorded []HookRecordWritten
	written  []HookBatchWritten
	fetched  []HookBatchFetched
	consumed []HookRecordConsumed
}

func newHookSet(lists ...[]Hook) hookSet {
	var s hookSet
	for _, hs := range lists {
		for _, h := range hs {
			if x, ok := h.(HookRecordProduced); ok {
				s.produced = append(s.produced, x)
			}
			if x, ok := h.(HookRecordWritten); ok {
				s.recorded = append(s.recorded, x)
			}
			if x, ok := h.(HookBatchWritten); ok {
				s.written = append(s.written, x)
			}
			if x, ok := h.(HookBatchFetched); ok {
				s.fetched = append(s.fetched, x)
			}
			if x, ok := h.(HookRecordConsumed); ok {
				s.consumed = append(s.consumed, x)
			}
		}
	}
	return s
}
