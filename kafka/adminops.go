package replogkafka

// The admin APIs that change or describe what exists: topic settings
// (DescribeConfigs, IncrementalAlterConfigs; group configs are in
// groupconfig.go), partition counts
// (CreatePartitions), log starts (DeleteRecords) and the cluster
// (DescribeCluster). Topic creation and deletion are in admin.go.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
)

// topicSetting is one of Kafka's topic settings that maps to a field of
// replog's TopicConfig; setTopicConfig parses it, get formats it.
type topicSetting struct {
	name string
	typ  kmsg.ConfigType
	get  func(replog.TopicInfo) string
	// reset sets the field to replog's default (IncrementalAlterConfigs'
	// DELETE).
	reset func(*replog.TopicConfig)
}

// millisOrForever formats a duration as Kafka's milliseconds, 0 (replog's
// "no limit") as -1.
func millisOrForever(d time.Duration) string {
	if d == 0 {
		return "-1"
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}

// topicSettings lists the settings DescribeConfigs reports, as replog
// applies them. Defaults are replog's, not Kafka's: retention is unlimited
// (Kafka keeps 7 days). A function rather than a package variable, as
// servedAPIs: no package state.
func topicSettings() [6]topicSetting {
	return [...]topicSetting{
		{"cleanup.policy", kmsg.ConfigTypeList,
			func(i replog.TopicInfo) string {
				switch i.Cleanup {
				case replog.CleanupCompact:
					return "compact"
				case replog.CleanupCompact | replog.CleanupDelete:
					return "compact,delete"
				}
				return "delete"
			},
			func(c *replog.TopicConfig) { c.Cleanup = 0 }},
		{"compression.type", kmsg.ConfigTypeString,
			func(i replog.TopicInfo) string {
				if i.Compression == replog.CompressionNone {
					// Not "producer": the listener stores a client's
					// records in batches of the topic's codec.
					return "uncompressed"
				}
				return i.Compression.String()
			},
			func(c *replog.TopicConfig) { c.Compression = replog.CompressionNone }},
		{"delete.retention.ms", kmsg.ConfigTypeLong,
			func(i replog.TopicInfo) string { return strconv.FormatInt(i.DeleteRetention.Milliseconds(), 10) },
			func(c *replog.TopicConfig) { c.DeleteRetention = 0 }},
		{"max.message.bytes", kmsg.ConfigTypeInt,
			func(i replog.TopicInfo) string { return strconv.Itoa(i.MaxMessageBytes) },
			func(c *replog.TopicConfig) { c.MaxMessageBytes = 0 }},
		{"retention.bytes", kmsg.ConfigTypeLong,
			func(i replog.TopicInfo) string {
				if i.RetentionBytes == 0 {
					return "-1"
				}
				return strconv.FormatInt(i.RetentionBytes, 10)
			},
			func(c *replog.TopicConfig) { c.RetentionBytes = 0 }},
		{"retention.ms", kmsg.ConfigTypeLong,
			func(i replog.TopicInfo) string { return millisOrForever(i.Retention) },
			func(c *replog.TopicConfig) { c.Retention = 0 }},
	}
}

// defaultTopicInfo holds replog's default settings, to tell a topic's
// settings that differ (DYNAMIC_TOPIC_CONFIG) from defaults.
func defaultTopicInfo() replog.TopicInfo {
	return replog.TopicInfo{Cleanup: replog.CleanupDelete, DeleteRetention: replog.DefaultDeleteRetention, MaxMessageBytes: replog.DefaultMaxMessageBytes}
}

// topicConfigOf is the TopicConfig whose settings are info's, the
// partition count kept.
func topicConfigOf(info replog.TopicInfo) replog.TopicConfig {
	return replog.TopicConfig{
		Compression: info.Compression, Retention: info.Retention, RetentionBytes: info.RetentionBytes,
		Cleanup: info.Cleanup, DeleteRetention: info.DeleteRetention, MaxMessageBytes: info.MaxMessageBytes,
	}
}

// brokerResource reports whether a broker resource name is this node: its
// id, or "" for the cluster-wide defaults.
func (s *Server) brokerResource(name string) bool {
	return name == "" || name == strconv.FormatInt(int64(s.nodeID()), 10)
}

func (s *Server) describeConfigs(ctx context.Context, req *kmsg.DescribeConfigsRequest) *kmsg.DescribeConfigsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	for _, rr := range req.Resources {
		if rr.ResourceType == kmsg.ConfigResourceTypeGroupConfig {
			resp.Resources = append(resp.Resources, s.describeGroupConfigs(ctx, req, rr))
			continue
		}
		r := kmsg.NewDescribeConfigsResponseResource()
		r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			t, err := s.l.Topic(rr.ResourceName)
			if err != nil {
				r.ErrorCode, r.ErrorMessage = errorCode(err), errorMessage(err)
				break
			}
			r.Configs = describeTopicConfigs(req, t.Info(), rr.ConfigNames)
		case kmsg.ConfigResourceTypeBroker, kmsg.ConfigResourceTypeBrokerLogger:
			// A node has no Kafka broker settings to show; tools that
			// describe every broker get an empty answer, not an error.
			if !s.brokerResource(rr.ResourceName) {
				r.ErrorCode = kerr.InvalidRequest.Code
				r.ErrorMessage = kmsg.StringPtr(fmt.Sprintf("no broker %q; this node is %d", rr.ResourceName, s.nodeID()))
			}
		default:
			r.ErrorCode = kerr.InvalidRequest.Code
			r.ErrorMessage = kmsg.StringPtr(fmt.Sprintf("resource type %v has no configs here", rr.ResourceType))
		}
		resp.Resources = append(resp.Resources, r)
	}
	return resp
}

// describeTopicConfigs lists info's settings, only those named if names
// is not nil (unknown names are left out, as Kafka does).
func describeTopicConfigs(req *kmsg.DescribeConfigsRequest, info replog.TopicInfo, names []string) []kmsg.DescribeConfigsResponseResourceConfig {
	var out []kmsg.DescribeConfigsResponseResourceConfig
	defaults := defaultTopicInfo()
	for _, ts := range topicSettings() {
		if names != nil && !contains(names, ts.name) {
			continue
		}
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name = ts.name
		c.Value = kmsg.StringPtr(ts.get(info))
		c.IsDefault = *c.Value == ts.get(defaults) // v0
		c.Source = kmsg.ConfigSourceDynamicTopicConfig
		if c.IsDefault {
			c.Source = kmsg.ConfigSourceDefaultConfig
		}
		if req.IncludeSynonyms {
			syn := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
			syn.Name, syn.Value, syn.Source = c.Name, c.Value, c.Source
			c.ConfigSynonyms = []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{syn}
		}
		c.ConfigType = ts.typ
		out = append(out, c)
	}
	return out
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

func (s *Server) incrementalAlterConfigs(ctx context.Context, req *kmsg.IncrementalAlterConfigsRequest) *kmsg.IncrementalAlterConfigsResponse {
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	ctx, cancel := requestCtx(ctx, 0)
	defer cancel()
	for _, rr := range req.Resources {
		r := kmsg.NewIncrementalAlterConfigsResponseResource()
		r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
		var code int16
		var err error
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			code, err = s.alterTopicConfigs(ctx, rr, req.ValidateOnly)
		case kmsg.ConfigResourceTypeGroupConfig:
			code, err = s.alterGroupConfigs(ctx, rr, req.ValidateOnly)
		case kmsg.ConfigResourceTypeBroker, kmsg.ConfigResourceTypeBrokerLogger:
			code, err = kerr.InvalidRequest.Code, errors.New("replog nodes have no broker configs to alter; set Options in the program that opens the Log")
		default:
			code, err = kerr.InvalidRequest.Code, fmt.Errorf("resource type %v has no configs here", rr.ResourceType)
		}
		r.ErrorCode, r.ErrorMessage = code, errorMessage(err)
		resp.Resources = append(resp.Resources, r)
	}
	return resp
}

// alterTopicConfigs applies one resource's operations to the topic's
// current settings, all or none: every operation is checked before
// AlterTopic is called once.
//
// The settings are read, then written as a whole (AlterTopic has no
// compare-and-set): two clients altering different settings of one topic
// at the same instant may lose one change, as with Kafka's legacy
// AlterConfigs.
func (s *Server) alterTopicConfigs(ctx context.Context, rr kmsg.IncrementalAlterConfigsRequestResource, validateOnly bool) (int16, error) {
	t, err := s.l.Topic(rr.ResourceName)
	if err != nil {
		return errorCode(err), err
	}
	cfg := topicConfigOf(t.Info())
	seen := map[string]bool{}
	for _, c := range rr.Configs {
		if seen[c.Name] {
			return kerr.InvalidRequest.Code, fmt.Errorf("config %q named twice", c.Name)
		}
		seen[c.Name] = true
		if err := applyConfigOp(&cfg, c); err != nil {
			return kerr.InvalidConfig.Code, err
		}
	}
	if validateOnly {
		return 0, nil
	}
	if err := s.l.AlterTopic(ctx, rr.ResourceName, cfg); err != nil {
		code := errorCode(err)
		if errors.Is(err, replog.ErrInvalidConfig) {
			code = kerr.InvalidConfig.Code
		}
		return code, err
	}
	s.log.Info("replogkafka: topic settings altered", "topic", rr.ResourceName)
	return 0, nil
}

// applyConfigOp applies one IncrementalAlterConfigs operation to cfg.
// APPEND and SUBTRACT work on cleanup.policy, the one list setting.
func applyConfigOp(cfg *replog.TopicConfig, c kmsg.IncrementalAlterConfigsRequestResourceConfig) error {
	var reset func(*replog.TopicConfig)
	for _, ts := range topicSettings() {
		if ts.name == c.Name {
			reset = ts.reset
		}
	}
	switch c.Op {
	case kmsg.IncrementalAlterConfigOpSet:
		if c.Value == nil {
			return fmt.Errorf("SET %s without a value", c.Name)
		}
		return setTopicConfig(cfg, c.Name, c.Value)
	case kmsg.IncrementalAlterConfigOpDelete:
		switch {
		case reset != nil:
			reset(cfg)
		case c.Name == "message.timestamp.type", ignoredTopicConfig(c.Name):
			// Their default is what replog does.
		default:
			return fmt.Errorf("unknown topic config %q", c.Name)
		}
		return nil
	case kmsg.IncrementalAlterConfigOpAppend, kmsg.IncrementalAlterConfigOpSubtract:
		if c.Name != "cleanup.policy" {
			return fmt.Errorf("%v %s: only list settings (cleanup.policy) can be appended to or subtracted from", c.Op, c.Name)
		}
		var v replog.Cleanup
		switch {
		case c.Value == nil:
			return fmt.Errorf("%v %s without a value", c.Op, c.Name)
		case *c.Value == "delete":
			v = replog.CleanupDelete
		case *c.Value == "compact":
			v = replog.CleanupCompact
		default:
			return fmt.Errorf("%s=%q", c.Name, *c.Value)
		}
		cur := cfg.Cleanup
		if cur == 0 {
			cur = replog.CleanupDelete
		}
		if c.Op == kmsg.IncrementalAlterConfigOpAppend {
			cur |= v
		} else {
			cur &^= v
		}
		if cur == 0 {
			return fmt.Errorf("cleanup.policy would be empty")
		}
		cfg.Cleanup = cur
		return nil
	}
	return fmt.Errorf("operation %d on %s", c.Op, c.Name)
}

func (s *Server) createPartitions(ctx context.Context, req *kmsg.CreatePartitionsRequest) *kmsg.CreatePartitionsResponse {
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	ctx, cancel := requestCtx(ctx, req.TimeoutMillis)
	defer cancel()
	seen := map[string]int{}
	for _, rt := range req.Topics {
		seen[rt.Topic]++
	}
	for _, rt := range req.Topics {
		t := kmsg.NewCreatePartitionsResponseTopic()
		t.Topic = rt.Topic
		var err error
		if seen[rt.Topic] > 1 {
			t.ErrorCode, err = kerr.InvalidRequest.Code, errors.New("topic named twice in the request")
		} else {
			t.ErrorCode, err = s.growTopic(ctx, rt, req.ValidateOnly)
		}
		t.ErrorMessage = errorMessage(err)
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// growTopic grows a topic to rt.Count partitions.
func (s *Server) growTopic(ctx context.Context, rt kmsg.CreatePartitionsRequestTopic, validateOnly bool) (int16, error) {
	if rt.Assignment != nil {
		return kerr.InvalidReplicaAssignment.Code, errors.New("replog places replicas itself; manual assignment is not supported")
	}
	t, err := s.l.Topic(rt.Topic)
	if err != nil {
		return errorCode(err), err
	}
	info := t.Info()
	switch n := int(rt.Count); {
	case n < info.Partitions:
		return kerr.InvalidPartitions.Code, fmt.Errorf("topic %q has %d partitions; partitions can only grow, not to %d", rt.Topic, info.Partitions, n)
	case n == info.Partitions:
		return kerr.InvalidPartitions.Code, fmt.Errorf("topic %q already has %d partitions", rt.Topic, n)
	case n > replog.MaxPartitions:
		return kerr.InvalidPartitions.Code, fmt.Errorf("%d partitions, at most %d", n, replog.MaxPartitions)
	}
	if validateOnly {
		return 0, nil
	}
	cfg := topicConfigOf(info)
	cfg.Partitions = int(rt.Count)
	if err := s.l.AlterTopic(ctx, rt.Topic, cfg); err != nil {
		code := errorCode(err)
		if errors.Is(err, replog.ErrInvalidConfig) {
			code = kerr.InvalidPartitions.Code
		}
		return code, err
	}
	s.log.Info("replogkafka: partitions added", "topic", rt.Topic, "from", info.Partitions, "to", rt.Count)
	return 0, nil
}

func (s *Server) deleteRecords(ctx context.Context, req *kmsg.DeleteRecordsRequest) *kmsg.DeleteRecordsResponse {
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	ctx, cancel := requestCtx(ctx, req.TimeoutMillis)
	defer cancel()
	for _, rt := range req.Topics {
		t := kmsg.NewDeleteRecordsResponseTopic()
		t.Topic = rt.Topic
		topic, terr := s.l.Topic(rt.Topic)
		for _, rp := range rt.Partitions {
			p := kmsg.NewDeleteRecordsResponseTopicPartition()
			p.Partition, p.LowWatermark = rp.Partition, -1
			if terr != nil {
				p.ErrorCode = errorCode(terr)
				t.Partitions = append(t.Partitions, p)
				continue
			}
			// One partition at a time, so that each gets its own
			// error as in Kafka (replog checks a whole call first).
			err := s.l.DeleteRecords(ctx, rt.Topic, map[int]int64{int(rp.Partition): rp.Offset})
			if err == nil {
				var offs replog.PartitionOffsets
				if offs, err = topic.Offsets(ctx, int(rp.Partition)); err == nil {
					p.LowWatermark = offs.LogStart
				}
			}
			p.ErrorCode = errorCode(err)
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// endpointTypeBrokers is DescribeCluster's EndpointType for brokers (2 is
// controllers, which a replog node does not expose apart).
const endpointTypeBrokers = 1

func (s *Server) describeCluster(req *kmsg.DescribeClusterRequest) *kmsg.DescribeClusterResponse {
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	resp.EndpointType = endpointTypeBrokers
	if req.Version >= 1 && req.EndpointType != endpointTypeBrokers {
		resp.ErrorCode = kerr.UnsupportedEndpointType.Code
		resp.ErrorMessage = kmsg.StringPtr(fmt.Sprintf("endpoint type %d: this node answers for brokers (1) only", req.EndpointType))
		return resp
	}
	resp.ClusterID = clusterID
	bs := s.brokers()
	resp.ControllerID = s.controllerID(bs)
	for _, b := range bs {
		db := kmsg.NewDescribeClusterResponseBroker()
		db.NodeID, db.Host, db.Port = b.id, b.host, b.port
		resp.Brokers = append(resp.Brokers, db)
	}
	resp.ClusterAuthorizedOperations = math.MinInt32 // not computed: no ACLs
	return resp
}
