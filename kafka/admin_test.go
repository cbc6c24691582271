package replogkafka_test

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

func TestCreateDescribeDeleteTopics(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	adm := kadm.NewClient(newClient(t, srv))
	ctx := testCtx(t)

	res, err := adm.CreateTopic(ctx, 3, -1, map[string]*string{
		"retention.ms": kmsg.StringPtr("3600000"), "cleanup.policy": kmsg.StringPtr("delete"), "segment.bytes": kmsg.StringPtr("1048576"),
	}, "events")
	if err != nil || res.Err != nil {
		t.Fatalf("CreateTopic: %v, %v", err, res.Err)
	}
	if res.NumPartitions != 3 || res.ReplicationFactor != 1 {
		t.Fatalf("created %d partitions, %d replicas", res.NumPartitions, res.ReplicationFactor)
	}
	topic, err := l.Topic("events")
	if err != nil {
		t.Fatal(err)
	}
	if info := topic.Info(); info.Partitions != 3 || info.Retention.Hours() != 1 {
		t.Fatalf("the Log has %+v", info)
	}

	res, _ = adm.CreateTopic(ctx, 1, -1, nil, "events")
	if !errors.Is(res.Err, kerr.TopicAlreadyExists) {
		t.Fatalf("creating it again: %v", res.Err)
	}
	res, _ = adm.CreateTopic(ctx, 1, -1, map[string]*string{"no.such.config": kmsg.StringPtr("1")}, "other")
	if !errors.Is(res.Err, kerr.InvalidConfig) {
		t.Fatalf("unknown config: %v", res.Err)
	}
	res, _ = adm.CreateTopic(ctx, 1, -1, nil, "bad/name")
	if !errors.Is(res.Err, kerr.InvalidTopicException) {
		t.Fatalf("bad name: %v", res.Err)
	}
	res, _ = adm.CreateTopic(ctx, 1, 3, nil, "three")
	if !errors.Is(res.Err, kerr.InvalidReplicationFactor) {
		t.Fatalf("3 replicas on one node: %v", res.Err)
	}

	md, err := adm.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 1 || md.Brokers[0].NodeID != 1 || md.Controller != 1 {
		t.Fatalf("brokers %+v, controller %d", md.Brokers, md.Controller)
	}
	td, ok := md.Topics["events"]
	if !ok || len(td.Partitions) != 3 || td.ID == (kadm.TopicID{}) {
		t.Fatalf("topics %+v", md.Topics)
	}
	for _, p := range td.Partitions {
		if p.Leader != 1 || p.Err != nil {
			t.Fatalf("partition %+v", p)
		}
	}
	md, err = adm.Metadata(ctx, "missing")
	if err != nil {
		t.Fatal(err)
	}
	if err := md.Topics["missing"].Err; !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("missing topic: %v", err)
	}
	if _, err := l.Topic("missing"); !errors.Is(err, replog.ErrTopicNotFound) {
		t.Fatalf("Metadata created a topic without AutoCreateTopics: %v", err)
	}

	dr, err := adm.DeleteTopics(ctx, "events", "missing")
	if err != nil {
		t.Fatal(err)
	}
	if err := dr["events"].Err; err != nil {
		t.Fatalf("deleting events: %v", err)
	}
	if err := dr["missing"].Err; !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("deleting a missing topic: %v", err)
	}
	if _, err := l.Topic("events"); !errors.Is(err, replog.ErrTopicNotFound) {
		t.Fatalf("events still there: %v", err)
	}
}

func TestAutoCreateTopics(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, &replogkafka.Options{AutoCreateTopics: true})
	cl := newClient(t, srv, kgo.AllowAutoTopicCreation())
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr("auto")
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = true
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("%+v", resp.Topics)
	}
	if _, err := l.Topic("auto"); err != nil {
		t.Fatal(err)
	}
}

// TestOffsetsTopicInternal: Metadata lists __consumer_offsets as an
// internal topic without partitions, as clients expect of a Kafka
// cluster (regex consumers skip internal topics), and it cannot be
// created, by CreateTopics or on first use, or produced to.
func TestOffsetsTopicInternal(t *testing.T) {
	const offsets = "__consumer_offsets"
	l := openLog(t)
	srv := listen(t, l, &replogkafka.Options{AutoCreateTopics: true})
	cl := newClient(t, srv)
	adm := kadm.NewClient(cl)
	ctx := testCtx(t)
	createTopic(t, cl, "plain", 1)

	all, err := adm.ListTopicsWithInternal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := all[offsets]; !ok || !d.IsInternal || d.Err != nil || len(d.Partitions) != 0 {
		t.Fatalf("%s in all topics: %+v", offsets, d)
	}
	if all["plain"].IsInternal {
		t.Fatal("plain is listed as internal")
	}
	if listed, err := adm.ListTopics(ctx); err != nil || listed.Has(offsets) || !listed.Has("plain") {
		t.Fatalf("topics without internal ones: %v %v", listed.Names(), err)
	}

	// Asked by name, with auto-creation allowed: described, not created.
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(offsets)
	req.Topics, req.AllowAutoTopicCreation = append(req.Topics, rt), true
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || !resp.Topics[0].IsInternal || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != 0 {
		t.Fatalf("%s by name: %+v", offsets, resp.Topics)
	}
	res, _ := adm.CreateTopic(ctx, 1, -1, nil, offsets)
	if !errors.Is(res.Err, kerr.InvalidRequest) {
		t.Fatalf("creating %s: %v", offsets, res.Err)
	}
	if p := produceRaw(t, cl, offsets, rawBatch(-1, -1, -1, "x")); p.ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("producing to %s: %v", offsets, kerr.ErrorForCode(p.ErrorCode))
	}
	if _, err := l.Topic(offsets); !errors.Is(err, replog.ErrTopicNotFound) {
		t.Fatalf("%s was created: %v", offsets, err)
	}

	// A topic of that name made with the Go API is listed as it is.
	if _, err := l.CreateTopic(ctx, offsets, replog.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	// A new client: the first one's metadata is cached.
	all, err = kadm.NewClient(newClient(t, srv)).ListTopicsWithInternal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := all[offsets]; d.IsInternal || len(d.Partitions) != 2 {
		t.Fatalf("the Go API's %s: %+v", offsets, d)
	}
}
