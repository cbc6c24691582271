// Command replog-bench measures replog in the manner of Kafka's
// producer-perf-test: produce throughput with asynchronous producers,
// synchronous Produce latency, consume throughput and peak RSS, on data on
// disk in a temporary directory (1 node, or 3 nodes in one process), and
// the bytes the records take in the store and on disk. With -idle it then
// closes the nodes, reopens them in a new process, and measures the time
// to open and the CPU and memory of the idle nodes. With -records 0
// nothing is produced, so that -topics 10 -partitions 100 -records 0
// -idle 30s measures a node with 1,000 empty partitions.
// With -compact-keys it measures instead produce throughput to a compacted
// topic without and with Log.Compact running in a loop.
//
//	go run ./cmd/replog-bench -records 1000000 -size 100 -replicas 3 -json
//	go run ./cmd/replog-bench -records 100000 -payload json -codec zstd
//	go run ./cmd/replog-bench -topics 10 -partitions 100 -records 0 -idle 30s
//	go run ./cmd/replog-bench -compact-keys 10000 -size 100
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/replog/replog/internal/expert"
	"github.com/replog/replog/replication"

	"github.com/replog/replog"
)

// config is the command's flags for a produce/consume run.
type config struct {
	records, size, partitions, replicas, topics int
	codec, acks, payload                        string
	producers, latencyN                         int
	cpuprofile, consumeProfile, memprofile      string
	idle                                        time.Duration
	idleProfile, idleMemProfile                 string
	kafka                                       bool
}

type result struct {
	Records            int     `json:"records"`
	Size               int     `json:"size"`
	Partitions         int     `json:"partitions"`
	Replicas           int     `json:"replicas"`
	Codec              string  `json:"codec"`
	Acks               string  `json:"acks"`
	Producers          int     `json:"producers"`
	ProduceRecordsPerS float64 `json:"produce_records_per_s"`
	ProduceMBPerS      float64 `json:"produce_mb_per_s"`
	ProduceP50Ms       float64 `json:"produce_p50_ms"`
	ProduceP99Ms       float64 `json:"produce_p99_ms"`
	ProduceP999Ms      float64 `json:"produce_p999_ms"`
	ConsumeRecordsPerS float64 `json:"consume_records_per_s"`
	ConsumeMBPerS      float64 `json:"consume_mb_per_s"`
	PeakRSSBytes       int64   `json:"peak_rss_bytes"`
	ProducePeakRSS     int64   `json:"produce_peak_rss_bytes"`

	Topics  int    `json:"topics"`
	Payload string `json:"payload"`
	// ValueBytes is the mean value size (json values vary around -size).
	ValueBytes float64 `json:"value_bytes"`
	// CreateSeconds is the time CreateTopic took for all the topics.
	CreateSeconds float64 `json:"create_seconds"`

	// The store and the disk at the end of the produce phase, before the
	// -latency-records (StoredRecords is -records then, unless -acks none
	// left some unapplied), on node 1. StoredBytes sums the partitions'
	// Stats StoredBytes; StoreBytes and RaftBytes are Stats.Node's (the
	// files under the record store and the Raft logs and snapshots). The
	// per-record figures are 0 when nothing was produced.
	StoredRecords        int64   `json:"stored_records"`
	StoredBytes          int64   `json:"stored_bytes"`
	StoredBytesPerRecord float64 `json:"stored_bytes_per_record"`
	StoreBytes           int64   `json:"store_bytes"`
	RaftBytes            int64   `json:"raft_bytes"`
	DiskBytesPerRecord   float64 `json:"disk_bytes_per_record"`

	// With -idle (all 0 without): the time to close the nodes, then what
	// a new process measured when it reopened them (idleResult).
	CloseSeconds float64 `json:"close_seconds"`
	idleResult
}

// idleResult is what the -idle phase measures, in a process of its own
// (see reopenIdle): the time from opening the nodes until every partition
// answers Offsets on every node (OpenSeconds) and has a leader as node 1
// knows it (OpenLeadersSeconds, from the same start), then IdleSeconds
// without any request: the process's CPU (user+sys) over that window in
// cores, and at its end the current RSS, the Go heap in use and node 1's
// files, then the live heap after a collection.
type idleResult struct {
	OpenSeconds        float64 `json:"open_seconds"`
	OpenLeadersSeconds float64 `json:"open_leaders_seconds"`
	IdleSeconds        float64 `json:"idle_seconds"`
	IdleCPUCores       float64 `json:"idle_cpu_cores"`
	IdleRSSBytes       int64   `json:"idle_rss_bytes"`
	IdleGoHeapBytes    int64   `json:"idle_go_heap_bytes"` // HeapInuse: live and not yet collected
	IdleGoLiveBytes    int64   `json:"idle_go_live_bytes"` // HeapAlloc after a collection
	IdleStoreBytes     int64   `json:"idle_store_bytes"`
	IdleRaftBytes      int64   `json:"idle_raft_bytes"`
	// IdleDiskBytesPerRecord divides those files by the records stored
	// (with the -latency-records).
	IdleDiskBytesPerRecord float64 `json:"idle_disk_bytes_per_record"`
}

func main() {
	var c config
	flag.IntVar(&c.records, "records", 1_000_000, "records to produce; 0: none (no produce, latency or consume phase)")
	flag.IntVar(&c.size, "size", 100, "value size in bytes (about, for -payload json)")
	flag.IntVar(&c.partitions, "partitions", 4, "partitions of each topic")
	flag.IntVar(&c.topics, "topics", 1, "topics; records go to them in turn (the topic is bench, or bench-0 ... with more than one)")
	flag.DurationVar(&raftRTT, "rtt", 0, "the nodes' Options.RTT (0: replog's default)")
	flag.Int64Var(&memoryBytes, "memory-bytes", 0, "each node's Options.MemoryBytes (0: replog's default)")
	flag.IntVar(&c.replicas, "replicas", 1, "1 (one node) or 3 (three nodes in this process)")
	flag.StringVar(&c.codec, "codec", "none", "compression: none, gzip, snappy, lz4, zstd")
	flag.StringVar(&c.acks, "acks", "all", "all (quorum fsynced) or none (fire and forget)")
	flag.BoolVar(&c.kafka, "kafka", false, "produce and consume through Kafka's protocol: node 1 serves a listener on a loopback port and franz-go's client does the phases (one producer; -acks all)")
	flag.StringVar(&c.payload, "payload", "text", "values: text (one value, a repeated alphabet), zeros, json (distinct orders of about -size bytes), random (distinct, incompressible)")
	flag.IntVar(&c.producers, "producers", 1, "producer handles producing concurrently (each has one per topic)")
	flag.IntVar(&c.latencyN, "latency-records", 2000, "synchronous Produce calls timed for latency")
	asJSON := flag.Bool("json", false, "print one JSON object")
	flag.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the produce phase")
	flag.StringVar(&c.consumeProfile, "consume-cpuprofile", "", "write a CPU profile of the consume phase")
	flag.StringVar(&c.memprofile, "memprofile", "", "write a heap profile (allocations) at the end of the produce phase")
	flag.DurationVar(&c.idle, "idle", 0, "if > 0: after the run, close the nodes, reopen them in a new process (timed) and measure its CPU and RSS while idle for this long")
	flag.StringVar(&c.idleProfile, "idle-cpuprofile", "", "with -idle: write a CPU profile of the idle window")
	flag.StringVar(&c.idleMemProfile, "idle-memprofile", "", "with -idle: write a heap profile (in use) at the end of the idle window")
	compactKeys := flag.Int("compact-keys", 0, "if > 0: produce records keyed over this many keys to a compacted topic, and compare produce throughput "+
		"without and with Log.Compact looping, in alternating windows (-records, -acks, -latency-records, -topics, -payload, -idle, -consume-cpuprofile and -memprofile are then unused; -cpuprofile covers the windows)")
	compactWindow := flag.Duration("compact-window", 5*time.Second, "with -compact-keys: the length of one window")
	compactRounds := flag.Int("compact-rounds", 2, "with -compact-keys: pairs of windows (without, then with compaction)")
	txnSizes := flag.String("txn", "", "if set (e.g. 1,10,100): measure transactional sessions committing this many records per transaction, beside idempotent producers flushing as often, over -txn-window each, with -producers sessions")
	txnWindow := flag.Duration("txn-window", 5*time.Second, "with -txn: the length of each window")
	reopenDir := flag.String("reopen", "", "internal: reopen the nodes in this directory, measure the -idle phase, print it as JSON")
	reopenPeers := flag.String("reopen-peers", "", "internal: with -reopen, the nodes' in-process addresses as JSON")
	flag.Parse()
	if *reopenDir != "" {
		if err := reopenChild(c, *reopenDir, *reopenPeers); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *txnSizes != "" {
		sizes, err := parseSizes(*txnSizes)
		if err != nil {
			log.Fatal(err)
		}
		r, err := runTxn(sizes, c.size, c.partitions, c.replicas, c.producers, *txnWindow)
		if err != nil {
			log.Fatal(err)
		}
		if *asJSON {
			json.NewEncoder(os.Stdout).Encode(r)
			return
		}
		printTxn(r)
		return
	}
	if *compactKeys > 0 {
		r, err := runCompact(*compactKeys, c.size, c.partitions, c.replicas, c.codec, c.producers, *compactWindow, *compactRounds, c.cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if *asJSON {
			json.NewEncoder(os.Stdout).Encode(r)
			return
		}
		printCompact(r)
		return
	}
	r, err := run(c)
	if err != nil {
		log.Fatal(err)
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	printResult(r)
}

func printResult(r result) {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	topics := ""
	if r.Topics > 1 {
		topics = fmt.Sprintf("%d topics of ", r.Topics)
	}
	fmt.Printf("%s%d partitions, %d replicas, codec %s: created in %.2f s\n", topics, r.Partitions, r.Replicas, r.Codec, r.CreateSeconds)
	if r.Records > 0 {
		fmt.Printf("produce: %d records of %d B (%s, %.0f B on average), acks %s, %d producers\n",
			r.Records, r.Size, r.Payload, r.ValueBytes, r.Acks, r.Producers)
		fmt.Printf("  %.0f records/s, %.1f MB/s\n", r.ProduceRecordsPerS, r.ProduceMBPerS)
		fmt.Printf("sync Produce latency: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n", r.ProduceP50Ms, r.ProduceP99Ms, r.ProduceP999Ms)
		fmt.Printf("consume: %.0f records/s, %.1f MB/s\n", r.ConsumeRecordsPerS, r.ConsumeMBPerS)
	}
	if r.Records > 0 {
		fmt.Printf("stored after the produce phase (node 1, %d records): %d B in the store, %.1f B/record; on disk %.1f MiB store + %.1f MiB Raft, %.1f B/record\n",
			r.StoredRecords, r.StoredBytes, r.StoredBytesPerRecord, mib(r.StoreBytes), mib(r.RaftBytes), r.DiskBytesPerRecord)
	} else {
		fmt.Printf("on disk (node 1): %.1f MiB store + %.1f MiB Raft\n", mib(r.StoreBytes), mib(r.RaftBytes))
	}
	if r.Records > 0 {
		fmt.Printf("peak RSS: %.1f MiB (%.1f MiB by the end of the produce phase)\n", mib(r.PeakRSSBytes), mib(r.ProducePeakRSS))
	} else {
		fmt.Printf("peak RSS: %.1f MiB\n", mib(r.PeakRSSBytes))
	}
	if r.IdleSeconds > 0 {
		fmt.Printf("reopen in a new process: closed in %.2f s; open and every partition readable in %.2f s, with a leader in %.2f s\n",
			r.CloseSeconds, r.OpenSeconds, r.OpenLeadersSeconds)
		fmt.Printf("idle %.0f s: %.3f cores, RSS %.1f MiB (Go heap in use %.1f MiB, %.1f MiB live); on disk %.1f MiB store + %.1f MiB Raft",
			r.IdleSeconds, r.IdleCPUCores, mib(r.IdleRSSBytes), mib(r.IdleGoHeapBytes), mib(r.IdleGoLiveBytes), mib(r.IdleStoreBytes), mib(r.IdleRaftBytes))
		if r.IdleDiskBytesPerRecord > 0 {
			fmt.Printf(", %.1f B/record", r.IdleDiskBytesPerRecord)
		}
		fmt.Println()
	}
}

func parseCodec(s string) (replog.Compression, error) {
	for _, c := range []replog.Compression{replog.CompressionNone, replog.CompressionGzip, replog.CompressionSnappy, replog.CompressionLZ4, replog.CompressionZstd} {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown codec %q", s)
}

// raftRTT and memoryBytes are -rtt and -memory-bytes: the nodes'
// Options.RTT and Options.MemoryBytes.
var (
	raftRTT     time.Duration
	memoryBytes int64
)

// openNodes opens n nodes; retention, if not 0, is how often their
// partition leaders check retention and compaction. peers are the nodes'
// in-process addresses when n > 1: nil for new ones, or those openNodes
// returned, to reopen the same nodes.
func openNodes(dir string, n int, retention time.Duration, peers map[uint64]string) ([]*replog.Log, map[uint64]string, error) {
	if n == 1 {
		o := replog.Options{RTT: raftRTT, MemoryBytes: memoryBytes}
		expert.Attach(&o, expert.Options{RetentionInterval: retention})
		l, err := replog.Open(dir, &o)
		return []*replog.Log{l}, nil, err
	}
	if peers == nil {
		peers = map[uint64]string{}
		for i := range n {
			peers[uint64(i+1)] = replication.NewInProcessAddress()
		}
	}
	logs := make([]*replog.Log, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &replog.Options{NodeID: uint64(i + 1), Peers: peers, RTT: raftRTT, MemoryBytes: memoryBytes}
			expert.Attach(o, expert.Options{InProcessTransport: true, RetentionInterval: retention})
			logs[i], errs[i] = replog.Open(fmt.Sprintf("%s/node%d", dir, i+1), o)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return logs, peers, err
		}
	}
	return logs, peers, nil
}

// peakRSS reads the process's high-water resident set size (Linux).
func peakRSS() int64 { return procStatus("VmHWM:") }

// currentRSS reads the process's resident set size (Linux).
func currentRSS() int64 { return procStatus("VmRSS:") }

func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
