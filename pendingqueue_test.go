package replog

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The ring keeps records in order through wrap-around and growth while
// wrapped, and clears what it pops (no stale references for the GC).
func TestPendingQueue(t *testing.T) {
	var q pendingQueue
	next, want := 0, 0
	push := func(k int) {
		for range k {
			q.push(pending{size: next})
			next++
		}
	}
	pop := func(k int) {
		got := q.pop(nil, k)
		require.Len(t, got, k)
		for _, pd := range got {
			require.Equal(t, want, pd.size)
			want++
		}
	}
	push(50)
	pop(40)  // head at 40 of 64
	push(50) // wraps: 60 queued
	push(10) // grows while wrapped: 70 queued
	require.Equal(t, 70, q.len())
	require.Equal(t, want, q.at(0).size)
	pop(70)
	require.Zero(t, q.len())
	for i := range q.buf {
		require.Equal(t, pending{}, q.buf[i], "slot %d cleared", i)
	}
	for range 100 { // steady state reuses the array
		push(30)
		pop(30)
	}
	require.Len(t, q.buf, 128)
}
