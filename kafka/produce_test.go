package replogkafka_test

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// createTopic creates a topic through the listener.
func createTopic(t *testing.T, cl *kgo.Client, name string, partitions int32) {
	t.Helper()
	res, err := kadm.NewClient(cl).CreateTopic(testCtx(t), partitions, -1, nil, name)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatalf("creating %s: %v", name, err)
	}
}

// consumeN reads n records with a new client of the listener, from the
// start of topic.
func consumeN(t *testing.T, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	ctx := testCtx(t)
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("fetching %s/%d: %v", topic, p, err)
		})
		got = append(got, fs.Records()...)
	}
	return got
}

func recordKey(r *kgo.Record) string { return fmt.Sprintf("%d/%d", r.Partition, r.Offset) }

// TestProduceConsume produces keyed records with headers and timestamps to
// a durable node through franz-go, and reads them back through franz-go
// and through the Go API.
func TestProduceConsume(t *testing.T) {
	l, err := replog.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srv := listen(t, l, nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "orders", 3)

	const n = 60
	base := time.UnixMilli(1_700_000_000_000)
	var sent []*kgo.Record
	for i := range n {
		r := &kgo.Record{
			Topic:     "orders",
			Key:       fmt.Appendf(nil, "customer-%d", i%7),
			Value:     fmt.Appendf(nil, "order %d", i),
			Timestamp: base.Add(time.Duration(i) * time.Second),
			Headers:   []kgo.RecordHeader{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}, {Key: "empty", Value: []byte{}}},
		}
		if i%10 == 0 {
			r.Value = []byte{} // empty, not null
		}
		sent = append(sent, r)
	}
	ctx := testCtx(t)
	// Some one at a time, the rest in one go, so that batches hold one
	// record and several.
	for _, r := range sent[:10] {
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.ProduceSync(ctx, sent[10:]...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	next := map[int32]int64{}
	for _, r := range slices.SortedFunc(slices.Values(sent), func(a, b *kgo.Record) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	}) {
		if r.Offset != next[r.Partition] {
			t.Fatalf("record %s: want offset %d", recordKey(r), next[r.Partition])
		}
		next[r.Partition]++
	}

	consumer := newClient(t, srv, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consumeN(t, consumer, n)
	byPos := map[string]*kgo.Record{}
	for _, r := range sent {
		byPos[recordKey(r)] = r
	}
	for _, r := range got {
		want := byPos[recordKey(r)]
		if want == nil {
			t.Fatalf("consumed %s, never produced", recordKey(r))
		}
		if string(r.Key) != string(want.Key) || string(r.Value) != string(want.Value) || r.Value == nil ||
			!r.Timestamp.Equal(want.Timestamp) || fmt.Sprint(r.Headers) != fmt.Sprint(want.Headers) {
			t.Fatalf("at %s consumed %q=%q at %v %v, produced %q=%q at %v %v", recordKey(r),
				r.Key, r.Value, r.Timestamp, r.Headers, want.Key, want.Value, want.Timestamp, want.Headers)
		}
		delete(byPos, recordKey(r))
	}
	if len(byPos) != 0 {
		t.Fatalf("%d records not consumed", len(byPos))
	}
	// The Log's counters see Kafka clients as they see its own handles.
	if st := l.Stats().Node; st.ProducedRecords != n || st.FetchedRecords != n || st.ProduceErrors != 0 {
		t.Fatalf("stats: produced %d, fetched %d, errors %d; want %d, %d, 0", st.ProducedRecords, st.FetchedRecords, st.ProduceErrors, n, n)
	}

	// The Go API reads the same records.
	topic, err := l.Topic("orders")
	if err != nil {
		t.Fatal(err)
	}
	c, err := replog.NewConsumer(topic, replog.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := 0
	for rec, err := range c.Records(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		want := sent[slices.IndexFunc(sent, func(r *kgo.Record) bool {
			return r.Partition == int32(rec.Partition) && r.Offset == rec.Offset
		})]
		if string(rec.Key) != string(want.Key) || string(rec.Value) != string(want.Value) || !rec.Time.Equal(want.Timestamp) ||
			len(rec.Headers) != 2 || rec.Headers[0].Key != "i" || string(rec.Headers[0].Value) != string(want.Headers[0].Value) {
			t.Fatalf("the Go API reads %+v at %d/%d", rec, rec.Partition, rec.Offset)
		}
		if seen++; seen == n {
			break
		}
	}

	// ListOffsets: earliest, latest, by time.
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(3) {
		s, _ := starts.Lookup("orders", p)
		e, _ := ends.Lookup("orders", p)
		if s.Err != nil || e.Err != nil || s.Offset != 0 || e.Offset != next[p] {
			t.Fatalf("partition %d: start %+v end %+v, want 0 and %d", p, s, e, next[p])
		}
	}
	mid := sent[n/2]
	after, err := adm.ListOffsetsAfterMilli(ctx, mid.Timestamp.UnixMilli(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	o, _ := after.Lookup("orders", mid.Partition)
	var first *kgo.Record // the first record of mid's partition at or after its time
	for _, r := range sent {
		if r.Partition == mid.Partition && !r.Timestamp.Before(mid.Timestamp) && (first == nil || r.Offset < first.Offset) {
			first = r
		}
	}
	if o.Err != nil || o.Offset != first.Offset || o.Timestamp != first.Timestamp.UnixMilli() {
		t.Fatalf("offset after %v: %+v, want %d at %v", mid.Timestamp, o, first.Offset, first.Timestamp)
	}
	after, err = adm.ListOffsetsAfterMilli(ctx, base.Add(time.Hour).UnixMilli(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	// Kafka answers -1 for a time after every record; kadm turns that
	// into the end offset.
	if o, _ := after.Lookup("orders", 0); o.Err != nil || o.Offset != next[0] {
		t.Fatalf("offset after the last record: %+v, want %d", o, next[0])
	}
}

func TestProduceCompressed(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	admin := newClient(t, srv)
	for _, codec := range []struct {
		name  string
		codec kgo.CompressionCodec
	}{
		{"gzip", kgo.GzipCompression()}, {"snappy", kgo.SnappyCompression()},
		{"lz4", kgo.Lz4Compression()}, {"zstd", kgo.ZstdCompression()},
	} {
		t.Run(codec.name, func(t *testing.T) {
			createTopic(t, admin, codec.name, 1)
			cl := newClient(t, srv, kgo.ProducerBatchCompression(codec.codec), kgo.DefaultProduceTopic(codec.name))
			var recs []*kgo.Record
			for i := range 50 {
				recs = append(recs, kgo.StringRecord(fmt.Sprintf("value %d, compressible compressible compressible", i)))
			}
			if err := cl.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			got := consumeN(t, newClient(t, srv, kgo.ConsumeTopics(codec.name), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 50)
			for i, r := range got {
				if r.Offset != int64(i) || string(r.Value) != string(recs[i].Value) {
					t.Fatalf("record %d: %d %q", i, r.Offset, r.Value)
				}
			}
		})
	}
}

func TestProduceAcksNone(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite(), kgo.DefaultProduceTopic("fire"))
	createTopic(t, cl, "fire", 1)
	for i := range 5 {
		if err := cl.ProduceSync(testCtx(t), kgo.StringRecord(fmt.Sprint(i))).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	got := consumeN(t, newClient(t, srv, kgo.ConsumeTopics("fire"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 5)
	for i, r := range got {
		if string(r.Value) != fmt.Sprint(i) {
			t.Fatalf("record %d: %q", i, r.Value)
		}
	}
}

// produceRaw sends one batch to partition 0 of topic with a raw Produce
// request and returns the partition's response.
func produceRaw(t *testing.T, cl *kgo.Client, topic string, batch []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0]
}

// rawBatch encodes values as an uncompressed v2 batch of producer pid.
func rawBatch(pid int64, epoch int16, seq int32, values ...string) []byte {
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(len(values) - 1),
		FirstTimestamp: time.Now().UnixMilli(), ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq,
		NumRecords: int32(len(values)),
	}
	b.MaxTimestamp = b.FirstTimestamp
	for i, v := range values {
		r := kmsg.Record{OffsetDelta: int32(i), Key: []byte("k"), Value: []byte(v)}
		body := r.AppendTo(nil)
		r.Length = int32(len(body) - 1) // the length varint was 1 byte (0)
		b.Records = r.AppendTo(b.Records)
	}
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - 12)
	raw = b.AppendTo(nil)
	b.CRC = int32(crc32c(raw[21:]))
	return b.AppendTo(nil)
}

// TestIdempotentRetryStoredOnce sends one idempotent batch twice, as a
// client retrying after a lost response does: it is stored once, and the
// retry is answered with the first offset.
func TestIdempotentRetryStoredOnce(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "once", 1)
	init := kmsg.NewPtrInitProducerIDRequest()
	ir, err := init.RequestWith(testCtx(t), cl)
	if err != nil || ir.ErrorCode != 0 || ir.ProducerID < 0 {
		t.Fatalf("InitProducerId: %v, %+v", err, ir)
	}
	if p := produceRaw(t, cl, "once", rawBatch(ir.ProducerID, ir.ProducerEpoch, 0, "a", "b")); p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("first: %+v", p)
	}
	if p := produceRaw(t, cl, "once", rawBatch(ir.ProducerID, ir.ProducerEpoch, 2, "c")); p.ErrorCode != 0 || p.BaseOffset != 2 {
		t.Fatalf("second: %+v", p)
	}
	if p := produceRaw(t, cl, "once", rawBatch(ir.ProducerID, ir.ProducerEpoch, 0, "a", "b")); p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("retry of the first: %+v", p)
	}
	if p := produceRaw(t, cl, "once", rawBatch(ir.ProducerID, ir.ProducerEpoch, 7, "gap")); p.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("a gap in sequences: %+v", p)
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(testCtx(t), "once")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("once", 0); o.Offset != 3 {
		t.Fatalf("end offset %d, want 3", o.Offset)
	}
}

func TestProduceRefused(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "t", 1)
	good := rawBatch(-1, -1, -1, "x")
	bad := slices.Clone(good)
	bad[len(bad)-1] ^= 0xff
	for _, tc := range []struct {
		name  string
		topic string
		batch []byte
		want  *kerr.Error
	}{
		{"unknown topic", "missing", good, kerr.UnknownTopicOrPartition},
		{"bad CRC", "t", bad, kerr.CorruptMessage},
		{"two batches", "t", append(slices.Clone(good), good...), kerr.CorruptMessage},
		{"truncated", "t", good[:40], kerr.CorruptMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := produceRaw(t, cl, tc.topic, tc.batch)
			if err := kerr.ErrorForCode(p.ErrorCode); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	checkAlive(t, cl)
}

// TestLongPollFetch: a fetch waiting for data answers as soon as a record
// is produced, long before its MaxWaitMillis.
func TestLongPollFetch(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	topic, err := l.CreateTopic(testCtx(t), "poll", replog.TopicConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, srv, kgo.ConsumeTopics("poll"), kgo.FetchMaxWait(20*time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx := testCtx(t)
	type polled struct {
		recs []*kgo.Record
		at   time.Time
	}
	done := make(chan polled, 1)
	go func() {
		fs := cl.PollFetches(ctx)
		done <- polled{fs.Records(), time.Now()}
	}()
	time.Sleep(500 * time.Millisecond) // let the fetch reach the server and wait
	p, err := replog.NewProducer(topic, replog.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	produced := time.Now()
	if _, err := p.Produce(ctx, replog.Message[string]{Value: "wake"}); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if len(got.recs) != 1 || string(got.recs[0].Value) != "wake" {
		t.Fatalf("fetched %v", got.recs)
	}
	if d := got.at.Sub(produced); d > 5*time.Second {
		t.Fatalf("the fetch answered %v after the record was produced", d)
	}
}

// TestFetchWhileOthersSendGarbage: a consumer keeps working while other
// connections send garbage and oversize frames.
func TestFetchWhileOthersSendGarbage(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv, kgo.DefaultProduceTopic("g"))
	createTopic(t, cl, "g", 1)
	consumer := newClient(t, srv, kgo.ConsumeTopics("g"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for i := range 3 {
		bad := dial(t, srv)
		if i%2 == 0 {
			bad.Write([]byte{0x7f, 0xff, 0xff, 0xff}) // 2 GiB
		} else {
			bad.Write([]byte{0, 0, 0, 12, 0, 0, 0, 9, 1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff}) // Produce v9 garbage
		}
		if err := cl.ProduceSync(testCtx(t), kgo.StringRecord(fmt.Sprint(i))).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if !closedByServer(t, bad) {
			t.Fatal("a bad connection stayed open")
		}
	}
	got := consumeN(t, consumer, 3)
	if len(got) != 3 || string(got[2].Value) != "2" {
		t.Fatalf("consumed %v", got)
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// TestFetchWaitsForMinBytes sends raw Fetch requests: with nothing to read
// the server holds the request for MaxWaitMillis; a record produced
// meanwhile answers it at once.
func TestFetchWaitsForMinBytes(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	topic, err := l.CreateTopic(testCtx(t), "w", replog.TopicConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, srv)
	fetch := func(corr int32, wait time.Duration) {
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 12, int32(wait.Milliseconds()), 1, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "w"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.PartitionMaxBytes = 1 << 20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		c.Write(frame(req, corr))
	}
	read := func() *kmsg.FetchResponse {
		_, body := readResponse(t, c)
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = 12
		if err := resp.ReadFrom(body[1:]); err != nil { // after the header's tags
			t.Fatal(err)
		}
		return resp
	}

	start := time.Now()
	fetch(1, 700*time.Millisecond)
	resp := read()
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("an empty fetch answered after %v, before MaxWaitMillis", d)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || len(p.RecordBatches) != 0 || p.HighWatermark != 0 {
		t.Fatalf("empty fetch: %+v", p)
	}

	fetch(2, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
	p, err := replog.NewProducer(topic, replog.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	produced := time.Now()
	if _, err := p.Produce(testCtx(t), replog.Message[string]{Value: "now"}); err != nil {
		t.Fatal(err)
	}
	resp = read()
	if d := time.Since(produced); d > 5*time.Second {
		t.Fatalf("answered %v after the produce", d)
	}
	part := resp.Topics[0].Partitions[0]
	var batch kmsg.RecordBatch
	if err := batch.ReadFrom(part.RecordBatches); err != nil || part.HighWatermark != 1 || batch.NumRecords != 1 {
		t.Fatalf("fetched %+v (%v)", part, err)
	}
	if crc := crc32c(part.RecordBatches[21:]); crc != uint32(batch.CRC) {
		t.Fatalf("CRC %08x, batch says %08x", crc, uint32(batch.CRC))
	}
}

// TestCloseDuringLongPoll: Close does not wait for a fetch's MaxWaitMillis.
func TestCloseDuringLongPoll(t *testing.T) {
	l := openLog(t)
	if _, err := l.CreateTopic(testCtx(t), "idle", replog.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, srv)
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 12, 60_000, 1, 1<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = "idle"
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	c.Write(frame(req, 1))
	time.Sleep(300 * time.Millisecond) // the fetch is waiting
	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if !closedByServer(t, c) {
		t.Fatal("the connection stayed open")
	}
}

// TestFetchEmptyRecordsNotNull: a partition with nothing to return gets an
// empty records field, as Kafka sends, not a null one, which sarama (up to
// Fetch v11) refuses, dropping the connection.
func TestFetchEmptyRecordsNotNull(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	if _, err := l.CreateTopic(testCtx(t), "empty", replog.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, srv)
	for _, version := range []int16{4, 6, 11, 12} {
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.ReplicaID, req.MaxBytes, req.MinBytes, req.MaxWaitMillis = version, -1, 1<<20, 1, 0
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "empty"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.PartitionMaxBytes = 0, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		if _, err := c.Write(frame(req, int32(version))); err != nil {
			t.Fatal(err)
		}
		_, body := readResponse(t, c)
		if req.IsFlexible() {
			body = body[1:] // the response header's empty tags
		}
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		if err := resp.ReadFrom(body); err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != 0 || p.RecordBatches == nil {
			t.Errorf("Fetch v%d of an empty partition: error %d, records nil %v; want 0, false", version, p.ErrorCode, p.RecordBatches == nil)
		}
	}
}

// fetchRaw fetches partition 0 of topic from offset with a raw Fetch
// request (v12) and returns the partition's record batches as sent.
func fetchRaw(t *testing.T, srv *replogkafka.Server, topic string, offset int64) []byte {
	t.Helper()
	c := dial(t, srv)
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 12, 0, 0, 1<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.FetchOffset, rp.PartitionMaxBytes = offset, 1<<20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	c.Write(frame(req, 1))
	_, body := readResponse(t, c)
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 12
	if err := resp.ReadFrom(body[1:]); err != nil { // after the header's tags
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 {
		t.Fatalf("fetch: %v", kerr.ErrorForCode(p.ErrorCode))
	}
	return resp.Topics[0].Partitions[0].RecordBatches
}

// compressedBatch is rawBatch with its records compressed with zstd, as a
// client compresses them.
func compressedBatch(t *testing.T, seq int32, values ...string) []byte {
	t.Helper()
	var b kmsg.RecordBatch
	if err := b.ReadFrom(rawBatch(-1, -1, seq, values...)); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Records, b.Attributes = enc.EncodeAll(b.Records, nil), 4
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - 12)
	raw = b.AppendTo(nil)
	b.CRC = int32(crc32c(raw[21:]))
	return b.AppendTo(nil)
}

// TestFetchReturnsProducedBatch: the listener stores a client's batch as
// it came, compressed as the client compressed it, and Fetch returns those
// bytes, with only the base offset set (which the CRC does not cover).
func TestFetchReturnsProducedBatch(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	cl := newClient(t, srv)
	createTopic(t, cl, "same", 1)
	first := compressedBatch(t, -1, "a", "b")
	second := compressedBatch(t, -1, "c", strings.Repeat("compressible ", 100))
	for i, b := range [][]byte{first, second} {
		if p := produceRaw(t, cl, "same", b); p.ErrorCode != 0 || p.BaseOffset != int64(2*i) {
			t.Fatalf("produce %d: %+v", i, p)
		}
	}
	want := slices.Concat(first, second)
	binary.BigEndian.PutUint64(want[len(first):], 2)
	if got := fetchRaw(t, srv, "same", 0); !bytes.Equal(got, want) {
		t.Fatalf("fetched\n%x\nproduced\n%x", got, want)
	}
	// From the middle of a batch: the whole batch, as Kafka sends it.
	if got := fetchRaw(t, srv, "same", 3); !bytes.Equal(got, want[len(first):]) {
		t.Fatalf("fetched from offset 3\n%x", got)
	}
}

// TestFetchKeepsClientCompression: batches that franz-go compressed come
// back compressed with its codec, and franz-go reads them.
func TestFetchKeepsClientCompression(t *testing.T) {
	srv := listen(t, openLog(t), nil)
	for i, codec := range []kgo.CompressionCodec{kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()} {
		name := fmt.Sprint("codec-", i+1)
		cl := newClient(t, srv, kgo.DefaultProduceTopic(name), kgo.ProducerBatchCompression(codec))
		createTopic(t, cl, name, 1)
		var recs []*kgo.Record
		for i := range 20 {
			recs = append(recs, kgo.StringRecord(strings.Repeat(fmt.Sprint(i), 50)))
		}
		if err := cl.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		raw := fetchRaw(t, srv, name, 0)
		for len(raw) > 0 {
			var b kmsg.RecordBatch
			if err := b.ReadFrom(raw); err != nil {
				t.Fatal(err)
			}
			if b.Attributes&7 == 0 {
				t.Fatalf("%s: an uncompressed batch came back", name)
			}
			if uint32(b.CRC) != crc32c(raw[21:12+b.Length]) {
				t.Fatalf("%s: bad CRC", name)
			}
			raw = raw[12+b.Length:]
		}
		consumer := newClient(t, srv, kgo.ConsumeTopics(name), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		for i, r := range consumeN(t, consumer, 20) {
			if string(r.Value) != string(recs[i].Value) {
				t.Fatalf("%s: record %d is %q", name, i, r.Value)
			}
		}
	}
}

// TestMaxFetchBytes: a Fetch asking for more than the listener's
// MaxFetchBytes gets no more than that (but for the first batch, sent whole
// as Kafka does), so one request cannot make the listener read a
// partition's whole log into memory.
func TestMaxFetchBytes(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, &replogkafka.Options{MaxFetchBytes: 64 << 10})
	ctx := testCtx(t)
	tp, err := l.CreateTopic(ctx, "big", replog.TopicConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := replog.NewProducer(tp, replog.Bytes(), &replog.ProducerOptions{BatchBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 1000)
	for range 1000 { // about 1 MB in batches of about 16 KiB
		p.ProduceAsync(ctx, replog.Message[[]byte]{Value: value}, nil)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	c := dial(t, srv)
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 12, 0, 0, 1<<30
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = "big"
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.FetchOffset, rp.PartitionMaxBytes = 0, 1<<30
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	c.Write(frame(req, 1))
	_, body := readResponse(t, c)
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = 12
	if err := resp.ReadFrom(body[1:]); err != nil {
		t.Fatal(err)
	}
	got := len(resp.Topics[0].Partitions[0].RecordBatches)
	if got == 0 || got > 64<<10+20<<10 {
		t.Fatalf("a fetch of 1 GiB with MaxFetchBytes 64 KiB got %d bytes of batches", got)
	}
}
