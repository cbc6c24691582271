// Package expert carries replog's test plumbing (the in-process transport,
// storage that outlives a node, crash simulation) to replogtest and
// cmd/replog-bench without making it part of package replog's API.
//
// Package replog installs the two hooks when it is initialised, as grpc
// does with its internal package: Go offers no other way for a sibling
// package to reach an unexported field, and the hooks are written once,
// before main runs, and never change.
package expert

import (
	"time"

	"github.com/replog/replog/replication"
)

// Options are the expert settings of one node.
type Options struct {
	// InProcessTransport makes the node talk over in-process channels
	// instead of TCP; Peers addresses are then names unique in the process
	// (see [replication.NewInProcessAddress]).
	InProcessTransport bool
	// Network, with InProcessTransport, lets tests cut links between the
	// nodes sharing it. Nil: fully connected.
	Network *replication.Network
	// Storage, with InMemory, keeps the node's data in memory beyond Close,
	// so the node can be opened again from it and can simulate a crash.
	Storage *replication.MemStorage
	// RetentionInterval is how often partition leaders check retention
	// limits. Zero: [replication.DefaultRetentionInterval] (5s).
	RetentionInterval time.Duration
	// AfterTxnDecision is called on the node right after it recorded a
	// transaction's decision, before it writes the markers (see
	// replication.Config.AfterTxnDecision).
	AfterTxnDecision func(txnID string)
}

var (
	// Attach sets the expert options of opts, a *replog.Options.
	Attach func(opts any, x Options)
	// Abort makes l, a *replog.Log, stop sending at once, as a power loss
	// would: its producers fail what they buffered instead of sending it.
	Abort func(l any)
)
