package replication

import (
	"context"
	"errors"
	"fmt"
)

// shopDeleteTopic forgets the share partitions of a topic (the key's
// Topic, whatever its TopicID) in a group (Kafka's
// DeleteShareGroupOffsets): only while no member of the group holds an
// unexpired lock, as Kafka requires an empty group. sNoGroup if the
// coordinator holds no share partition of the group.
const shopDeleteTopic = "delete_topic"

func (c *shareCmd) checkDeleteTopic() uint64 {
	if !validShareName(c.Group) || c.Topic == "" || len(c.Topic) > maxTopicName {
		return sInvalid
	}
	return sOK
}

func (s *shareSM) deleteTopic(c shareCmd) uint64 {
	ps, locked := s.groupParts(c.Group, c.Now)
	switch {
	case len(ps) == 0:
		return sNoGroup
	case locked:
		return sNotEmpty
	}
	for _, p := range ps {
		if p.Topic == c.Topic {
			delete(s.parts, p.SharePartitionKey)
		}
	}
	return sOK
}

// ShareDeleteTopic forgets a share group's state of a topic (of every
// topic of that name, a deleted one's included): its start offsets and
// records in flight, if no member of the group holds a record under an
// unexpired lock (else ErrGroupNotEmpty). ErrGroupNotFound if the
// coordinator holds no state of the group, unless an earlier attempt of
// this call deleted the last of it. A topic the group has no state of is
// no error. A call that took more than one attempt and is then refused
// for a lock may have applied at the first: ErrAmbiguous.
func (n *Node) ShareDeleteTopic(ctx context.Context, group, topic string) error {
	_, attempts, err := n.proposeShare(ctx, shareCmd{Op: shopDeleteTopic,
		SharePartitionKey: SharePartitionKey{Group: group, Topic: topic}})
	switch {
	case attempts > 1 && errors.Is(err, ErrGroupNotFound):
		return nil // an earlier attempt deleted the group's last partitions
	case attempts > 1 && errors.Is(err, ErrGroupNotEmpty):
		return fmt.Errorf("%w: a retried share topic delete found a lock: an earlier attempt may have applied before a member acquired records", ErrAmbiguous)
	}
	return err
}
