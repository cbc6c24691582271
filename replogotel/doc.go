// Package replogotel exports a replog [replog.Log]'s metrics and traces to
// OpenTelemetry. The replog package itself does not import OpenTelemetry:
// this adapter reads [replog.Log.Stats] and implements replog's hooks.
//
// # Metrics
//
// [NewMetrics] registers asynchronous instruments on a meter provider. One
// callback reads [replog.Log.Stats] once per collection and observes every
// instrument from that snapshot, so a collection costs one Stats call and
// the figures of one collection agree with each other. [Metrics.Close]
// removes the callback.
//
// Names and attributes follow the OpenTelemetry messaging semantic
// conventions where they fit; the rest are replog's own, under "replog.".
// Every point carries replog.node.id, so that the Logs of several nodes in
// one process (as in replogtest) can share a meter provider.
//
// Per partition replica hosted on the node, with messaging.destination.name
// (the topic) and messaging.destination.partition.id (the partition, as a
// decimal string):
//
//	messaging.client.sent.messages      counter    {message}  records this node's producers wrote; with messaging.system=replog, messaging.operation.name=send
//	messaging.client.consumed.messages  counter    {message}  records this node's consumers read from the replica (see below); messaging.system=replog, messaging.operation.name=fetch
//	replog.client.sent.bytes            counter    By         keys, values and headers written, uncompressed
//	replog.client.sent.batches          counter    {batch}    batches written
//	replog.client.produce.errors        counter    {batch}    batches that failed
//	replog.client.consumed.bytes        counter    By         keys, values and headers read
//	replog.partition.high_watermark     gauge      {offset}   the offset the next record will get, as this replica applied it
//	replog.partition.log_start          gauge      {offset}   the first offset retained
//	replog.partition.stored             updown     By         bytes the replica stores
//	replog.partition.leader             gauge      1          1 if this node leads the partition, else 0
//	replog.share.records                counter    {message}  records share group members on this node handled, by replog.share.kind (see below)
//
// Per consumer group and partition, with messaging.consumer.group.name,
// messaging.destination.name and messaging.destination.partition.id:
//
//	replog.group.lag                    gauge      {message}  records between the committed offset (or the log start) and the high watermark
//	replog.group.committed              gauge      {offset}   the next offset the group reads; absent while it committed nothing
//
// Per consumer group, with messaging.consumer.group.name and
// messaging.destination.name:
//
//	replog.group.member.count           updown     {member}   members of the group
//	replog.group.generation             gauge      1          the group's generation: it grows at each rebalance
//
// Per share group and partition, with messaging.consumer.group.name (the
// share group), messaging.destination.name and
// messaging.destination.partition.id, as this node's replica of the share
// coordinator holds them:
//
//	replog.share_group.lag              gauge      {message}  records from the start offset to the high watermark that are not done; absent where this node hosts no replica
//	replog.share_group.start            gauge      {offset}   the share-partition start offset: every record before it is done
//	replog.share_group.acquired         gauge      {message}  records under an unexpired lock
//	replog.share_group.available        gauge      {message}  records in flight waiting to be delivered again
//
// Per share group, with messaging.consumer.group.name:
//
//	replog.share_group.member.count     updown     {member}   members holding a record under an unexpired lock
//
// Per node:
//
//	replog.node.store.usage             updown     By         disk used by the record store (0 in memory)
//	replog.node.raft.usage              updown     By         disk used by the Raft logs and snapshots (0 in memory)
//	replog.node.buffer.usage            updown     By         memory held in producers' buffers and consumers' read-ahead
//	replog.node.producer.count          updown     {producer} open producers
//	replog.node.consumer.count          updown     {consumer} open consumers
//	replog.node.elections               counter    {election} leaders this node saw elected, over all Raft groups
//	replog.node.retries                 counter    {request}  requests to a Raft group sent again
//	replog.store.apply.operations       counter    {operation} applications of committed Raft entries to the store
//	replog.store.apply.time             counter    s          time spent in them
//	replog.store.apply.duration         gauge      s          their p50, p99 and max, by replog.quantile (0.5, 0.99, 1)
//	replog.store.sync.operations        counter    {operation} store syncs (fsync)
//	replog.store.sync.time              counter    s          time spent in them
//	replog.store.sync.duration          gauge      s          their p50, p99 and max, by replog.quantile (0.5, 0.99, 1)
//
// The OpenTelemetry metric API has no asynchronous histogram, so apply and
// sync latencies, which replog keeps as histograms, are exported as a count,
// a total time (their ratio is the mean) and quantile gauges. The quantiles
// are bucket bounds: at most twice the true value (see [replog.Latency]).
//
// messaging.client.consumed.messages counts what consumers read from the
// node's replica into their read-ahead, as [replog.PartitionStats] does,
// rather than what Poll handed out: records read ahead and then dropped by
// a Seek or a rebalance are counted too. Counters of a partition are
// observed while the node hosts a replica of it; the node's totals in
// [replog.NodeStats] keep them after the replica moves away.
//
// replog.share.records counts, with replog.share.kind acquired, accepted,
// released, rejected or dead_lettered, the records that share group
// members on this node (replog's share consumers and Kafka clients)
// handled (see [replog.PartitionStats]). A partition's points appear once
// a share member on this node handled one of its records, so that a node
// without share groups does not report five idle points per partition.
//
// # Traces
//
// [Tracing] is a hook for [replog.Options.Hooks],
// [replog.ProducerOptions.Hooks] or [replog.ConsumerOptions.Hooks]. For
// each record produced it starts a "create" span (kind producer), a child
// of the span in the Produce call's context, and writes that span's context
// into the record's headers (W3C traceparent and tracestate by default);
// the span ends when the record is stored (with its partition and offset)
// or fails (with the error), as franz-go's kotel does. For each record Poll hands out it starts and ends a "poll" span
// (kind consumer) whose parent is the context found in the record's
// headers, so a trace goes from producer to consumer. To make the
// application's own processing span part of that trace, start it from
// [Extract] (or [Tracing.Extract]) of the record's headers.
package replogotel
