// Package kafkabridge gives the Kafka listener (package
// github.com/replog/replog/kafka) the low-level access it needs to a
// [replog.Log] without making it part of package replog's API: this node's
// replica of a partition (to read stored batches, wait for applies and
// propose batches that carry a Kafka client's producer id and sequence),
// the node (producer ids, timeouts, the logger), replog's error mapping,
// and the Log's counters (so [replog.Log.Stats] and the metrics adapters
// see what Kafka clients produce, fetch, and do in share groups).
//
// Package replog installs the hooks when it is initialised, as it does for
// package internal/expert: Go offers no other way for a sibling package to
// reach unexported fields, and the hooks are written once, before main
// runs, and never change.
package kafkabridge

import (
	"context"

	"github.com/replog/replog/replication"
)

var (
	// Node returns the replication node of l, a *replog.Log.
	Node func(l any) *replication.Node
	// Partition returns this node's replica of partition i of t, a
	// *replog.Topic, with replog's errors (ErrPartitionNotFound,
	// ErrTopicNotFound, ErrClosed...).
	Partition func(ctx context.Context, t any, i int) (*replication.Partition, error)
	// MapErr turns an error of package replication into replog's
	// sentinels, as replog's own calls return them.
	MapErr func(err error) error
	// Produced counts a batch that a Kafka client produced to partition i
	// of t, a *replog.Topic, in the Log's stats as replog's producers
	// count theirs: records and payload bytes, or a failed batch.
	Produced func(t any, i int, records, bytes int, err error)
	// Fetched counts records that a Kafka client fetched from partition i
	// of t, a *replog.Topic.
	Fetched func(t any, i int, records, bytes int)
	// ShareCounted counts n records of partition i of topic that a Kafka
	// share group member of l, a *replog.Log, acquired, or acknowledged
	// as the share coordinator applied it, as replog's share consumers
	// count theirs.
	ShareCounted func(l any, topic string, i int, kind ShareKind, n int)
)

// ShareKind is what a share group member did with records, for
// ShareCounted. ShareAccepted, ShareReleased and ShareRejected are Kafka's
// acknowledge types (KIP-932): the listener converts them as they come.
type ShareKind int8

const (
	// ShareAcquired: records handed to the member.
	ShareAcquired ShareKind = 0
	// ShareAccepted, ShareReleased, ShareRejected: records acknowledged
	// so, or, for ShareRejected, given up after the delivery limit.
	ShareAccepted ShareKind = 1
	ShareReleased ShareKind = 2
	ShareRejected ShareKind = 3
)
