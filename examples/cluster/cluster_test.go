package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Three OS processes on loopback over mutual TLS; the partition's leader is
// killed with SIGKILL while another node produces, then restarted from its
// directory. Every acknowledged record must be read back from the restarted
// node at the offset it was acknowledged with, exactly once.
func TestMultiProcessKillLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three processes")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "cluster")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	peers, err := Setup(tmp)
	require.NoError(t, err)
	nodes := make([]*Node, 3)
	start := func(i int) {
		n, err := StartNode(bin, i+1, filepath.Join(tmp, fmt.Sprintf("data%d", i+1)), peers, tmp)
		require.NoError(t, err)
		nodes[i] = n
	}
	for i := range nodes {
		start(i)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				n.Quit()
			}
		}
	})

	_, err = nodes[0].Do("create events 1")
	require.NoError(t, err)
	lines, err := nodes[0].Do("leader events 0")
	require.NoError(t, err)
	leader, err := strconv.Atoi(strings.TrimPrefix(lines[0], "leader "))
	require.NoError(t, err)
	victim := leader - 1
	producer := (victim + 1) % 3

	type ack struct{ part, off string }
	acked := map[string]ack{}
	record := func(lines []string) {
		for _, l := range lines {
			f := strings.Fields(l)
			require.Len(t, f, 4, l)
			acked[f[1]] = ack{f[2], f[3]}
		}
	}
	lines, err = nodes[producer].Do("produce events 200 before")
	require.NoError(t, err)
	record(lines)

	// Kill the leader while the producer is in the middle of a stream.
	type result struct {
		lines []string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		l, err := nodes[producer].Do("produce events 1500 during")
		done <- result{l, err}
	}()
	time.Sleep(150 * time.Millisecond)
	require.NoError(t, nodes[victim].Kill())
	nodes[victim] = nil
	r := <-done
	require.NoError(t, r.err, "producing through a leader crash")
	record(r.lines)

	start(victim)
	lines, err = nodes[producer].Do("produce events 100 after")
	require.NoError(t, err)
	record(lines)

	lines, err = nodes[victim].Do(fmt.Sprintf("consume events %d", len(acked)))
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		a, ok := acked[f[1]]
		require.True(t, ok, "phantom %s", f[1])
		require.Equal(t, a, ack{f[2], f[3]}, "%s moved", f[1])
		require.False(t, seen[f[1]], "duplicate %s", f[1])
		seen[f[1]] = true
	}
	require.Len(t, seen, len(acked), "every acknowledged record is on the restarted node")
	t.Logf("killed leader node %d; %d acknowledged records all read back from it after restart", leader, len(acked))
}
