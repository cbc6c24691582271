package replogkafka

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/replog/replog/replication"
)

// A listener on a cluster.
//
// Every node may run a listener. Each one registers the address it
// advertises in the metadata Raft group (replication.Metadata.KafkaBrokers),
// so that any node's Metadata answer lists every broker (Kafka's node id is
// replog's node id) and sends a client to the node leading each partition,
// as this node sees the leadership of its replicas. A Produce, Fetch or
// ListOffsets that reaches a node not leading the partition gets
// NOT_LEADER_OR_FOLLOWER, and the client asks for metadata again.
//
// Kafka's consumer groups have one coordinator for the whole cluster: the
// node leading replog's groups Raft group, where their offsets are
// committed. Every node's FindCoordinator names it, and the other nodes
// answer the coordinator's APIs with NOT_COORDINATOR. When the groups
// group's leadership moves, the old coordinator drops the groups it held
// (see coordinator.resign) and their members join again at the new one.

// errNotLeader: a partition's request reached a node that does not lead
// it.
var errNotLeader = errors.New("replogkafka: this node does not lead the partition")

// broker is a node's listener, as Metadata lists it.
type broker struct {
	id   int32
	host string
	port int32
}

// kafkaID is a replog node id as a Kafka node id; ok is false for ids past
// what Kafka's int32 holds.
func kafkaID(id uint64) (int32, bool) {
	if id == 0 || id > math.MaxInt32 {
		return -1, false
	}
	return int32(id), true
}

// splitAddr splits host:port, as Metadata gives them to clients.
func splitAddr(addr string) (string, int32, bool) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, false
	}
	return host, int32(port), true
}

// brokers lists the registered listeners by node id, this one always
// (its own registration may not have applied yet), with this node's
// current address.
func (s *Server) brokers() []broker {
	self := broker{id: s.nodeID(), host: s.host, port: s.port}
	out := []broker{self}
	for id, addr := range s.node.Metadata().KafkaBrokers {
		kid, ok := kafkaID(id)
		if !ok || kid == self.id {
			continue
		}
		if host, port, ok := splitAddr(addr); ok {
			out = append(out, broker{id: kid, host: host, port: port})
		}
	}
	slices.SortFunc(out, func(a, b broker) int { return cmp.Compare(a.id, b.id) })
	return out
}

// findBroker finds node id among bs.
func findBroker(bs []broker, id uint64) (broker, bool) {
	kid, ok := kafkaID(id)
	if !ok {
		return broker{}, false
	}
	i := slices.IndexFunc(bs, func(b broker) bool { return b.id == kid })
	if i < 0 {
		return broker{}, false
	}
	return bs[i], true
}

// controllerID is what Metadata and DescribeCluster name as the
// controller: the node leading the metadata Raft group when it runs a
// listener, else this node. Admin requests go there, though any node
// serves them (they go through Raft).
func (s *Server) controllerID(bs []broker) int32 {
	l, _ := s.node.LeaderState(replication.MetaShardID)
	if b, ok := findBroker(bs, l); ok {
		return b.id
	}
	return s.nodeID()
}

// partitionLeader is the leader Metadata gives for a partition: the node
// leading its Raft group, as this node's replica sees it, if that node
// runs a listener; else -1 with LEADER_NOT_AVAILABLE, which clients retry.
//
// A node that serves no replica of the partition does not follow its
// leadership: it names itself, as a single node does, and the first
// request makes it join the group as a non-voting replica (see
// replog.Topic), after which it knows the leader and redirects clients
// with NOT_LEADER_OR_FOLLOWER.
func (s *Server) partitionLeader(pm replication.PartitionMeta, bs []broker) (int32, int16) {
	if !pm.Serves(s.node.ID()) {
		return s.nodeID(), 0
	}
	if b, ok := findBroker(bs, s.node.LeaderNode(pm.Shard)); ok {
		return b.id, 0
	}
	return -1, kerr.LeaderNotAvailable.Code
}

// replicaIDs converts node ids for Metadata, leaving out any Kafka cannot
// name.
func replicaIDs(nodes []uint64) []int32 {
	out := make([]int32, 0, len(nodes))
	for _, n := range nodes {
		if id, ok := kafkaID(n); ok {
			out = append(out, id)
		}
	}
	return out
}

// checkLeader returns errNotLeader unless this node leads rp's group, as
// this node sees it. A follower could serve reads up to its applied high
// watermark (all of it committed), but it may lag what the leader has
// already acknowledged to the producer, and Kafka clients fetch from the
// leader unless the broker offers KIP-392's follower fetching, which this
// listener does not.
func (s *Server) checkLeader(topic string, part int32, rp *replication.Partition) error {
	switch l := s.node.LeaderNode(rp.Shard); l {
	case s.node.ID():
		return nil
	case 0:
		return fmt.Errorf("%w: %s/%d has no known leader", errNotLeader, topic, part)
	default:
		return fmt.Errorf("%w: %s/%d is led by node %d", errNotLeader, topic, part, l)
	}
}

// registerRetry is how long the listener waits between attempts to
// register its address while the metadata group has no quorum.
const registerRetry = time.Second

// register records this listener's advertised address in the cluster
// metadata, retrying until it succeeds or the listener closes. Close
// removes nothing: a node that is down stays listed, and registers again
// (perhaps elsewhere) when its listener next starts.
func (s *Server) register(addr string) {
	defer s.wg.Done()
	for {
		ctx, cancel := requestCtx(s.ctx, 0)
		err := s.node.RegisterKafkaBroker(ctx, addr)
		cancel()
		if err == nil || s.ctx.Err() != nil {
			return
		}
		if errors.Is(err, replication.ErrInvalid) {
			s.log.Error("replogkafka: the cluster refused this listener's address; other nodes will not send clients here", "addr", addr, "err", err)
			return
		}
		s.log.Warn("replogkafka: registering this listener's address failed; retrying", "addr", addr, "err", err, "retry_in", registerRetry)
		t := time.NewTimer(registerRetry)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
	}
}

// coordinatorNode is the node coordinating every Kafka group: the leader
// of replog's groups Raft group (0 while none is known). It is the node
// whose proposals of commits take no forwarding, and the one every node
// agrees on once an election settles; clients that asked while two nodes
// disagreed meet NOT_COORDINATOR at the wrong one and ask again.
func (s *Server) coordinatorNode() uint64 {
	l, _ := s.node.LeaderState(replication.GroupsShardID)
	return l
}

// coordinatorCode is 0 when this node coordinates Kafka groups, else the
// error its group APIs answer: NOT_COORDINATOR when another node does,
// COORDINATOR_NOT_AVAILABLE during an election. Both make clients look
// the coordinator up again.
func (s *Server) coordinatorCode() int16 {
	switch l := s.coordinatorNode(); l {
	case s.node.ID():
		return 0
	case 0:
		return kerr.CoordinatorNotAvailable.Code
	}
	return kerr.NotCoordinator.Code
}

// watchCoordinator drops the groups held here when another node becomes
// the coordinator, so that their waiting requests are answered at once
// and no stale membership is left for a later term. A leaderless moment
// of an election drops nothing: the same node is often elected again.
func (s *Server) watchCoordinator() {
	defer s.wg.Done()
	for {
		l, changed := s.node.LeaderState(replication.GroupsShardID)
		if l != 0 && l != s.node.ID() && s.groups.resign() {
			s.log.Info("replogkafka: node is no longer the group coordinator; its groups join again there", "coordinator", l)
		}
		if l != 0 && l != s.node.ID() {
			s.shares.resign()
		}
		select {
		case <-changed:
		case <-s.ctx.Done():
			return
		}
	}
}
