package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/replog/replog"
)

// reopenIdle runs this command again, in a new process, to reopen the
// closed nodes in dir (the same options, the same in-process addresses),
// measure the -idle phase and report it. A process of its own, as after a
// restart: in this one, the heap the nodes freed on Close is reused by the
// reopened nodes, and their zeroing makes resident pages that a new
// process leaves untouched (with 1,000 empty partitions, 886 MiB of RSS
// against 238).
func reopenIdle(c config, dir string, peers map[uint64]string, r *idleResult) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-reopen", dir, "-replicas", strconv.Itoa(c.replicas), "-topics", strconv.Itoa(c.topics),
		"-partitions", strconv.Itoa(c.partitions), "-idle", c.idle.String(), "-rtt", raftRTT.String(), "-memory-bytes", strconv.FormatInt(memoryBytes, 10),
		"-idle-cpuprofile", c.idleProfile, "-idle-memprofile", c.idleMemProfile}
	if peers != nil {
		b, err := json.Marshal(peers)
		if err != nil {
			return err
		}
		args = append(args, "-reopen-peers", string(b))
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return err
	}
	return json.Unmarshal(out, r)
}

// reopenChild is the process reopenIdle starts: it opens the nodes in
// dir, waits until they are readable, idles and prints an idleResult.
func reopenChild(c config, dir, peersJSON string) error {
	var peers map[uint64]string
	if peersJSON != "" {
		if err := json.Unmarshal([]byte(peersJSON), &peers); err != nil {
			return fmt.Errorf("-reopen-peers: %w", err)
		}
	}
	names := make([]string, c.topics)
	for i := range names {
		names[i] = topicName(i, c.topics)
	}
	var r idleResult
	ctx := context.Background()
	start := time.Now()
	logs, _, err := openNodes(dir, c.replicas, 0, peers)
	defer func() {
		for _, l := range logs {
			if l != nil {
				l.Close()
			}
		}
	}()
	if err != nil {
		return err
	}
	if err := waitReadable(ctx, logs, names, c.partitions); err != nil {
		return err
	}
	r.OpenSeconds = time.Since(start).Seconds()
	if err := waitLeaders(ctx, logs[0], names, c.partitions); err != nil {
		return err
	}
	r.OpenLeadersSeconds = time.Since(start).Seconds()
	if err := idle(c.idle, c.idleProfile, c.idleMemProfile, logs[0], &r); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// openTimeout bounds the wait for reopened partitions.
const openTimeout = 10 * time.Minute

// waitReadable returns once every partition of the topics answers
// Topic.Offsets on every node: the partition is open and its records are
// readable there.
func waitReadable(ctx context.Context, logs []*replog.Log, topics []string, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	for _, l := range logs {
		for _, name := range topics {
			t, err := l.Topic(name)
			if err != nil {
				return fmt.Errorf("reopen node %d: %w", l.NodeID(), err)
			}
			for i := range partitions {
				if _, err := t.Offsets(ctx, i); err != nil {
					return fmt.Errorf("reopen node %d: %s/%d: %w", l.NodeID(), name, i, err)
				}
			}
		}
	}
	return nil
}

// waitLeaders returns once every partition of the topics has a leader, as
// l knows it: it can be produced to.
func waitLeaders(ctx context.Context, l *replog.Log, topics []string, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	for _, name := range topics {
		t, err := l.Topic(name)
		if err != nil {
			return err
		}
		for i := range partitions {
			for {
				id, err := t.Leader(ctx, i)
				if err != nil {
					return fmt.Errorf("reopen: %s/%d: %w", name, i, err)
				}
				if id != 0 {
					break
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("reopen: %s/%d: no leader: %w", name, i, ctx.Err())
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// idle sleeps for d with the nodes open and no request to them, and
// measures the process's CPU time over that window, then its RSS, its Go
// heap, node 1's files and the live heap after a collection, and writes
// memProfile (the heap in use).
func idle(d time.Duration, profile, memProfile string, node1 *replog.Log, r *idleResult) error {
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	cpu0, start := cpuTime(), time.Now()
	time.Sleep(d)
	cpu, el := cpuTime()-cpu0, time.Since(start)
	if profile != "" {
		pprof.StopCPUProfile()
	}
	r.IdleSeconds = el.Seconds()
	r.IdleCPUCores = cpu.Seconds() / el.Seconds()
	r.IdleRSSBytes = currentRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.IdleGoHeapBytes = int64(ms.HeapInuse)
	s := node1.Stats() // its first call: the disk is measured now
	r.IdleStoreBytes, r.IdleRaftBytes = s.Node.StoreBytes, s.Node.RaftBytes
	if n, _ := storedRecords(s); n > 0 {
		r.IdleDiskBytesPerRecord = float64(r.IdleStoreBytes+r.IdleRaftBytes) / float64(n)
	}
	// What of the heap is live: an idle process may not have collected
	// since it opened (this comes after the RSS, which it does not change).
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r.IdleGoLiveBytes = int64(ms.HeapAlloc)
	if memProfile != "" {
		f, err := os.Create(memProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("heap").WriteTo(f, 0)
	}
	return nil
}

// cpuTime is the user and system CPU time the process used so far.
func cpuTime() time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
