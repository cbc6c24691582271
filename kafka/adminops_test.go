package replogkafka_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/replog/replog"
)

// adminVersions are the client generations the admin tests run with:
// the newest versions (flexible) and those of Kafka 2.3 clients, before
// flexible versions reached these APIs.
var adminVersions = []struct {
	name string
	opts []kgo.Opt
}{
	{"latest", nil},
	{"kafka-2.3", []kgo.Opt{kgo.MaxVersions(kversion.V2_3_0())}},
}

func TestDescribeAndAlterTopicConfigs(t *testing.T) {
	for _, v := range adminVersions {
		t.Run(v.name, func(t *testing.T) {
			l := openLog(t)
			adm := kadm.NewClient(newClient(t, listen(t, l, nil), v.opts...))
			ctx := testCtx(t)
			retention := "3600000"
			if _, err := adm.CreateTopic(ctx, 2, -1, map[string]*string{"retention.ms": &retention}, "cfg"); err != nil {
				t.Fatal(err)
			}

			configs := func() map[string]*kadm.Config {
				t.Helper()
				rcs, err := adm.DescribeTopicConfigs(ctx, "cfg")
				if err != nil {
					t.Fatal(err)
				}
				rc, err := rcs.On("cfg", nil)
				if err != nil || rc.Err != nil {
					t.Fatal(err, rc.Err)
				}
				m := map[string]*kadm.Config{}
				for _, c := range rc.Configs {
					m[c.Key] = &c
				}
				return m
			}
			got := configs()
			for name, want := range map[string]string{
				"retention.ms": "3600000", "retention.bytes": "-1", "cleanup.policy": "delete",
				"delete.retention.ms": "86400000", "compression.type": "uncompressed",
				"max.message.bytes": "1048588",
			} {
				if c, ok := got[name]; !ok || c.MaybeValue() != want {
					t.Errorf("%s = %q, want %q", name, c.MaybeValue(), want)
				}
			}
			if got["retention.ms"].Source != kmsg.ConfigSourceDynamicTopicConfig || got["retention.bytes"].Source != kmsg.ConfigSourceDefaultConfig {
				t.Errorf("sources: retention.ms %v, retention.bytes %v", got["retention.ms"].Source, got["retention.bytes"].Source)
			}

			alter := func(validate bool, cs ...kadm.AlterConfig) error {
				t.Helper()
				f := adm.AlterTopicConfigs
				if validate {
					f = adm.ValidateAlterTopicConfigs
				}
				resps, err := f(ctx, cs, "cfg")
				if err != nil {
					return err
				}
				r, err := resps.On("cfg", nil)
				if err != nil {
					return err
				}
				return r.Err
			}
			set := func(k, v string) kadm.AlterConfig { return kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v} }
			if err := alter(false,
				set("retention.bytes", "1048576"),
				set("cleanup.policy", "compact"),
				set("compression.type", "zstd"),
				kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "retention.ms"},
				set("segment.bytes", "1073741824"), // accepted and ignored
			); err != nil {
				t.Fatal(err)
			}
			info := topicInfo(t, l, "cfg")
			if info.RetentionBytes != 1<<20 || info.Cleanup != replog.CleanupCompact || info.Compression != replog.CompressionZstd || info.Retention != 0 || info.Partitions != 2 {
				t.Fatalf("after alter: %+v", info)
			}
			if err := alter(false, kadm.AlterConfig{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: kmsg.StringPtr("delete")}); err != nil {
				t.Fatal(err)
			}
			if got := configs()["cleanup.policy"].MaybeValue(); got != "compact,delete" {
				t.Fatalf("cleanup.policy after APPEND delete: %q", got)
			}

			// Refused, and nothing changed: a bad value, an unknown
			// setting, a validate-only request.
			for _, bad := range []kadm.AlterConfig{set("retention.ms", "soon"), set("no.such.config", "1"), {Op: kadm.SubtractConfig, Name: "retention.ms", Value: kmsg.StringPtr("1")}} {
				if err := alter(false, set("retention.bytes", "5"), bad); !errors.Is(err, kerr.InvalidConfig) {
					t.Errorf("%v %s: err %v, want INVALID_CONFIG", bad.Op, bad.Name, err)
				}
			}
			if err := alter(true, set("retention.bytes", "5")); err != nil {
				t.Fatal(err)
			}
			if got := topicInfo(t, l, "cfg").RetentionBytes; got != 1<<20 {
				t.Fatalf("retention.bytes %d after refused and validate-only alters", got)
			}

			rcs, err := adm.DescribeTopicConfigs(ctx, "missing")
			if err != nil {
				t.Fatal(err)
			}
			if rc, _ := rcs.On("missing", nil); !errors.Is(rc.Err, kerr.UnknownTopicOrPartition) {
				t.Fatalf("describing a missing topic: %v", rc.Err)
			}
			// Tools describe every broker's configs: an empty answer.
			if bcs, err := adm.DescribeBrokerConfigs(ctx, 1); err != nil || len(bcs) != 1 || bcs[0].Err != nil {
				t.Fatalf("broker configs: %v %+v", err, bcs)
			}
		})
	}
}

// TestMaxMessageBytes: a topic's max.message.bytes, set at creation and
// altered, refuses larger batches with MESSAGE_TOO_LARGE, as Kafka.
func TestMaxMessageBytes(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	cl := newClient(t, srv)
	adm := kadm.NewClient(cl)
	ctx := testCtx(t)
	small := rawBatch(-1, -1, -1, "x")
	large := rawBatch(-1, -1, -1, strings.Repeat("x", 100))
	limit := strconv.Itoa(len(small))
	res, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"max.message.bytes": &limit}, "capped")
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := topicInfo(t, l, "capped").MaxMessageBytes; got != len(small) {
		t.Fatalf("MaxMessageBytes %d, want %d", got, len(small))
	}
	describe := func() kadm.Config {
		t.Helper()
		rcs, err := adm.DescribeTopicConfigs(ctx, "capped")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range rcs[0].Configs {
			if c.Key == "max.message.bytes" {
				return c
			}
		}
		t.Fatalf("no max.message.bytes in %+v", rcs[0].Configs)
		return kadm.Config{}
	}
	if c := describe(); c.MaybeValue() != limit || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("described %s=%q from %v", c.Key, c.MaybeValue(), c.Source)
	}

	if p := produceRaw(t, cl, "capped", small); p.ErrorCode != 0 {
		t.Fatalf("a batch of exactly max.message.bytes: %v", kerr.ErrorForCode(p.ErrorCode))
	}
	if p := produceRaw(t, cl, "capped", large); p.ErrorCode != kerr.MessageTooLarge.Code || p.ErrorMessage == nil {
		t.Fatalf("a larger batch: %v %v", kerr.ErrorForCode(p.ErrorCode), p.ErrorMessage)
	}
	pcl := newClient(t, srv, kgo.DefaultProduceTopic("capped"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err := pcl.ProduceSync(ctx, kgo.StringRecord(strings.Repeat("x", 100))).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("franz-go producing a larger record: %v", err)
	}

	for _, tc := range []struct {
		op    kadm.IncrementalOp
		value string
		want  int
	}{
		{kadm.SetConfig, "100000", 100000},
		{kadm.DeleteConfig, "", replog.DefaultMaxMessageBytes},
	} {
		ac := kadm.AlterConfig{Op: tc.op, Name: "max.message.bytes"}
		if tc.op == kadm.SetConfig {
			ac.Value = &tc.value
		}
		resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{ac}, "capped")
		if err == nil {
			err = resps[0].Err
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := topicInfo(t, l, "capped").MaxMessageBytes; got != tc.want {
			t.Fatalf("after %v: MaxMessageBytes %d, want %d", tc.op, got, tc.want)
		}
	}
	if c := describe(); c.MaybeValue() != "1048588" || c.Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("after DELETE: %s=%q from %v", c.Key, c.MaybeValue(), c.Source)
	}
	if p := produceRaw(t, cl, "capped", large); p.ErrorCode != 0 {
		t.Fatalf("after raising the limit: %v", kerr.ErrorForCode(p.ErrorCode))
	}

	for _, bad := range []string{"0", "-1", "2147483648", "big"} {
		resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &bad}}, "capped")
		if err == nil {
			err = resps[0].Err
		}
		if !errors.Is(err, kerr.InvalidConfig) {
			t.Errorf("max.message.bytes=%s: %v, want INVALID_CONFIG", bad, err)
		}
	}
}

func topicInfo(t *testing.T, l *replog.Log, name string) replog.TopicInfo {
	t.Helper()
	topic, err := l.Topic(name)
	if err != nil {
		t.Fatal(err)
	}
	return topic.Info()
}

func TestCreatePartitions(t *testing.T) {
	for _, v := range adminVersions {
		t.Run(v.name, func(t *testing.T) {
			l := openLog(t)
			srv := listen(t, l, nil)
			adm := kadm.NewClient(newClient(t, srv, v.opts...))
			ctx := testCtx(t)
			if _, err := adm.CreateTopic(ctx, 1, -1, nil, "grow"); err != nil {
				t.Fatal(err)
			}
			check := func(rs kadm.CreatePartitionsResponses, err error) error {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				r, err := rs.On("grow", nil)
				if err != nil {
					t.Fatal(err)
				}
				return r.Err
			}
			if err := check(adm.UpdatePartitions(ctx, 3, "grow")); err != nil {
				t.Fatal(err)
			}
			if err := check(adm.CreatePartitions(ctx, 1, "grow")); err != nil {
				t.Fatal(err)
			}
			if got := topicInfo(t, l, "grow").Partitions; got != 4 {
				t.Fatalf("%d partitions, want 4", got)
			}
			for _, n := range []int{2, 4} {
				if err := check(adm.UpdatePartitions(ctx, n, "grow")); !errors.Is(err, kerr.InvalidPartitions) {
					t.Fatalf("to %d partitions: %v, want INVALID_PARTITIONS", n, err)
				}
			}
			if err := check(adm.ValidateCreatePartitions(ctx, 1, "grow")); err != nil {
				t.Fatal(err)
			}
			if got := topicInfo(t, l, "grow").Partitions; got != 4 {
				t.Fatalf("%d partitions after validate-only, want 4", got)
			}

			// A client produces to a new partition.
			cl := newClient(t, srv, append(v.opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "grow", Partition: 3, Value: []byte("x")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			ends, err := adm.ListEndOffsets(ctx, "grow")
			if err != nil {
				t.Fatal(err)
			}
			if o, _ := ends.Lookup("grow", 3); o.Offset != 1 {
				t.Fatalf("partition 3 ends at %d, want 1", o.Offset)
			}
		})
	}
}

func TestDeleteRecords(t *testing.T) {
	for _, v := range adminVersions {
		t.Run(v.name, func(t *testing.T) {
			l := openLog(t)
			srv := listen(t, l, nil)
			adm := kadm.NewClient(newClient(t, srv, v.opts...))
			ctx := testCtx(t)
			if _, err := adm.CreateTopic(ctx, 2, -1, nil, "trim"); err != nil {
				t.Fatal(err)
			}
			cl := newClient(t, srv, append(v.opts, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))...)
			for i := range 10 {
				// One batch each: whole batches go.
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "trim", Value: fmt.Appendf(nil, "%d", i)}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			var os kadm.Offsets
			os.Add(kadm.Offset{Topic: "trim", Partition: 0, At: 6})
			os.Add(kadm.Offset{Topic: "trim", Partition: 1, At: 0})
			resps, err := adm.DeleteRecords(ctx, os)
			if err != nil {
				t.Fatal(err)
			}
			if r, _ := resps.Lookup("trim", 0); r.Err != nil || r.LowWatermark != 6 {
				t.Fatalf("partition 0: %+v", r)
			}
			if r, _ := resps.Lookup("trim", 1); r.Err != nil || r.LowWatermark != 0 {
				t.Fatalf("partition 1: %+v", r)
			}
			starts, err := adm.ListStartOffsets(ctx, "trim")
			if err != nil {
				t.Fatal(err)
			}
			if o, _ := starts.Lookup("trim", 0); o.Offset != 6 {
				t.Fatalf("log start %d, want 6", o.Offset)
			}
			// Past the high watermark: refused, nothing changed.
			os = kadm.Offsets{}
			os.Add(kadm.Offset{Topic: "trim", Partition: 0, At: 11})
			if resps, err = adm.DeleteRecords(ctx, os); err != nil {
				t.Fatal(err)
			}
			if r, _ := resps.Lookup("trim", 0); !errors.Is(r.Err, kerr.OffsetOutOfRange) {
				t.Fatalf("past the end: %+v", r)
			}
			// An unknown partition (kadm would not send it: pinned to
			// the broker here) gets its own error.
			req := kmsg.NewPtrDeleteRecordsRequest()
			rt := kmsg.NewDeleteRecordsRequestTopic()
			rt.Topic = "trim"
			for _, p := range []int32{7, 1} {
				rp := kmsg.NewDeleteRecordsRequestTopicPartition()
				rp.Partition, rp.Offset = p, 0
				rt.Partitions = append(rt.Partitions, rp)
			}
			req.Topics = append(req.Topics, rt)
			raw, err := req.RequestWith(ctx, cl.Broker(int(l.NodeID())))
			if err != nil {
				t.Fatal(err)
			}
			if ps := raw.Topics[0].Partitions; ps[0].ErrorCode != kerr.UnknownTopicOrPartition.Code || ps[1].ErrorCode != 0 {
				t.Fatalf("unknown and known partition: %+v", ps)
			}
			// -1 is the high watermark: everything goes.
			os = kadm.Offsets{}
			os.Add(kadm.Offset{Topic: "trim", Partition: 0, At: -1})
			if resps, err = adm.DeleteRecords(ctx, os); err != nil {
				t.Fatal(err)
			}
			if r, _ := resps.Lookup("trim", 0); r.Err != nil || r.LowWatermark != 10 {
				t.Fatalf("to the end: %+v", r)
			}
		})
	}
}

func TestDescribeCluster(t *testing.T) {
	l := openLog(t)
	srv := listen(t, l, nil)
	cl := newClient(t, srv)
	ctx := testCtx(t)
	// Every version, on the wire (kgo would pick the newest).
	c := dial(t, srv)
	for _, version := range []int16{0, 1, 2} {
		req := kmsg.NewPtrDescribeClusterRequest()
		req.Version = version
		req.EndpointType = 1
		if _, err := c.Write(frame(req, int32(version))); err != nil {
			t.Fatal(err)
		}
		corr, body := readResponse(t, c)
		r := req.ResponseKind().(*kmsg.DescribeClusterResponse)
		if corr != int32(version) || len(body) == 0 {
			t.Fatalf("v%d: correlation %d, %d bytes", version, corr, len(body))
		}
		if err := r.ReadFrom(body[1:]); err != nil { // after the header's tags
			t.Fatalf("v%d: %v", version, err)
		}
		if r.ErrorCode != 0 || len(r.Brokers) != 1 || r.Brokers[0].NodeID != int32(l.NodeID()) ||
			fmt.Sprintf("%s:%d", r.Brokers[0].Host, r.Brokers[0].Port) != srv.Addr().String() || r.ControllerID != int32(l.NodeID()) {
			t.Fatalf("v%d: %+v", version, r)
		}
	}
	req := kmsg.NewPtrDescribeClusterRequest()
	req.EndpointType = 2 // controllers
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != kerr.UnsupportedEndpointType.Code {
		t.Fatalf("controllers: error %d", resp.ErrorCode)
	}
	// kadm lists the node through Metadata; the same answer.
	brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
	if err != nil || len(brokers) != 1 {
		t.Fatalf("%v %+v", err, brokers)
	}
}
