package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/replog/replog/storage"
)

// SyncMetadata waits until every metadata change committed before the call
// is applied locally (a linearizable read through the metadata group).
func (n *Node) SyncMetadata(ctx context.Context) error {
	_, err := n.syncRead(ctx, MetaShardID, nil)
	return err
}

// proposeMeta proposes a metadata command, retrying retriable failures; it
// also returns whether it was proposed more than once. Retrying is safe: a
// repeated create finds its own topic (the callers check), a repeated delete
// finds the topic gone, and a repeated alloc_producer only skips an id.
func (n *Node) proposeMeta(ctx context.Context, c metaCmd) (sm.Result, bool, error) {
	cmd, err := json.Marshal(c)
	if err != nil {
		return sm.Result{}, false, err
	}
	r, attempts, err := n.syncPropose(ctx, MetaShardID, cmd)
	return r, attempts > 1, err
}

// CreateTopic creates a topic and waits until this node's replicas of its
// partitions have a leader.
func (n *Node) CreateTopic(ctx context.Context, name string, partitions, replicas int, settings TopicSettings) (*TopicMeta, error) {
	created := time.Now().UnixNano()
	r, retried, err := n.proposeMeta(ctx, metaCmd{
		Op: opCreateTopic, Name: name, Partitions: partitions, Replicas: replicas,
		TopicSettings: settings, Nodes: n.NodeIDs(), Created: created,
	})
	if err != nil {
		return nil, err
	}
	switch r.Value {
	case metaOK:
	case metaTopicExists:
		if t := n.Metadata().Topics[name]; retried && t != nil && t.Created == created {
			r.Data, _ = json.Marshal(t) // an earlier attempt created it
			break
		}
		return nil, ErrTopicExists
	default:
		return nil, ErrInvalid
	}
	return n.topicResult(ctx, r.Data)
}

// AlterTopic replaces the settings of the topic with id (0: whichever
// topic has the name) and grows it to partitions, placing new partitions
// as creation does; it waits until this node's replicas of them have a
// leader. Shrinking fails with ErrInvalid. Retrying is safe: the command
// sets absolute values.
func (n *Node) AlterTopic(ctx context.Context, name string, id uint64, partitions int, settings TopicSettings) (*TopicMeta, error) {
	r, _, err := n.proposeMeta(ctx, metaCmd{
		Op: opAlterTopic, Name: name, ID: id, Partitions: partitions,
		TopicSettings: settings, Nodes: n.NodeIDs(),
	})
	if err != nil {
		return nil, err
	}
	switch r.Value {
	case metaOK:
	case metaTopicNotFound:
		return nil, ErrTopicNotFound
	default:
		return nil, ErrInvalid
	}
	return n.topicResult(ctx, r.Data)
}

// topicResult decodes the topic a create or alter command answered with
// and waits until this node's replicas of its partitions have a leader.
func (n *Node) topicResult(ctx context.Context, data []byte) (*TopicMeta, error) {
	t := &TopicMeta{}
	if err := json.Unmarshal(data, t); err != nil {
		return nil, fmt.Errorf("%w: topic in a metadata result: %w", storage.ErrCorrupt, err)
	}
	return t, n.waitLeaders(ctx, t.Partitions)
}

// waitLeaders waits until this node's replicas among ps have a leader.
func (n *Node) waitLeaders(ctx context.Context, ps []PartitionMeta) error {
	for _, p := range ps {
		if p.Hosts(n.cfg.NodeID) {
			if err := n.waitLeader(ctx, p.Shard); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteTopic deletes a topic; its partitions are stopped and their data
// removed on every node.
func (n *Node) DeleteTopic(ctx context.Context, name string) error {
	r, retried, err := n.proposeMeta(ctx, metaCmd{Op: opDeleteTopic, Name: name})
	if err != nil {
		return err
	}
	if r.Value == metaTopicNotFound && !retried {
		return ErrTopicNotFound
	}
	return nil
}

// AllocProducerID issues a cluster-unique idempotent producer id.
func (n *Node) AllocProducerID(ctx context.Context) (uint64, error) {
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opAllocProducer})
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(string(r.Data), 10, 64)
}

// RegisterKafkaBroker records addr (host:port) as the address of this
// node's Kafka listener in the cluster metadata (see
// [Metadata.KafkaBrokers]). Registering the address already recorded
// proposes nothing. Retrying is safe: the command sets an absolute value.
func (n *Node) RegisterKafkaBroker(ctx context.Context, addr string) error {
	if !validKafkaAddress(addr) {
		return fmt.Errorf("%w: Kafka address %q is not host:port", ErrInvalid, addr)
	}
	if n.Metadata().KafkaBrokers[n.cfg.NodeID] == addr {
		return nil
	}
	r, _, err := n.proposeMeta(ctx, metaCmd{Op: opKafkaBroker, Node: n.cfg.NodeID, Address: addr})
	if err != nil {
		return err
	}
	if r.Value != metaOK {
		return fmt.Errorf("%w: Kafka address %q of node %d refused (node removed?)", ErrInvalid, addr, n.cfg.NodeID)
	}
	return nil
}
