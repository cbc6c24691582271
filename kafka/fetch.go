package replogkafka

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	"github.com/replog/replog/internal/kafkabridge"
	"github.com/replog/replog/replication"
	"github.com/replog/replog/storage"
)

// fetchPart is one partition of a Fetch request.
type fetchPart struct {
	topic string
	t     *replog.Topic
	req   *kmsg.FetchRequestTopicPartition
	resp  *kmsg.FetchResponseTopicPartition
	rp    *replication.Partition // nil when err is set
	err   error
	// records and bytes read into resp, for the Log's counters.
	records, bytes int
	// caughtUp is set once the replica was made to catch up with its
	// group (see readFetch).
	caughtUp bool
}

// fetch answers a Fetch request: it reads from each partition's local
// replica and, while fewer than MinBytes were found, waits up to
// MaxWaitMillis for the partitions to apply something new (the replica's
// Changed channel, closed at every apply, which wakes the Go consumer
// too). The whole of it runs in the connection's writer, so the reader
// goes on reading the client's next requests meanwhile.
//
// Fetch sessions (KIP-227) are not kept: the response's session id is 0,
// which makes clients send full requests.
func (s *Server) fetch(req *kmsg.FetchRequest) reply {
	return func(ctx context.Context) kmsg.Response {
		deadline := time.Now().Add(time.Duration(max(req.MaxWaitMillis, 0)) * time.Millisecond)
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		parts := s.fetchParts(ctx, req, resp)
		var cases []reflect.SelectCase
		for {
			cases = cases[:0]
			for _, fp := range parts {
				if fp.rp != nil {
					// Before reading: an apply after the read wakes us.
					cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(fp.rp.Changed())})
				}
			}
			n, failed := s.readFetch(ctx, req, parts)
			wait := time.Until(deadline)
			if n >= int(req.MinBytes) || failed || wait <= 0 || len(cases) == 0 {
				for _, fp := range parts {
					if fp.records > 0 {
						kafkabridge.Fetched(fp.t, int(fp.req.Partition), fp.records, fp.bytes)
					}
					// No records is an empty field, as Kafka sends, never a
					// null one (size -1), which sarama refuses before v12.
					if fp.resp.RecordBatches == nil {
						fp.resp.RecordBatches = []byte{}
					}
				}
				return resp
			}
			timer := time.NewTimer(wait)
			cases = append(cases,
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)},
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())})
			i, _, _ := reflect.Select(cases)
			timer.Stop()
			if i == len(cases)-1 {
				return nil // the connection is closing
			}
			// New data, or the time is up: read again, and answer if
			// the time is up whatever was found.
			if i == len(cases)-2 {
				deadline = time.Time{}
			}
		}
	}
}

// fetchParts lays out the response and finds each partition's replica.
func (s *Server) fetchParts(ctx context.Context, req *kmsg.FetchRequest, resp *kmsg.FetchResponse) []fetchPart {
	var parts []fetchPart
	for i := range req.Topics {
		rt := &req.Topics[i]
		t := kmsg.NewFetchResponseTopic()
		t.Topic, t.TopicID = rt.Topic, rt.TopicID
		for range rt.Partitions {
			t.Partitions = append(t.Partitions, kmsg.NewFetchResponseTopicPartition())
		}
		resp.Topics = append(resp.Topics, t)
	}
	pctx, cancel := context.WithTimeout(ctx, s.node.AttemptTimeout())
	defer cancel()
	for i := range req.Topics {
		rt := &req.Topics[i]
		topic, terr := s.l.Topic(rt.Topic)
		for j := range rt.Partitions {
			fp := fetchPart{topic: rt.Topic, t: topic, req: &rt.Partitions[j], resp: &resp.Topics[i].Partitions[j], err: terr}
			fp.resp.Partition = fp.req.Partition
			if terr == nil {
				fp.rp, fp.err = kafkabridge.Partition(pctx, topic, int(fp.req.Partition))
				if fp.err == nil {
					fp.err = kafkabridge.MapErr(fp.rp.WaitOpen(pctx))
				}
				if fp.err == nil {
					fp.err = s.checkLeader(rt.Topic, fp.req.Partition, fp.rp)
				}
			}
			if fp.err != nil {
				fp.rp = nil
				fp.resp.ErrorCode = errorCode(fp.err)
			}
			parts = append(parts, fp)
		}
	}
	return parts
}

// readFetch reads every partition from its fetch offset into the
// response, replacing what an earlier pass read, and returns the record
// bytes read and whether a partition failed (which Kafka answers at once).
// MaxBytes and PartitionMaxBytes bound what is read, except that the first
// batch found is returned whatever its size (KIP-74), so a client always
// makes progress.
func (s *Server) readFetch(ctx context.Context, req *kmsg.FetchRequest, parts []fetchPart) (int, bool) {
	total, failed := 0, false
	maxBytes := int(req.MaxBytes)
	if req.Version < 3 || maxBytes <= 0 {
		maxBytes = 1<<31 - 1
	}
	maxBytes = min(maxBytes, int(s.opts.MaxFetchBytes))
	committed := req.Version >= 4 && req.IsolationLevel == 1
	var recs []storage.Record
	for i := range parts {
		fp := &parts[i]
		fp.records, fp.bytes = 0, 0
		if fp.rp == nil {
			failed = true
			continue
		}
		p := fp.resp
		from := fp.req.FetchOffset
		// The last stable offset first: the partition publishes its high
		// watermark before it, so that lso <= hw as read here.
		lso := fp.rp.LastStable()
		start, hw := fp.rp.LogStart(), fp.rp.HighWatermark()
		if from > hw && !fp.caughtUp {
			// A leader just elected may not have applied all that its
			// predecessor committed and served: a client coming from it
			// asks for offsets past this replica's high watermark. Catch
			// up (a read index through the group) before calling the
			// offset out of range, which would make the client reset.
			fp.caughtUp = true
			cctx, cancel := context.WithTimeout(ctx, s.node.AttemptTimeout())
			err := fp.rp.CatchUp(cctx)
			cancel()
			if err == nil {
				lso = fp.rp.LastStable()
				start, hw = fp.rp.LogStart(), fp.rp.HighWatermark()
			}
		}
		lso = min(lso, hw)
		// Kafka reports the last stable offset whatever the isolation
		// level; a read-committed fetch reads no further.
		p.HighWatermark, p.LastStableOffset, p.LogStartOffset = hw, lso, start
		p.ErrorCode, p.RecordBatches, p.AbortedTransactions = 0, nil, nil
		if from < start || from > hw {
			p.ErrorCode = kerr.OffsetOutOfRange.Code
			failed = true
			continue
		}
		end := hw
		if committed {
			end = lso
		}
		limit := min(int(fp.req.PartitionMaxBytes), maxBytes-total)
		if from >= end || limit <= 0 && total > 0 {
			continue
		}
		var buf []byte
		var derr error
		read := from // past the last batch read
		err := fp.rp.ReadBatches(ctx, from, max(limit, 1), func(b []byte) bool {
			// A Kafka batch is sent as stored, compressed as its producer
			// compressed it, after its CRC is checked (a damaged store
			// must fail the fetch, not hand the client bad records). A
			// batch that starts before the fetch offset is sent whole,
			// as Kafka does: clients skip the records before it.
			// Control batches (transaction markers) go as they are
			// stored: clients skip them too.
			var h storage.BatchHeader
			h, derr = storage.ParseHeader(b)
			if derr != nil || h.LastOffset() < from {
				return derr == nil
			}
			if h.BaseOffset >= end {
				// Past the last stable offset, which is a batch
				// boundary: the first batch of an open transaction.
				return false
			}
			before := len(buf)
			records, bytes := 0, 0
			if h.Version == storage.VersionKafka {
				buf = append(buf, b...)
				records, bytes = fetchedRecords(h, from), len(b)-batchHeaderLen
			} else {
				// A legacy batch is converted, as it always was.
				h, recs, derr = storage.DecodeRecords(b, from, recs[:0])
				if derr != nil {
					return false
				}
				buf = appendFetched(buf, h, recs)
				records = len(recs)
				for i := range recs {
					bytes += payloadBytes(&recs[i])
				}
			}
			if len(buf) > limit && before+total > 0 {
				buf = buf[:before] // past the limit, and not the first batch
				return false
			}
			fp.records += records
			fp.bytes += bytes
			read = h.LastOffset() + 1
			return len(buf) < limit
		})
		if err == nil {
			err = derr
		}
		if committed && len(buf) > 0 {
			// The aborted transactions the client must skip in what it
			// got (KIP-98); an empty list, never null, when there are
			// none, as Kafka answers a read-committed fetch. Without
			// them the batches cannot be sent.
			var aerr error
			if p.AbortedTransactions, aerr = abortedTxns(ctx, fp.rp, from, read); aerr != nil {
				buf, err = nil, aerr
			}
		}
		if err != nil && len(buf) == 0 {
			if errors.Is(err, storage.ErrCorrupt) {
				s.log.Warn("replogkafka: fetch met a damaged batch", "topic", fp.topic, "partition", fp.req.Partition, "offset", from, "err", err)
			}
			p.ErrorCode = errorCode(kafkabridge.MapErr(err))
			failed = true
			continue
		}
		p.RecordBatches = buf
		total += len(buf)
	}
	return total, failed
}

// abortedTxns lists the aborted transactions of rp overlapping offsets
// [from, to), as a Fetch response carries them.
func abortedTxns(ctx context.Context, rp *replication.Partition, from, to int64) ([]kmsg.FetchResponseTopicPartitionAbortedTransaction, error) {
	ats, err := rp.AbortedTxns(ctx, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]kmsg.FetchResponseTopicPartitionAbortedTransaction, 0, len(ats))
	for _, a := range ats {
		at := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
		at.ProducerID, at.FirstOffset = int64(a.ProducerID), a.FirstOffset
		out = append(out, at)
	}
	return out, nil
}

// fetchedRecords is how many records of the batch h a fetch from offset
// from counts: those at or after it, or, in a batch key compaction rewrote
// (whose records' offsets only decoding tells), all of them.
func fetchedRecords(h storage.BatchHeader, from int64) int {
	if h.Flags&storage.FlagCompacted != 0 {
		return h.Records
	}
	return int(h.LastOffset() - max(from, h.BaseOffset) + 1)
}

// listOffsets answers the earliest (-2) and latest (-1) offsets and the
// first offset at or after a time (through the partition's time index).
func (s *Server) listOffsets(ctx context.Context, req *kmsg.ListOffsetsRequest) *kmsg.ListOffsetsResponse {
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	ctx, cancel := context.WithTimeout(ctx, s.node.AttemptTimeout())
	defer cancel()
	for _, rt := range req.Topics {
		t := kmsg.NewListOffsetsResponseTopic()
		t.Topic = rt.Topic
		topic, terr := s.l.Topic(rt.Topic)
		for _, rp := range rt.Partitions {
			p := kmsg.NewListOffsetsResponseTopicPartition()
			p.Partition = rp.Partition
			err := terr
			if err == nil {
				p.Offset, p.Timestamp, err = s.listOffset(ctx, topic, rp.Partition, rp.Timestamp, req.Version >= 2 && req.IsolationLevel == 1)
			}
			if err != nil {
				p.ErrorCode, p.Offset, p.Timestamp = errorCode(err), -1, -1
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// ListOffsets' special timestamps.
const (
	latestOffset   = -1
	earliestOffset = -2
)

// listOffset returns the offset and timestamp (-1 when not known) that a
// ListOffsets request asks for; a time after every record gives -1, -1.
// For a read-committed client (committed), the latest offset is the last
// stable one, as in Kafka.
func (s *Server) listOffset(ctx context.Context, topic *replog.Topic, part int32, ts int64, committed bool) (int64, int64, error) {
	rp, err := kafkabridge.Partition(ctx, topic, int(part))
	if err != nil {
		return 0, 0, err
	}
	if err := rp.WaitOpen(ctx); err != nil {
		return 0, 0, kafkabridge.MapErr(err)
	}
	if err := s.checkLeader(topic.Name(), part, rp); err != nil {
		return 0, 0, err
	}
	switch {
	case ts == earliestOffset:
		return rp.LogStart(), -1, nil
	case ts == latestOffset && committed:
		return rp.LastStable(), -1, nil
	case ts == latestOffset:
		return rp.HighWatermark(), -1, nil
	case ts < 0 || ts > maxMillis:
		return 0, 0, fmt.Errorf("%w: timestamp %d", replog.ErrInvalidConfig, ts)
	}
	off, err := rp.OffsetForTime(ctx, ts*int64(time.Millisecond))
	if err != nil {
		return 0, 0, kafkabridge.MapErr(err)
	}
	// The index gives the offset; the record there gives its time.
	found, at := int64(-1), int64(-1)
	var recs []storage.Record
	var derr error
	err = rp.ReadBatches(ctx, off, 1<<20, func(b []byte) bool {
		if h, err := storage.ParseHeader(b); err == nil && h.Control {
			return true // a transaction marker: no record to find
		}
		_, recs, derr = storage.DecodeRecords(b, off, recs[:0])
		for _, r := range recs {
			if r.Time >= ts*int64(time.Millisecond) {
				found, at = r.Offset, r.Time/int64(time.Millisecond)
				return false
			}
		}
		return derr == nil
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return 0, 0, kafkabridge.MapErr(err)
	}
	return found, at, nil
}
