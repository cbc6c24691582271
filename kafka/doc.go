// Package replogkafka serves a [replog.Log] to Kafka clients over Kafka's
// wire protocol, so that programs written against any Kafka client library
// (franz-go, sarama, librdkafka and the tools built on it) can produce to
// and consume from an embedded replog node.
//
// # Usage
//
//	l, err := replog.Open(dir, nil)
//	srv, err := replogkafka.Listen(l, "127.0.0.1:9092", nil)
//	defer srv.Close()
//
// replog opens no network port by itself: the listener is the one it opens
// when asked. Requests are decoded with franz-go's kmsg, the maintained Go
// model of Kafka's protocol.
//
// # What a connection gets
//
// Each connection has one goroutine reading requests and one writing the
// responses, in request order. A frame is checked against
// [Options.MaxRequestBytes] (1 MiB for every request but Produce) before
// anything is allocated for it, a Fetch response carries at most
// [Options.MaxFetchBytes] (55 MiB) whatever the client asks, and
// [Options.MaxQueuedBytes] (256 MiB)
// caps the bytes of requests read and not yet answered across all
// connections (a connection waits before reading a request that would pass
// it); [Options.MaxConnections] caps the
// connections, [Options.IdleTimeout] closes idle and slow ones and
// [Options.WriteTimeout] those that do not take their responses. A frame
// that is too large, does not decode, or names an API or version not
// served closes its connection (as Kafka does), and never disturbs other
// connections. An ApiVersions request of a
// version not served gets Kafka's UNSUPPORTED_VERSION answer (KIP-511) so
// the client can retry with one that is.
//
// # Produce and Fetch
//
// replog stores Kafka's record batches (magic v2). A produced batch is
// checked in full (its CRC32C, every record, decompression bounded by
// [storage.MaxRawBytes], no control batch, a transactional batch only in
// a request with a transactional id, a key for every null value) and stored as it came, compressed as the client compressed
// it: the topic's Compression applies to replog's Go producers only, as
// Kafka's compression.type=producer. A batch without timestamps, or of
// LogAppendTime type, gets the time it was received. Fetch sends stored
// batches as they are, whole even when the fetch offset is inside one (as
// Kafka does); batches stored by replog versions before Kafka batches are
// converted on the way out.
//
// # Security
//
// Where the listener may bind decides what it needs:
//
//   - On loopback (127.0.0.0/8, ::1, "localhost"), plaintext is allowed:
//     only this machine's programs can connect.
//   - Anywhere else (another interface, 0.0.0.0, ::, an empty host, or a
//     host name), [Listen] requires [Options.TLS] and a way to know the
//     client: mutual TLS (TLS.ClientAuth tls.RequireAndVerifyClientCert
//     with ClientCAs) or [Options.SASL], and otherwise fails with
//     [ErrInsecureListener] (which also matches
//     [replog.ErrInvalidConfig]).
//   - [Options.InsecureAllowOpenNetwork] lifts that check, for a network
//     secured by other means; Listen then logs a warning. Without client
//     authentication anyone who reaches the port can read, write and
//     delete every topic.
//
// [ServerTLSConfig] builds Options.TLS from PEM files (a client CA file
// turns on mutual TLS); any *tls.Config with a certificate will do.
//
// SASL is Kafka's: SaslHandshake (v0, with raw tokens, and v1) and
// SaslAuthenticate (v0 to v2), with SCRAM-SHA-256 and SCRAM-SHA-512
// (RFC 5802 and 7677, no channel binding, no delegation tokens) and, only
// over TLS, PLAIN. Users come from [SASLOptions.Credentials], a lookup that
// returns a [ScramCredential]: Kafka's salted form (salt, iterations,
// StoredKey, ServerKey), from which the password cannot be recovered.
// [NewScramCredential] derives one from a password, and
// [PasswordCredentials] a lookup from a fixed set of passwords:
//
//	creds, err := replogkafka.PasswordCredentials(map[string]string{"alice": pw})
//	tlsCfg, err := replogkafka.ServerTLSConfig("server.pem", "server-key.pem", "")
//	srv, err := replogkafka.Listen(l, "0.0.0.0:9092", &replogkafka.Options{
//		TLS:  tlsCfg,
//		SASL: &replogkafka.SASLOptions{Credentials: creds},
//	})
//
// franz-go clients then connect with kgo.DialTLSConfig and
// kgo.SASL(scram.Auth{User: "alice", Pass: pw}.AsSha512Mechanism()).
//
// With SASL, a connection may send only ApiVersions, SaslHandshake and
// SaslAuthenticate until it has authenticated: any other request closes
// it when its header arrives, before its body is read, and frames are
// capped at 512 KiB meanwhile (Kafka's sasl.server.max.receive.size). A
// failed authentication is answered SASL_AUTHENTICATION_FAILED and the
// connection closed; an unknown user and a wrong password look the same
// to the client. The TLS handshake, and with SASL the whole
// authentication, must be done within [Options.HandshakeTimeout].
// Authentication says who a client is; every authenticated client may use
// every API (there are no ACLs).
//
// # Consumer groups
//
// Kafka's classic groups with client-side assignment are served
// (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
// OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups,
// OffsetDelete). As in a Kafka coordinator, a group's membership lives in
// memory on the listener's node, and clients rejoin if it restarts; the
// committed offsets go through Raft in replog's groups state machine,
// keyed by (group, topic, partition), so a group may span topics and
// replog's [replog.Log.DescribeGroup] and [replog.Log.ListGroups] show it.
// A name is either a Kafka group or a replog group, never both: a Kafka
// client joining a replog group gets INCONSISTENT_GROUP_PROTOCOL, and a
// replog consumer joining a Kafka group [replog.ErrGroupKind].
//
// Since committed offsets are not kept in a topic, Metadata lists Kafka's
// internal topic __consumer_offsets as internal and without partitions,
// so that clients which skip internal topics (consumers of a regular
// expression) find it as they would in Kafka; it cannot be created,
// produced to or read.
//
// # Transactions
//
// Kafka's transactions (KIP-98) and exactly-once consume-transform-produce
// (KIP-447) are served over replog's transaction coordinator:
// InitProducerId with a transactional id, AddPartitionsToTxn (v0 to v3),
// AddOffsetsToTxn, EndTxn (v0 to v4) and TxnOffsetCommit (v0 to v4), with
// FindCoordinator for transactional ids naming the group coordinator.
// Ending a transaction writes its markers (control batches, sent to
// consumers as stored) to its partitions and commits its offsets to their
// group. A transactional batch is stored only as part of its producer's
// ongoing transaction, in a partition added to it: a late one is refused
// (INVALID_TXN_STATE) instead of opening a transaction that nothing ends
// (KIP-890 part 1). KIP-890 part 2 (a new epoch per transaction) is not
// offered: clients keep their epoch across transactions.
//
// A read_committed Fetch reads up to the last stable offset (the first
// offset of the oldest open transaction) and names the aborted
// transactions in what it returns; ListOffsets' latest offset is then the
// last stable one. A TxnOffsetCommit is checked against the group's
// membership (generation, member, instance) when it arrives, and an
// OffsetFetch that requires stable offsets gets UNSTABLE_OFFSET_COMMIT for
// partitions whose offsets a transaction has pending.
//
// # Share groups
//
// Kafka 4's share groups (KIP-932; franz-go's ShareGroup option) are
// replog's share groups (see [replog.ShareConsumer]): a share group's
// records, locks, delivery counts and acknowledgements live in the share
// coordinator's Raft group, so Go members and Kafka members of one group
// share its records, on any node. Served: ShareGroupHeartbeat (v1),
// ShareGroupDescribe (v1), ShareFetch (v1 and v2, with KIP-1222's renew
// acknowledgements) and ShareAcknowledge (v1 and v2).
//
// Membership lives in memory at the group coordinator (the node that
// coordinates classic groups), and members join again when it moves or
// restarts, losing nothing: what they hold is in the share coordinator
// under their own member ids. Every member is assigned every partition of
// the topics it subscribes to (share groups read a partition together, so
// this holds for any number of members); Kafka's simple assignor spreads
// partitions when they outnumber members. A member not heard from within
// the group's share.session.timeout.ms (45s) is dropped and its records
// released.
//
// Share sessions (the partitions a member fetches, with their epochs) live
// on the node fetched from; any node serves ShareFetch for any partition
// from its own replica, handing out records below its replica's high
// watermark (its last stable offset, for a read_committed group, whose
// aborted records are archived), rather than send clients to the
// partition's leader. A member opening a session again (its client
// reset it) gets back at once what it held in the old one. A
// ShareFetch first applies the acknowledgements it carries, one by one
// (a record whose lock expired fails alone, with INVALID_RECORD_STATE),
// then acquires records of the session's partitions, up to MaxRecords and
// within MaxBytes (records acquired past MaxBytes are released at once),
// and waits up to MaxWaitMillis for some. Gaps (offsets without a
// record) are accepted. Records delivered share.delivery.count.limit
// times are archived, as Kafka does; the dead-letter topic of
// [replog.ShareConsumerOptions] is a Go member's option only. Closing a
// session (epoch -1) releases what the member holds in its partitions.
//
// Limits: 10,000 share sessions per node and partitions per session,
// 1,000 members per group and 100,000 in all, at most 200 records in
// flight per share partition (Kafka's
// group.share.partition.max.record.locks). A group's settings are its
// group configs, below.
//
// # Share groups: configs and offsets
//
// A share group's configs are Kafka's GROUP config resource
// (DescribeConfigs, IncrementalAlterConfigs with SET and DELETE, DELETE
// returning a key to its default), kept per group by replog's share
// coordinator ([replog.Log.ShareGroupConfig]): share.auto.offset.reset
// (earliest or latest, default latest; by_duration is refused),
// share.record.lock.duration.ms (1000 to 3600000, default 30000),
// share.delivery.count.limit (2 to 10, default 5),
// share.session.timeout.ms (default 45000) and
// share.heartbeat.interval.ms (default 5000, below the session timeout),
// share.isolation.level (read_uncommitted, the default, or
// read_committed). Other keys (consumer.*, streams.*) are
// INVALID_CONFIG. Any node answers, reading and writing through Raft.
// Deleting the group deletes its configs.
//
// DescribeShareGroupOffsets (v0 and v1, with lag: records from the start
// offset to the high watermark not yet acknowledged, -1 where the
// answering node has no replica), AlterShareGroupOffsets and
// DeleteShareGroupOffsets (v0) are the group coordinator's, over
// [replog.Log.DescribeShareGroup], [replog.Log.ResetShareGroup] and
// [replog.Log.DeleteShareGroupOffsets]. A partition the group has no
// state of is described with start offset -1; alter and delete need an
// empty group (NON_EMPTY_GROUP while it has members, or a replog
// ShareConsumer holds a record under an unexpired lock), and alter
// creates the group's state. A request of several topics applies topic by
// topic. DeleteGroups deletes a share group of the name (its state and
// configs), ListGroups lists share groups with type "share" (state Stable
// while it has members or a record is locked, else Empty), and
// DescribeGroups answers GROUP_ID_NOT_FOUND for one, as Kafka. replog
// keeps share group names apart from consumer group names: ListGroups
// lists a name used by both once, as classic.
//
// # Clusters
//
// Every node of a cluster may run a listener. Each registers the address
// it advertises ([Options.AdvertisedAddress]) under its node id in the
// cluster's replicated metadata, so that every node's Metadata answer
// lists every broker (Kafka node id = replog node id) and gives each
// partition's leader as that node sees it (-1, LEADER_NOT_AVAILABLE,
// during an election or while the leader runs no listener), with the
// partition's replicas as both replicas and ISR. Produce, Fetch and
// ListOffsets for a partition this node does not lead get
// NOT_LEADER_OR_FOLLOWER, which makes clients refresh their metadata and
// go to the leader; there is no follower fetching (KIP-392). A node that
// hosts no replica of a partition names itself as its leader and joins
// the partition's Raft group as a non-voting replica on first use, then
// redirects. A listener that closes stays registered: its node is listed
// while down, and registers again when a listener next starts there.
//
// One node coordinates every Kafka group: the leader of replog's groups
// Raft group, named by FindCoordinator on every node; the others answer
// the group APIs NOT_COORDINATOR (OffsetFetch is answered anywhere: it
// reads the offsets through Raft). When that leadership moves, members
// join again at the new coordinator; committed offsets are kept. Unlike
// Kafka, groups are not spread over the nodes.
package replogkafka
