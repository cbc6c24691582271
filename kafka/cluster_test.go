package replogkafka_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
	"github.com/replog/replog/replogtest"
)

// kafkaCluster is an in-memory replog cluster with a listener on each
// node.
type kafkaCluster struct {
	t     *testing.T
	c     *replogtest.Cluster
	srvs  []*replogkafka.Server // nil while a node is down
	addrs []string
}

func newKafkaCluster(t *testing.T, n int) *kafkaCluster {
	t.Helper()
	kc := &kafkaCluster{t: t, c: replogtest.NewCluster(t, n), srvs: make([]*replogkafka.Server, n), addrs: make([]string, n)}
	for i := range n {
		kc.listen(i, "127.0.0.1:0")
	}
	// Registered after the cluster's Close: runs before it.
	t.Cleanup(func() {
		for _, srv := range kc.srvs {
			if srv != nil {
				srv.Close()
			}
		}
	})
	// Every node lists every broker once their registrations applied.
	for i := range n {
		kc.eventually(func() bool { return len(kc.metadata(i).Brokers) == n }, "node %d lists %d brokers", i, n)
	}
	return kc
}

// listen starts node i's listener on addr, or on a free port if addr is
// taken.
func (kc *kafkaCluster) listen(i int, addr string) {
	kc.t.Helper()
	srv, err := replogkafka.Listen(kc.c.Log(i), addr, nil)
	if err != nil && addr != "127.0.0.1:0" {
		kc.t.Logf("listening on %s again: %v; on a new port", addr, err)
		srv, err = replogkafka.Listen(kc.c.Log(i), "127.0.0.1:0", nil)
	}
	require.NoError(kc.t, err)
	kc.srvs[i], kc.addrs[i] = srv, srv.Addr().String()
}

// crash crashes node i and stops its listener.
func (kc *kafkaCluster) crash(i int) {
	kc.c.Crash(i)
	require.NoError(kc.t, kc.srvs[i].Close())
	kc.srvs[i] = nil
}

// restart brings node i back, its listener on its old address.
func (kc *kafkaCluster) restart(i int) {
	kc.c.Restart(i)
	kc.listen(i, kc.addrs[i])
}

// eventually polls cond, on the test's goroutine, until it holds.
func (kc *kafkaCluster) eventually(cond func() bool, format string, args ...any) {
	kc.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			kc.t.Fatalf("timed out waiting: "+format, args...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// request sends req to node i's listener on a connection of its own and
// decodes the response into resp. Versions without flexible headers only.
func (kc *kafkaCluster) request(i int, req kmsg.Request, resp kmsg.Response) {
	kc.t.Helper()
	require.False(kc.t, req.IsFlexible(), "use a version without tagged header fields")
	c, err := net.Dial("tcp", kc.addrs[i])
	require.NoError(kc.t, err)
	defer c.Close()
	_, err = c.Write(frame(req, 1))
	require.NoError(kc.t, err)
	_, body := readResponse(kc.t, c)
	resp.SetVersion(req.GetVersion())
	require.NoError(kc.t, resp.ReadFrom(body))
}

func (kc *kafkaCluster) metadata(i int, topics ...string) *kmsg.MetadataResponse {
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 8
	for _, name := range topics { // none: every topic (Topics stays nil)
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	resp := kmsg.NewPtrMetadataResponse()
	kc.request(i, req, resp)
	return resp
}

// createTopic creates a topic of 2 partitions with 3 replicas and waits
// for their leaders.
func (kc *kafkaCluster) createTopic(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := kc.c.Log(0).CreateTopic(ctx, name, replog.TopicConfig{Partitions: 2, Replicas: 3})
	require.NoError(kc.t, err)
	for p := range 2 {
		kc.c.WaitLeader(name, p, 10*time.Second)
	}
}

// Metadata from every node names every broker with its address, each
// partition's Raft leader, its replicas; a Produce or Fetch that reaches
// a follower is refused with NOT_LEADER_OR_FOLLOWER.
func TestClusterMetadataAndWrongNode(t *testing.T) {
	kc := newKafkaCluster(t, 3)
	kc.createTopic("t")
	// The first replica listed is the preferred one, which takes the
	// leadership soon after creation and keeps it.
	var leader int
	kc.eventually(func() bool {
		leaders := map[int32]bool{}
		for i := range 3 {
			m := kc.metadata(i, "t")
			if len(m.Topics) != 1 || len(m.Topics[0].Partitions) != 2 {
				return false
			}
			p := m.Topics[0].Partitions[0]
			if len(p.Replicas) == 0 || p.Leader != p.Replicas[0] {
				return false
			}
			leaders[p.Leader] = true
			leader = int(p.Leader) - 1
		}
		return len(leaders) == 1
	}, "every node names the preferred leader of t/0")
	require.Equal(t, leader, kc.c.Leader("t", 0))
	for i := range 3 {
		m := kc.metadata(i, "t")
		for j, b := range m.Brokers {
			require.Equal(t, int32(j+1), b.NodeID)
			require.Equal(t, kc.addrs[j], net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
		}
		for _, p := range m.Topics[0].Partitions {
			require.ElementsMatch(t, []int32{1, 2, 3}, p.Replicas)
			require.ElementsMatch(t, p.Replicas, p.ISR)
		}
	}

	follower := (leader + 1) % 3
	produce := kmsg.NewPtrProduceRequest()
	produce.Version, produce.Acks, produce.TimeoutMillis = 7, -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "t"
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = rawBatch(-1, -1, -1, "x")
	rt.Partitions = append(rt.Partitions, rp)
	produce.Topics = append(produce.Topics, rt)
	presp := kmsg.NewPtrProduceResponse()
	kc.request(follower, produce, presp)
	require.Equal(t, kerr.NotLeaderForPartition.Code, presp.Topics[0].Partitions[0].ErrorCode)
	presp = kmsg.NewPtrProduceResponse()
	kc.request(leader, produce, presp)
	require.Equal(t, int16(0), presp.Topics[0].Partitions[0].ErrorCode)

	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version, fetch.MaxBytes = 11, 1<<20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "t"
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	ft.Partitions = append(ft.Partitions, fp)
	fetch.Topics = append(fetch.Topics, ft)
	fresp := kmsg.NewPtrFetchResponse()
	kc.request(follower, fetch, fresp)
	require.Equal(t, kerr.NotLeaderForPartition.Code, fresp.Topics[0].Partitions[0].ErrorCode)
	fresp = kmsg.NewPtrFetchResponse()
	kc.request(leader, fetch, fresp)
	require.Equal(t, int16(0), fresp.Topics[0].Partitions[0].ErrorCode)
	require.NotEmpty(t, fresp.Topics[0].Partitions[0].RecordBatches)
}

// Every node names the same group coordinator; the others answer the
// group APIs with NOT_COORDINATOR; members that found the cluster through
// different nodes form one group.
func TestClusterGroupCoordinator(t *testing.T) {
	kc := newKafkaCluster(t, 3)
	kc.createTopic("t")
	coordinator := int32(-1)
	kc.eventually(func() bool {
		ids := map[int32]bool{}
		for i := range 3 {
			req := kmsg.NewPtrFindCoordinatorRequest()
			req.Version, req.CoordinatorKey = 2, "g"
			resp := kmsg.NewPtrFindCoordinatorResponse()
			kc.request(i, req, resp)
			if resp.ErrorCode != 0 {
				return false
			}
			ids[resp.NodeID] = true
			coordinator = resp.NodeID
		}
		return len(ids) == 1
	}, "every node names one coordinator")
	for i := range 3 {
		req := kmsg.NewPtrHeartbeatRequest()
		req.Version, req.Group, req.MemberID, req.Generation = 2, "g", "nobody", 1
		resp := kmsg.NewPtrHeartbeatResponse()
		kc.request(i, req, resp)
		want := kerr.NotCoordinator.Code
		if int32(i+1) == coordinator {
			want = kerr.UnknownMemberID.Code
		}
		require.Equal(t, want, resp.ErrorCode, "node %d (coordinator %d)", i+1, coordinator)
	}

	ctx := testCtx(t)
	a := newMember(t, kc.srvs[0], "g", []string{"t"})
	b := newMember(t, kc.srvs[1], "g", []string{"t"})
	eventually(t, ctx, "one partition each", func() bool { return a.count() == 1 && b.count() == 1 }, a, b)

	// The coordinator crashes: the node elected to lead the groups Raft
	// group takes over, and the members form the group again there.
	kc.crash(int(coordinator) - 1)
	survivor := int(coordinator) % 3
	kc.eventually(func() bool {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.Version, req.CoordinatorKey = 2, "g"
		resp := kmsg.NewPtrFindCoordinatorResponse()
		kc.request(survivor, req, resp)
		return resp.ErrorCode == 0 && resp.NodeID != coordinator
	}, "a new coordinator")
	adm := kadm.NewClient(b.cl)
	eventually(t, ctx, "the group stable again with both members", func() bool {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		d, err := adm.DescribeGroups(dctx, "g")
		if err != nil {
			return false
		}
		g := d["g"]
		return g.Err == nil && g.State == "Stable" && len(g.Members) == 2 && a.count() == 1 && b.count() == 1
	}, a, b)
}

// A franz-go idempotent producer writes unique values to both partitions
// of a 3-replica topic, and a franz-go consumer reads them, through the
// three listeners, while the leader of partition 0 crashes and comes
// back: every acknowledged value is read exactly once, in the order it
// was produced.
func TestClusterLeaderCrash(t *testing.T) {
	kc := newKafkaCluster(t, 3)
	kc.createTopic("t")
	ctx := testCtx(t)
	common := []kgo.Opt{
		kgo.SeedBrokers(kc.addrs...),
		kgo.MetadataMinAge(50 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
		kgo.DialTimeout(time.Second),
	}
	prod, err := kgo.NewClient(append(common,
		kgo.DefaultProduceTopic("t"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProduceRequestTimeout(3*time.Second),
	)...)
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	cons, err := kgo.NewClient(append(common,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"t": {0: kgo.NewOffset().At(0), 1: kgo.NewOffset().At(0)}}),
		kgo.FetchMaxWait(200*time.Millisecond),
	)...)
	require.NoError(t, err)
	t.Cleanup(cons.Close)

	// The producer sends value k to partition k%2, a record a millisecond.
	var (
		mu       sync.Mutex
		acked    = map[string]int32{} // value -> partition
		failed   []error
		nAcked   atomic.Int64
		stop     = make(chan struct{})
		stopOnce sync.Once
		produced = make(chan struct{})
	)
	stopProducing := func() {
		stopOnce.Do(func() { close(stop) })
		<-produced
	}
	defer stopProducing() // if the test fails early
	go func() {
		defer close(produced)
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			r := &kgo.Record{Partition: int32(k % 2), Value: []byte(strconv.Itoa(k))}
			prod.Produce(ctx, r, func(r *kgo.Record, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed = append(failed, err)
					return
				}
				acked[string(r.Value)] = r.Partition
				nAcked.Add(1)
			})
		}
	}()

	// The consumer reads both partitions from the start until told to
	// stop.
	var read [2][]int // values read, per partition, in offset order
	consumed := make(chan struct{})
	cctx, cancelConsuming := context.WithCancel(ctx)
	stopConsuming := func() {
		cancelConsuming()
		<-consumed
	}
	defer stopConsuming() // if the test fails early
	go func() {
		defer close(consumed)
		for cctx.Err() == nil {
			fs := cons.PollFetches(cctx)
			fs.EachError(func(topic string, p int32, err error) {
				if cctx.Err() == nil {
					t.Logf("fetch %s/%d: %v", topic, p, err)
				}
			})
			fs.EachRecord(func(r *kgo.Record) {
				k, _ := strconv.Atoi(string(r.Value))
				mu.Lock()
				read[r.Partition] = append(read[r.Partition], k)
				mu.Unlock()
			})
		}
	}()
	progress := func(n int64, what string) {
		t.Helper()
		from := nAcked.Load()
		kc.eventually(func() bool { return nAcked.Load() >= from+n }, "%d more records acknowledged %s", n, what)
	}

	progress(200, "before the crash")
	victim := kc.c.WaitLeader("t", 0, 10*time.Second)
	t.Logf("crashing node %d, leader of t/0, after %d records", victim+1, nAcked.Load())
	kc.crash(victim)
	progress(200, "with the leader down")
	require.NotEqual(t, victim, kc.c.WaitLeader("t", 0, 10*time.Second))
	kc.restart(victim)
	progress(200, "after the restart")
	// The preferred replica (the first listed) takes the leadership back
	// once it has caught up: a planned move, while records flow.
	preferred := int(kc.metadata(0, "t").Topics[0].Partitions[0].Replicas[0]) - 1
	kc.eventually(func() bool { return kc.c.Leader("t", 0) == preferred }, "node %d leads t/0 again", preferred+1)
	progress(200, "after the leadership moved back")
	stopProducing()
	fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	require.NoError(t, prod.Flush(fctx))

	mu.Lock()
	want := len(acked)
	for _, err := range failed {
		t.Logf("not acknowledged: %v", err) // may or may not be stored; never twice
	}
	mu.Unlock()
	kc.eventually(func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := 0
		for p := range read {
			for _, k := range read[p] {
				if _, ok := acked[strconv.Itoa(k)]; ok {
					seen++
				}
			}
		}
		return seen >= want
	}, "the consumer reads the %d acknowledged records", want)
	stopConsuming()

	mu.Lock()
	defer mu.Unlock()
	seen := map[int]bool{}
	for p := range read {
		for i, k := range read[p] {
			require.Equal(t, int32(p), int32(k%2), "value %d in partition %d", k, p)
			require.False(t, seen[k], "value %d read twice", k)
			seen[k] = true
			if i > 0 {
				require.Greater(t, k, read[p][i-1], "partition %d: value %d after %d", p, k, read[p][i-1])
			}
		}
	}
	for v := range acked {
		k, _ := strconv.Atoi(v)
		require.True(t, seen[k], "acknowledged value %s lost", v)
	}
	t.Logf("%d records acknowledged, %d not, %d read (%d, %d per partition)", len(acked), len(failed), len(seen), len(read[0]), len(read[1]))
}
