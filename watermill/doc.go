// Package replogwatermill connects Watermill
// (github.com/ThreeDotsLabs/watermill) to replog: a [Publisher] writes
// messages to replog topics and a [Subscriber] reads them, alone, in
// consumer groups or in share groups, over a [replog.Log] that the caller
// opened and closes.
//
// It is a module of its own, github.com/replog/replog/watermill, so that
// Watermill is a dependency of programs that use it, not of replog.
//
// # Messages and records
//
// A message is stored as one record: its payload is the record's value,
// its UUID the header [UUIDHeader], and each metadata entry a header of
// the same key. [PublisherConfig.Key] chooses the record key (none by
// default). A record read without the UUID header gets the UUID
// "topic/partition/offset"; [PositionFromContext] gives a delivered
// message's topic, partition and offset.
//
// # Topics and order
//
// Publish and Subscribe create missing topics with [PublisherConfig.Topic]
// and [SubscriberConfig.Topic]; their zero values make one partition, so
// that every message is read in publish order. With more partitions,
// order holds per partition (per key, with a Key function).
//
// # Share groups
//
// With [SubscriberConfig.ShareGroup], subscriptions are members of a
// replog share group ([replog.NewShareConsumer]): any number of them read
// a partition at once, Ack accepts a message and Nack releases it to be
// delivered again later, to any member, without holding back the rest.
// A message whose lock expires is delivered again; one delivered
// MaxDeliveries times goes to the dead-letter topic. Order is not kept.
//
// # Limits
//
//   - A subscription delivers one message at a time; without a
//     ShareGroup, a nacked message holds back the rest of what the
//     subscription reads until it is acknowledged (see [Subscriber]).
//   - With a ShareGroup, a handler must finish within the lock
//     (ShareOptions.LockDuration, 30s by default): the adapter does not
//     renew it, and the message's context ends when it expires.
//   - With a ConsumerGroup, a subscription joins a replog group per topic,
//     named ConsumerGroup + "/" + topic (see [SubscriberConfig]).
//   - Each Ack of a group subscription costs one commit through Raft,
//     unless [SubscriberConfig.CommitInterval] batches them; each Ack of a
//     share subscription costs one, and so does each acquisition (of up
//     to ShareOptions.MaxRecords messages, 1 by default).
//   - Messages are not published atomically, and Watermill's message
//     context is not carried from publisher to subscriber.
package replogwatermill
