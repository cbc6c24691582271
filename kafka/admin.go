package replogkafka

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
)

// clusterID is what Metadata answers as the cluster id.
const clusterID = "replog"

// offsetsTopic is the name of Kafka's internal topic of committed
// offsets. replog keeps committed offsets in its groups state machine, not
// in a topic, but clients expect a Kafka cluster to have it: consumers of
// a regular expression skip internal topics, and tools look for it. So
// Metadata lists it as internal with no partitions (nothing to read,
// nowhere to produce: Produce, Fetch and ListOffsets find no such topic),
// and CreateTopics and auto-creation refuse the name, as Kafka does. A
// topic of that name made through the Go API is listed as it is instead.
const offsetsTopic = "__consumer_offsets"

// adminTimeout bounds topic changes whose request carries no timeout.
const adminTimeout = 30 * time.Second

// requestCtx bounds a request by its timeout (milliseconds; 0 or less:
// adminTimeout) and by the connection.
func requestCtx(ctx context.Context, millis int32) (context.Context, context.CancelFunc) {
	d := adminTimeout
	if millis > 0 {
		d = time.Duration(millis) * time.Millisecond
	}
	return context.WithTimeout(ctx, d)
}

func (s *Server) nodeID() int32 { return int32(s.l.NodeID()) }

// topicID is a stable id for a topic as created: a topic deleted and
// created again under its name gets another, as in Kafka. replog names
// topics by name, so the id is derived from the name and creation time.
func topicID(info replog.TopicInfo) [16]byte {
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(info.Created.UnixNano())))
	h.Write([]byte(info.Name))
	var id [16]byte
	copy(id[:], h.Sum(nil))
	return id
}

func (s *Server) metadata(ctx context.Context, req *kmsg.MetadataRequest) *kmsg.MetadataResponse {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	bs := s.brokers()
	for _, b := range bs {
		mb := kmsg.NewMetadataResponseBroker()
		mb.NodeID, mb.Host, mb.Port = b.id, b.host, b.port
		resp.Brokers = append(resp.Brokers, mb)
	}
	resp.ClusterID = kmsg.StringPtr(clusterID)
	resp.ControllerID = s.controllerID(bs)
	// Before v4 the broker's setting alone decides auto-creation.
	autoCreate := s.opts.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
	if req.Topics == nil || req.Version == 0 && len(req.Topics) == 0 {
		hasOffsets := false
		for _, info := range s.l.Topics() {
			resp.Topics = append(resp.Topics, s.topicMetadata(ctx, info.Name, false, bs))
			hasOffsets = hasOffsets || info.Name == offsetsTopic
		}
		if !hasOffsets {
			resp.Topics = append(resp.Topics, offsetsTopicMetadata())
		}
		return resp
	}
	for _, rt := range req.Topics {
		if rt.Topic == nil {
			t := kmsg.NewMetadataResponseTopic()
			t.TopicID = rt.TopicID
			t.ErrorCode = kerr.UnknownTopicID.Code
			resp.Topics = append(resp.Topics, t)
			continue
		}
		resp.Topics = append(resp.Topics, s.topicMetadata(ctx, *rt.Topic, autoCreate, bs))
	}
	return resp
}

// offsetsTopicMetadata describes offsetsTopic: internal, no partitions.
func offsetsTopicMetadata() kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	mt.Topic = kmsg.StringPtr(offsetsTopic)
	mt.IsInternal = true
	return mt
}

// topicMetadata describes a topic: each partition's leader (see
// partitionLeader) and replicas, among brokers bs.
func (s *Server) topicMetadata(ctx context.Context, name string, autoCreate bool, bs []broker) kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	mt.Topic = kmsg.StringPtr(name)
	t, err := s.l.Topic(name)
	if name == offsetsTopic && errors.Is(err, replog.ErrTopicNotFound) {
		return offsetsTopicMetadata()
	}
	if errors.Is(err, replog.ErrTopicNotFound) && autoCreate {
		if verr := replog.ValidateTopicName(name); verr != nil {
			mt.ErrorCode = kerr.InvalidTopicException.Code
			return mt
		}
		cctx, cancel := requestCtx(ctx, 0)
		t, err = s.l.EnsureTopic(cctx, name, replog.TopicConfig{Partitions: 1})
		cancel()
		if err == nil {
			s.log.Info("replogkafka: topic created on first use", "topic", name)
		}
	}
	if err != nil {
		mt.ErrorCode = errorCode(err)
		if errors.Is(err, replog.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			mt.ErrorCode = kerr.LeaderNotAvailable.Code // retriable
		}
		return mt
	}
	mt.TopicID = topicID(t.Info())
	tm := s.node.Metadata().Topics[name]
	if tm == nil || len(tm.Partitions) < t.Partitions() {
		// Deleted, or re-created, since t was looked up.
		mt.ErrorCode = kerr.LeaderNotAvailable.Code
		return mt
	}
	for i := range t.Partitions() {
		pm := tm.Partitions[i]
		p := kmsg.NewMetadataResponseTopicPartition()
		p.Partition = int32(i)
		p.Leader, p.ErrorCode = s.partitionLeader(pm, bs)
		p.LeaderEpoch = -1 // no epochs: clients skip epoch fencing
		p.Replicas = replicaIDs(pm.Replicas)
		// Raft keeps no in-sync set: any quorum of the voting replicas
		// commits, whichever lag. The ISR given is the placement's
		// replicas, which is what clients use it for (display, and
		// placement-aware tools); it does not say which replicas are
		// caught up.
		p.ISR = p.Replicas
		mt.Partitions = append(mt.Partitions, p)
	}
	return mt
}

func (s *Server) createTopics(ctx context.Context, req *kmsg.CreateTopicsRequest) *kmsg.CreateTopicsResponse {
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	ctx, cancel := requestCtx(ctx, req.TimeoutMillis)
	defer cancel()
	seen := map[string]int{}
	for _, rt := range req.Topics {
		seen[rt.Topic]++
	}
	for _, rt := range req.Topics {
		t := kmsg.NewCreateTopicsResponseTopic()
		t.Topic = rt.Topic
		code, err := s.createTopic(ctx, rt, req.ValidateOnly, seen[rt.Topic] > 1, &t)
		t.ErrorCode = code
		if err != nil && req.Version >= 1 {
			t.ErrorMessage = errorMessage(err)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// createTopic creates one topic, filling t's description, and returns the
// Kafka error code with the error behind it.
func (s *Server) createTopic(ctx context.Context, rt kmsg.CreateTopicsRequestTopic, validateOnly, dup bool, t *kmsg.CreateTopicsResponseTopic) (int16, error) {
	if dup {
		return kerr.InvalidRequest.Code, errors.New("topic named twice in the request")
	}
	if err := replog.ValidateTopicName(rt.Topic); err != nil {
		return kerr.InvalidTopicException.Code, err
	}
	if rt.Topic == offsetsTopic {
		return kerr.InvalidRequest.Code, fmt.Errorf("creation of internal topic %s is prohibited (replog keeps committed offsets apart)", offsetsTopic)
	}
	if len(rt.ReplicaAssignment) > 0 {
		return kerr.InvalidReplicaAssignment.Code, errors.New("replog places replicas itself; manual assignment is not supported")
	}
	var cfg replog.TopicConfig
	if rt.NumPartitions > 0 {
		cfg.Partitions = int(rt.NumPartitions)
	} else if rt.NumPartitions != -1 {
		return kerr.InvalidPartitions.Code, fmt.Errorf("%d partitions", rt.NumPartitions)
	}
	if cfg.Partitions > replog.MaxPartitions {
		return kerr.InvalidPartitions.Code, fmt.Errorf("%d partitions, at most %d", cfg.Partitions, replog.MaxPartitions)
	}
	if rt.ReplicationFactor > 0 {
		cfg.Replicas = int(rt.ReplicationFactor)
	} else if rt.ReplicationFactor != -1 {
		return kerr.InvalidReplicationFactor.Code, fmt.Errorf("replication factor %d", rt.ReplicationFactor)
	}
	if nodes := len(s.l.Nodes()); cfg.Replicas > nodes {
		return kerr.InvalidReplicationFactor.Code, fmt.Errorf("replication factor %d with %d nodes", cfg.Replicas, nodes)
	}
	for _, c := range rt.Configs {
		if err := setTopicConfig(&cfg, c.Name, c.Value); err != nil {
			return kerr.InvalidConfig.Code, err
		}
	}
	if validateOnly {
		if _, err := s.l.Topic(rt.Topic); err == nil {
			return kerr.TopicAlreadyExists.Code, fmt.Errorf("topic %q exists", rt.Topic)
		}
		t.NumPartitions, t.ReplicationFactor = int32(max(cfg.Partitions, 1)), int16(max(cfg.Replicas, 1))
		return 0, nil
	}
	topic, err := s.l.CreateTopic(ctx, rt.Topic, cfg)
	if err != nil {
		code := errorCode(err)
		if code == kerr.InvalidRequest.Code {
			code = kerr.InvalidConfig.Code
		}
		return code, err
	}
	info := topic.Info()
	t.TopicID = topicID(info)
	t.NumPartitions, t.ReplicationFactor = int32(info.Partitions), int16(info.Replicas)
	s.log.Info("replogkafka: topic created", "topic", rt.Topic, "partitions", info.Partitions)
	return 0, nil
}

// ignoredTopicConfig reports Kafka topic settings about its segment
// files, indexes and replication that have no counterpart in replog's
// storage: they are accepted and ignored, so that tools which set them
// work.
func ignoredTopicConfig(name string) bool {
	switch name {
	case "segment.bytes", "segment.ms", "segment.jitter.ms", "segment.index.bytes", "index.interval.bytes",
		"flush.messages", "flush.ms", "file.delete.delay.ms", "preallocate", "min.insync.replicas",
		"unclean.leader.election.enable", "min.cleanable.dirty.ratio", "min.compaction.lag.ms",
		"max.compaction.lag.ms", "message.downconversion.enable", "message.timestamp.difference.max.ms":
		return true
	}
	return false
}

// setTopicConfig applies one of Kafka's topic settings to cfg.
func setTopicConfig(cfg *replog.TopicConfig, name string, value *string) error {
	if value == nil {
		return nil // the default
	}
	v := *value
	millis := func() (time.Duration, error) {
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil || n < -1:
			return 0, fmt.Errorf("%s=%q: want milliseconds, or -1", name, v)
		case n == -1:
			return 0, nil // forever
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	var err error
	switch name {
	case "retention.ms":
		cfg.Retention, err = millis()
	case "delete.retention.ms":
		cfg.DeleteRetention, err = millis()
	case "retention.bytes":
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < -1 {
			return fmt.Errorf("%s=%q: want bytes, or -1", name, v)
		}
		cfg.RetentionBytes = max(n, 0)
	case "max.message.bytes":
		n, perr := strconv.ParseInt(v, 10, 32)
		if perr != nil || n < 1 {
			return fmt.Errorf("%s=%q: want bytes, 1 to %d", name, v, math.MaxInt32)
		}
		cfg.MaxMessageBytes = int(n)
	case "cleanup.policy":
		switch v {
		case "delete":
			cfg.Cleanup = replog.CleanupDelete
		case "compact":
			cfg.Cleanup = replog.CleanupCompact
		case "compact,delete", "delete,compact":
			cfg.Cleanup = replog.CleanupCompact | replog.CleanupDelete
		default:
			return fmt.Errorf("%s=%q", name, v)
		}
	case "compression.type":
		c, ok := map[string]replog.Compression{
			"producer": replog.CompressionNone, "uncompressed": replog.CompressionNone, "none": replog.CompressionNone,
			"gzip": replog.CompressionGzip, "snappy": replog.CompressionSnappy, "lz4": replog.CompressionLZ4, "zstd": replog.CompressionZstd,
		}[v]
		if !ok {
			return fmt.Errorf("%s=%q", name, v)
		}
		cfg.Compression = c
	case "message.timestamp.type":
		if v != "CreateTime" {
			return fmt.Errorf("%s=%q: records keep their producer's time (CreateTime)", name, v)
		}
	default:
		if !ignoredTopicConfig(name) {
			return fmt.Errorf("unknown topic config %q", name)
		}
	}
	return err
}

func (s *Server) deleteTopics(ctx context.Context, req *kmsg.DeleteTopicsRequest) *kmsg.DeleteTopicsResponse {
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	ctx, cancel := requestCtx(ctx, req.TimeoutMillis)
	defer cancel()
	type target struct {
		name *string
		id   [16]byte
	}
	var targets []target
	for _, n := range req.TopicNames {
		targets = append(targets, target{name: &n})
	}
	for _, t := range req.Topics {
		targets = append(targets, target{name: t.Topic, id: t.TopicID})
	}
	for _, tg := range targets {
		rt := kmsg.NewDeleteTopicsResponseTopic()
		rt.Topic, rt.TopicID = tg.name, tg.id
		var err error
		if tg.name == nil {
			rt.ErrorCode, err = kerr.UnknownTopicID.Code, errors.New("topics are deleted by name")
		} else if err = s.l.DeleteTopic(ctx, *tg.name); err != nil {
			rt.ErrorCode = errorCode(err)
		} else {
			s.log.Info("replogkafka: topic deleted", "topic", *tg.name)
		}
		if req.Version >= 5 {
			rt.ErrorMessage = errorMessage(err)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}
