package replogkafka

// Kafka's group configs (the GROUP config resource of DescribeConfigs and
// IncrementalAlterConfigs): the share.* keys, kept per share group by the
// share coordinator (replication.ShareGroupConfig). The consumer.* and
// streams.* keys are not served: replog has no KIP-848 consumer groups
// nor streams groups.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog/replication"
)

// groupSetting is one group config key: get formats its value (of a
// config with defaults filled in), set parses one into the config, clear
// unsets it.
type groupSetting struct {
	name  string
	typ   kmsg.ConfigType
	field replication.ShareConfigFields
	get   func(replication.ShareGroupConfig) string
	set   func(*replication.ShareGroupConfig, string) error
	clear func(*replication.ShareGroupConfig)
}

// parseMillis parses a Kafka INT of milliseconds.
func parseMillis(v string) (time.Duration, error) {
	ms, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an int of milliseconds", v)
	}
	if ms <= 0 {
		return 0, fmt.Errorf("%d ms is not positive", ms)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func millis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// groupSettings lists the group configs served, as Kafka names them (see
// Kafka's GroupConfig). A function rather than a package variable, as
// servedAPIs: no package state.
func groupSettings() [6]groupSetting {
	return [...]groupSetting{
		{"share.auto.offset.reset", kmsg.ConfigTypeString, replication.ShareConfigAutoOffsetReset,
			func(c replication.ShareGroupConfig) string { return c.AutoOffsetReset },
			func(c *replication.ShareGroupConfig, v string) error {
				switch v {
				case replication.ShareOffsetEarliest, replication.ShareOffsetLatest:
					c.AutoOffsetReset = v
					return nil
				}
				return fmt.Errorf("%.64q: earliest or latest (by_duration is not served)", v)
			},
			func(c *replication.ShareGroupConfig) { c.AutoOffsetReset = "" }},
		{"share.record.lock.duration.ms", kmsg.ConfigTypeInt, replication.ShareConfigLockDuration,
			func(c replication.ShareGroupConfig) string { return millis(c.LockDuration) },
			func(c *replication.ShareGroupConfig, v string) (err error) {
				c.LockDuration, err = parseMillis(v)
				return err
			},
			func(c *replication.ShareGroupConfig) { c.LockDuration = 0 }},
		{"share.delivery.count.limit", kmsg.ConfigTypeInt, replication.ShareConfigDeliveryCountLimit,
			func(c replication.ShareGroupConfig) string { return strconv.Itoa(c.DeliveryCountLimit) },
			func(c *replication.ShareGroupConfig, v string) error {
				n, err := strconv.ParseInt(v, 10, 32)
				if err != nil || n <= 0 {
					return fmt.Errorf("%.64q is not a positive int", v)
				}
				c.DeliveryCountLimit = int(n)
				return nil
			},
			func(c *replication.ShareGroupConfig) { c.DeliveryCountLimit = 0 }},
		{"share.session.timeout.ms", kmsg.ConfigTypeInt, replication.ShareConfigSessionTimeout,
			func(c replication.ShareGroupConfig) string { return millis(c.SessionTimeout) },
			func(c *replication.ShareGroupConfig, v string) (err error) {
				c.SessionTimeout, err = parseMillis(v)
				return err
			},
			func(c *replication.ShareGroupConfig) { c.SessionTimeout = 0 }},
		{"share.heartbeat.interval.ms", kmsg.ConfigTypeInt, replication.ShareConfigHeartbeatInterval,
			func(c replication.ShareGroupConfig) string { return millis(c.HeartbeatInterval) },
			func(c *replication.ShareGroupConfig, v string) (err error) {
				c.HeartbeatInterval, err = parseMillis(v)
				return err
			},
			func(c *replication.ShareGroupConfig) { c.HeartbeatInterval = 0 }},
		{"share.isolation.level", kmsg.ConfigTypeString, replication.ShareConfigIsolationLevel,
			func(c replication.ShareGroupConfig) string { return c.IsolationLevel },
			func(c *replication.ShareGroupConfig, v string) error {
				switch v {
				case replication.ShareReadUncommitted, replication.ShareReadCommitted:
					c.IsolationLevel = v
					return nil
				}
				return fmt.Errorf("%.64q: read_uncommitted or read_committed", v)
			},
			func(c *replication.ShareGroupConfig) { c.IsolationLevel = "" }},
	}
}

func groupSettingNamed(name string) (groupSetting, bool) {
	for _, gs := range groupSettings() {
		if gs.name == name {
			return gs, true
		}
	}
	return groupSetting{}, false
}

// validGroupResource reports whether a group config resource names a
// share group the coordinator can hold.
func validGroupResource(name string) bool {
	return name != "" && len(name) <= replication.MaxShareNameLength
}

// describeGroupConfigs lists a group's configs, only those named if names
// is not nil (unknown names are left out, as for topics). A group without
// configs, or that does not exist, has every default, as in Kafka.
func (s *Server) describeGroupConfigs(ctx context.Context, req *kmsg.DescribeConfigsRequest, rr kmsg.DescribeConfigsRequestResource) kmsg.DescribeConfigsResponseResource {
	r := kmsg.NewDescribeConfigsResponseResource()
	r.ResourceType, r.ResourceName = rr.ResourceType, rr.ResourceName
	if !validGroupResource(rr.ResourceName) {
		r.ErrorCode = kerr.InvalidRequest.Code
		r.ErrorMessage = kmsg.StringPtr(fmt.Sprintf("group name of %d bytes (1 to %d)", len(rr.ResourceName), replication.MaxShareNameLength))
		return r
	}
	ctx, cancel := requestCtx(ctx, 0)
	defer cancel()
	cfg, err := s.node.ShareGroupConfig(ctx, rr.ResourceName)
	if err != nil {
		r.ErrorCode, r.ErrorMessage = shareErrorCode(err), errorMessage(err)
		return r
	}
	eff := cfg.WithDefaults()
	for _, gs := range groupSettings() {
		if rr.ConfigNames != nil && !contains(rr.ConfigNames, gs.name) {
			continue
		}
		unset := cfg
		gs.clear(&unset)
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name = gs.name
		c.Value = kmsg.StringPtr(gs.get(eff))
		c.IsDefault = unset == cfg
		c.Source = kmsg.ConfigSourceGroupConfig
		if c.IsDefault {
			c.Source = kmsg.ConfigSourceDefaultConfig
		}
		if req.IncludeSynonyms {
			syn := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
			syn.Name, syn.Value, syn.Source = c.Name, c.Value, c.Source
			c.ConfigSynonyms = []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{syn}
		}
		c.ConfigType = gs.typ
		r.Configs = append(r.Configs, c)
	}
	return r
}

// alterGroupConfigs applies one resource's operations to a group's
// configs, all or none: every operation is checked, and the result as a
// whole, before one command sets the fields named (SET to its value,
// DELETE back to its default), leaving the others as they are then, so
// that clients altering different keys at once lose neither change.
func (s *Server) alterGroupConfigs(ctx context.Context, rr kmsg.IncrementalAlterConfigsRequestResource, validateOnly bool) (int16, error) {
	group := rr.ResourceName
	if !validGroupResource(group) {
		return kerr.InvalidRequest.Code, fmt.Errorf("group name of %d bytes (1 to %d)", len(group), replication.MaxShareNameLength)
	}
	cur, err := s.node.ShareGroupConfig(ctx, group)
	if err != nil {
		return shareErrorCode(err), err
	}
	var set replication.ShareGroupConfig
	var fields replication.ShareConfigFields
	seen := map[string]bool{}
	for _, c := range rr.Configs {
		if seen[c.Name] {
			return kerr.InvalidRequest.Code, fmt.Errorf("config %q named twice", c.Name)
		}
		seen[c.Name] = true
		gs, ok := groupSettingNamed(c.Name)
		if !ok {
			return kerr.InvalidConfig.Code, fmt.Errorf("unknown group config %.64q (served: the share.* keys)", c.Name)
		}
		switch c.Op {
		case kmsg.IncrementalAlterConfigOpSet:
			if c.Value == nil {
				return kerr.InvalidConfig.Code, fmt.Errorf("SET %s without a value", c.Name)
			}
			if err := gs.set(&set, *c.Value); err != nil {
				return kerr.InvalidConfig.Code, fmt.Errorf("%s: %w", c.Name, err)
			}
			if err := gs.set(&cur, *c.Value); err != nil {
				return kerr.InvalidConfig.Code, fmt.Errorf("%s: %w", c.Name, err)
			}
		case kmsg.IncrementalAlterConfigOpDelete:
			gs.clear(&cur)
		case kmsg.IncrementalAlterConfigOpAppend, kmsg.IncrementalAlterConfigOpSubtract:
			return kerr.InvalidConfig.Code, fmt.Errorf("%v %s: not a list", c.Op, c.Name)
		default:
			return kerr.InvalidRequest.Code, fmt.Errorf("operation %d on %s", c.Op, c.Name)
		}
		fields |= gs.field
	}
	if err := cur.Validate(); err != nil {
		return kerr.InvalidConfig.Code, err
	}
	if validateOnly || fields == 0 {
		return 0, nil
	}
	if err := s.node.SetShareGroupConfig(ctx, group, set, fields); err != nil {
		return shareErrorCode(err), err
	}
	s.log.Info("replogkafka: group configs altered", "group", group)
	return 0, nil
}

// shareErrorCode maps an error of the share coordinator to a Kafka code:
// refused input is INVALID_CONFIG, the group's state as for the group
// APIs (see groupErrorCode).
func shareErrorCode(err error) int16 {
	switch {
	case errors.Is(err, replication.ErrInvalid), errors.Is(err, replication.ErrShareTooMany):
		return kerr.InvalidConfig.Code
	}
	return groupErrorCode(err)
}
