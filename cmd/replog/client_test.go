package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	replogkafka "github.com/replog/replog/kafka"
)

// broker starts an in-memory node with a listener (topics created on first
// use, as serve does) and returns its address.
func broker(t *testing.T) (string, *replog.Log) {
	t.Helper()
	l, err := replog.Open("", &replog.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srv, err := replogkafka.Listen(l, "127.0.0.1:0", &replogkafka.Options{AutoCreateTopics: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr().String(), l
}

type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs the command line in-process with stdin and
// REPLOG_BROKERS=addr.
func runCmd(t *testing.T, addr, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == "REPLOG_BROKERS" {
			return addr
		}
		return ""
	}
	code := run(ctx, args, env{strings.NewReader(stdin), &out, &errb, getenv})
	return result{code, out.String(), errb.String()}
}

func mustRun(t *testing.T, addr, stdin string, args ...string) string {
	t.Helper()
	r := runCmd(t, addr, stdin, args...)
	if r.code != 0 {
		t.Fatalf("replog %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"nope"}, exitUsage},
		{[]string{"topic"}, exitUsage},
		{[]string{"topic", "create"}, exitUsage},
		{[]string{"topic", "create", "a", "b"}, exitUsage},
		{[]string{"topic", "list", "-nope"}, exitUsage},
		{[]string{"consume", "t", "-from", "middle"}, exitUsage},
		{[]string{"consume", "t", "-n", "-1"}, exitUsage},
		{[]string{"serve"}, exitUsage},
		{[]string{"serve", "-dir", "x", "-log-level", "loud"}, exitUsage},
		{[]string{"topic", "list", "-h"}, exitOK},
		{[]string{"help"}, exitOK},
	} {
		if r := runCmd(t, "127.0.0.1:1", "", tc.args...); r.code != tc.code {
			t.Errorf("replog %q: exit %d, want %d\nstderr: %s", tc.args, r.code, tc.code, r.stderr)
		}
	}
}

func TestUnreachableBrokerExits1(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"topic", "list", "--brokers", "127.0.0.1:1"}, env{strings.NewReader(""), &out, &errb, func(string) string { return "" }})
	if code != exitError {
		t.Fatalf("exit %d, want %d; stderr: %s", code, exitError, errb.String())
	}
}

func TestTopicCommands(t *testing.T) {
	addr, l := broker(t)
	out := mustRun(t, addr, "", "topic", "create", "events", "-partitions", "3", "-config", "retention.ms=3600000")
	if !strings.Contains(out, "created topic events: 3 partition(s)") {
		t.Fatalf("create said %q", out)
	}
	info, err := l.Topic("events")
	if err != nil {
		t.Fatal(err)
	}
	if i := info.Info(); i.Partitions != 3 || i.Retention != time.Hour {
		t.Fatalf("created %+v", i)
	}
	if r := runCmd(t, addr, "", "topic", "create", "events"); r.code != exitError || !strings.Contains(r.stderr, "TOPIC_ALREADY_EXISTS") {
		t.Fatalf("creating again: exit %d, stderr %q", r.code, r.stderr)
	}

	var listed []topicJSON
	if err := json.Unmarshal([]byte(mustRun(t, addr, "", "topic", "list", "-json", "--brokers", addr)), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].Topic != "events" || listed[0].Partitions != 3 || listed[0].Replicas != 1 {
		t.Fatalf("listed %+v", listed)
	}

	mustRun(t, addr, "a\nb\nc\n", "produce", "events")
	var d topicJSON
	if err := json.Unmarshal([]byte(mustRun(t, addr, "", "topic", "describe", "events", "-json")), &d); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, p := range d.Offsets {
		total += p.End - p.Start
	}
	if d.Partitions != 3 || len(d.Offsets) != 3 || total != 3 {
		t.Fatalf("described %+v", d)
	}

	mustRun(t, addr, "", "topic", "delete", "events")
	if _, err := l.Topic("events"); err == nil {
		t.Fatal("topic still there after delete")
	}
	if r := runCmd(t, addr, "", "topic", "delete", "events"); r.code != exitError {
		t.Fatalf("deleting a missing topic: exit %d", r.code)
	}
}

func TestProduceConsume(t *testing.T) {
	addr, _ := broker(t)
	var sum produceSummary
	out := mustRun(t, addr, "k1=one\nk2=two\nthree\n", "produce", "lines", "-key-sep", "=", "-json")
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	if sum.Records != 3 || sum.Failed != 0 || sum.Topic != "lines" {
		t.Fatalf("summary %+v", sum)
	}
	if got := mustRun(t, addr, "", "consume", "lines", "-n", "3"); got != "one\ntwo\nthree\n" {
		t.Fatalf("consumed %q", got)
	}
	if got := mustRun(t, addr, "", "consume", "lines", "-n", "2", "-key-sep", ":"); got != "k1:one\nk2:two\n" {
		t.Fatalf("consumed with keys %q", got)
	}
	if r := runCmd(t, addr, "", "consume", "missing", "-n", "1"); r.code != exitError || !strings.Contains(r.stderr, "no such topic") {
		t.Fatalf("consuming a missing topic: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestConsumeFromLatest: -from latest prints only what is produced after
// the consumer started; an interrupt ends a consumer with exit code 0.
func TestConsumeFromLatest(t *testing.T) {
	addr, _ := broker(t)
	mustRun(t, addr, "old\n", "produce", "t")
	var out, errb bytes.Buffer
	done := make(chan int)
	go func() {
		done <- run(t.Context(), []string{"consume", "t", "-from", "latest", "-n", "1", "-brokers", addr}, env{strings.NewReader(""), &out, &errb, func(string) string { return "" }})
	}()
	// Produce until the consumer, whose start is not observable from
	// here, has read a record.
	deadline := time.After(20 * time.Second)
wait:
	for {
		mustRun(t, addr, "new\n", "produce", "t")
		select {
		case code := <-done:
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			break wait
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("consumer read nothing from latest in 20s")
		}
	}
	if got := out.String(); got != "new\n" {
		t.Fatalf("consumed %q from latest", got)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if code := run(ctx, []string{"consume", "t", "-brokers", addr}, env{strings.NewReader(""), &out, &errb, func(string) string { return "" }}); code != exitOK {
		t.Fatalf("exit %d after an interrupt: %s", code, errb.String())
	}
}

// TestGroupCommands: a group member resumes after what the previous one
// printed and committed; group list and describe show it.
func TestGroupCommands(t *testing.T) {
	addr, l := broker(t)
	mustRun(t, addr, "1\n2\n3\n4\n5\n", "produce", "g-topic")
	if got := mustRun(t, addr, "", "consume", "g-topic", "-group", "g1", "-n", "3"); got != "1\n2\n3\n" {
		t.Fatalf("first member consumed %q", got)
	}
	if got := mustRun(t, addr, "", "consume", "g-topic", "-group", "g1", "-n", "2"); got != "4\n5\n" {
		t.Fatalf("second member consumed %q, want what the first left", got)
	}
	// A share group that accepted 2 records.
	tp, err := l.Topic("g-topic")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := replog.NewShareConsumer(tp, "s1", replog.String(), &replog.ShareConsumerOptions{MaxRecords: 2})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := sc.Poll(t.Context())
	if err != nil || len(recs) != 2 {
		t.Fatalf("share poll: %v, %d records", err, len(recs))
	}
	if err := sc.AckAll(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	var groups []groupJSON
	if err := json.Unmarshal([]byte(mustRun(t, addr, "", "group", "list", "-json")), &groups); err != nil {
		t.Fatal(err)
	}
	if len(groups) != 2 || groups[0].Group != "g1" || groups[0].Type != "classic" || groups[1].Group != "s1" || groups[1].Type != "share" {
		t.Fatalf("listed %+v", groups)
	}
	var sg groupJSON
	if err := json.Unmarshal([]byte(mustRun(t, addr, "", "group", "describe", "s1", "-json")), &sg); err != nil {
		t.Fatal(err)
	}
	if sg.Type != "share" || len(sg.Offsets) != 1 || sg.Offsets[0].Committed != 2 || sg.Offsets[0].Lag != 3 || sg.TotalLag != 3 {
		t.Fatalf("described %+v", sg)
	}
	var g groupJSON
	if err := json.Unmarshal([]byte(mustRun(t, addr, "", "group", "describe", "g1", "-json")), &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Offsets) != 1 || g.Offsets[0].Committed != 5 || g.Offsets[0].Lag != 0 || g.TotalLag != 0 {
		t.Fatalf("described %+v", g)
	}
}

// TestRequireAPIs: a broker lacking an API a command needs gets a
// message naming it (as consume -group and the group commands do against
// a broker without groups).
func TestRequireAPIs(t *testing.T) {
	addr, _ := broker(t)
	cf := clientFlags{brokers: addr}
	adm, err := cf.admin()
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := requireAPIs(t.Context(), adm, "consumer groups", groupAPIs...); err != nil {
		t.Fatal(err)
	}
	// Transactions are served, their admin APIs are not.
	if err := requireAPIs(t.Context(), adm, "transactions", kmsg.FindCoordinator, kmsg.AddPartitionsToTxn, kmsg.EndTxn); err != nil {
		t.Fatal(err)
	}
	err = requireAPIs(t.Context(), adm, "transaction admin", kmsg.FindCoordinator, kmsg.DescribeTransactions, kmsg.ListTransactions)
	if err == nil || !strings.Contains(err.Error(), "does not support transaction admin: it lacks the Kafka APIs DescribeTransactions, ListTransactions") {
		t.Fatalf("err %v", err)
	}
}

// TestBench runs bench twice on one topic: each run reads back exactly
// the records it wrote, and the JSON carries every phase's figures.
func TestBench(t *testing.T) {
	addr, l := broker(t)
	for run := 1; run <= 2; run++ {
		r := runCmd(t, addr, "", "bench", "-records", "3000", "-size", "50", "-partitions", "2",
			"-sync", "20", "-compression", "lz4", "-progress", "1ms", "-json")
		if r.code != 0 {
			t.Fatalf("run %d: exit %d\n%s", run, r.code, r.stderr)
		}
		var res benchResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, r.stdout)
		}
		if res.Partitions != 2 || res.Records != 3000 || res.SyncRecords != 20 || res.ConsumeRecords != 3020 {
			t.Fatalf("run %d: %+v", run, res)
		}
		if res.ProduceRecordsPerS <= 0 || res.ConsumeRecordsPerS <= 0 || res.SyncP50Millis <= 0 || res.SyncP99Millis < res.SyncP50Millis {
			t.Fatalf("run %d: figures missing: %+v", run, res)
		}
		if !strings.Contains(r.stderr, "produce: ") {
			t.Fatalf("run %d: no progress on stderr: %q", run, r.stderr)
		}
	}
	tp, err := l.Topic("replog-bench")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for i := range 2 {
		o, err := tp.Offsets(t.Context(), i)
		if err != nil {
			t.Fatal(err)
		}
		total += o.HighWatermark
	}
	if total != 2*3020 {
		t.Fatalf("the topic holds %d records, want %d", total, 2*3020)
	}
	for _, args := range [][]string{
		{"bench", "-records", "-1"},
		{"bench", "-acks", "some"},
		{"bench", "-compression", "brotli"},
		{"bench", "extra"},
	} {
		if r := runCmd(t, addr, "", args...); r.code != exitUsage {
			t.Fatalf("%q: exit %d, want %d", args, r.code, exitUsage)
		}
	}
}
