package replication

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Share group configs (Kafka's GroupConfig resource, the share.* keys):
// per group, kept by the share coordinator's state machine beside the
// group's share partitions, so that every replica reads the same, and a
// group's configs go when the group is deleted.

// ShareGroupConfig is a share group's configuration. A zero field is
// unset: the default applies (see [ShareGroupConfig.WithDefaults]).
type ShareGroupConfig struct {
	// AutoOffsetReset is where a share partition the group has no state
	// of starts: "earliest" (the log start) or "latest" (the high
	// watermark). Kafka's share.auto.offset.reset; default latest.
	AutoOffsetReset string `json:"reset,omitempty"`
	// LockDuration is how long a member holds a record it acquired,
	// 1s to an hour (MaxShareLock). Kafka's share.record.lock.duration.ms;
	// default 30s.
	LockDuration time.Duration `json:"lock,omitempty"`
	// DeliveryCountLimit is how many times a record is delivered before
	// it is given up on, 2 to 10. Kafka's share.delivery.count.limit;
	// default 5.
	DeliveryCountLimit int `json:"deliveries,omitempty"`
	// SessionTimeout and HeartbeatInterval are those of the group's
	// members (Kafka's share.session.timeout.ms, default 45s, and
	// share.heartbeat.interval.ms, default 5s), each 1ms to an hour,
	// the interval below the timeout.
	SessionTimeout    time.Duration `json:"session,omitempty"`
	HeartbeatInterval time.Duration `json:"heartbeat,omitempty"`
	// IsolationLevel is "read_uncommitted" (the default) or
	// "read_committed": records are then handed out up to the last
	// stable offset, and those of aborted transactions never (Kafka's
	// share.isolation.level).
	IsolationLevel string `json:"isolation,omitempty"`
}

// Share group config values and defaults.
const (
	ShareOffsetEarliest  = "earliest"
	ShareOffsetLatest    = "latest"
	ShareReadUncommitted = "read_uncommitted"
	ShareReadCommitted   = "read_committed"

	DefaultShareAutoOffsetReset    = ShareOffsetLatest
	DefaultShareLockDuration       = 30 * time.Second
	DefaultShareDeliveryCountLimit = 5
	DefaultShareSessionTimeout     = 45 * time.Second
	DefaultShareHeartbeatInterval  = 5 * time.Second
	DefaultShareIsolationLevel     = ShareReadUncommitted

	// MinShareConfigLock and MaxShareConfigLock bound LockDuration (Kafka
	// bounds share.record.lock.duration.ms to [1000, 3600000] ms).
	MinShareConfigLock = time.Second
	MaxShareConfigLock = MaxShareLock
	// MinShareDeliveryCountLimit and MaxShareDeliveryCountLimit bound
	// DeliveryCountLimit (Kafka's bounds).
	MinShareDeliveryCountLimit = 2
	MaxShareDeliveryCountLimit = 10
	// MaxShareGroupConfigs caps the groups with configs the coordinator
	// holds.
	MaxShareGroupConfigs = MaxSharePartitions
)

// WithDefaults returns c with its unset fields set to their defaults.
func (c ShareGroupConfig) WithDefaults() ShareGroupConfig {
	if c.AutoOffsetReset == "" {
		c.AutoOffsetReset = DefaultShareAutoOffsetReset
	}
	if c.LockDuration == 0 {
		c.LockDuration = DefaultShareLockDuration
	}
	if c.DeliveryCountLimit == 0 {
		c.DeliveryCountLimit = DefaultShareDeliveryCountLimit
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultShareSessionTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultShareHeartbeatInterval
	}
	if c.IsolationLevel == "" {
		c.IsolationLevel = DefaultShareIsolationLevel
	}
	return c
}

// Validate reports, as an error wrapping ErrInvalid that says which, a
// field out of its bounds, or a heartbeat interval not below the session
// timeout (of c with defaults); unset fields are valid.
func (c ShareGroupConfig) Validate() error {
	if err := c.validateFields(); err != nil {
		return err
	}
	if d := c.WithDefaults(); d.HeartbeatInterval >= d.SessionTimeout {
		return fmt.Errorf("%w: share heartbeat interval %v not below the session timeout %v", ErrInvalid, d.HeartbeatInterval, d.SessionTimeout)
	}
	return nil
}

// validateFields is Validate without the check across fields.
func (c ShareGroupConfig) validateFields() error {
	switch {
	case c.AutoOffsetReset != "" && c.AutoOffsetReset != ShareOffsetEarliest && c.AutoOffsetReset != ShareOffsetLatest:
		return fmt.Errorf("%w: share auto offset reset %.64q: earliest or latest", ErrInvalid, c.AutoOffsetReset)
	case c.LockDuration != 0 && (c.LockDuration < MinShareConfigLock || c.LockDuration > MaxShareConfigLock):
		return fmt.Errorf("%w: share record lock duration %v: %v to %v", ErrInvalid, c.LockDuration, MinShareConfigLock, MaxShareConfigLock)
	case c.DeliveryCountLimit != 0 && (c.DeliveryCountLimit < MinShareDeliveryCountLimit || c.DeliveryCountLimit > MaxShareDeliveryCountLimit):
		return fmt.Errorf("%w: share delivery count limit %d: %d to %d", ErrInvalid, c.DeliveryCountLimit, MinShareDeliveryCountLimit, MaxShareDeliveryCountLimit)
	case c.SessionTimeout != 0 && (c.SessionTimeout < time.Millisecond || c.SessionTimeout > time.Hour):
		return fmt.Errorf("%w: share session timeout %v: 1ms to 1h", ErrInvalid, c.SessionTimeout)
	case c.HeartbeatInterval != 0 && (c.HeartbeatInterval < time.Millisecond || c.HeartbeatInterval > time.Hour):
		return fmt.Errorf("%w: share heartbeat interval %v: 1ms to 1h", ErrInvalid, c.HeartbeatInterval)
	case c.IsolationLevel != "" && c.IsolationLevel != ShareReadUncommitted && c.IsolationLevel != ShareReadCommitted:
		return fmt.Errorf("%w: share isolation level %.64q: read_uncommitted or read_committed", ErrInvalid, c.IsolationLevel)
	}
	return nil
}

// ShareConfigFields names fields of a ShareGroupConfig, as bits: those a
// SetShareGroupConfig replaces.
type ShareConfigFields uint8

const (
	ShareConfigAutoOffsetReset ShareConfigFields = 1 << iota
	ShareConfigLockDuration
	ShareConfigDeliveryCountLimit
	ShareConfigSessionTimeout
	ShareConfigHeartbeatInterval
	ShareConfigIsolationLevel

	// ShareConfigAll names every field.
	ShareConfigAll = ShareConfigAutoOffsetReset | ShareConfigLockDuration | ShareConfigDeliveryCountLimit |
		ShareConfigSessionTimeout | ShareConfigHeartbeatInterval | ShareConfigIsolationLevel
)

// merge returns c with the fields of f taken from n.
func (c ShareGroupConfig) merge(n ShareGroupConfig, f ShareConfigFields) ShareGroupConfig {
	if f&ShareConfigAutoOffsetReset != 0 {
		c.AutoOffsetReset = n.AutoOffsetReset
	}
	if f&ShareConfigLockDuration != 0 {
		c.LockDuration = n.LockDuration
	}
	if f&ShareConfigDeliveryCountLimit != 0 {
		c.DeliveryCountLimit = n.DeliveryCountLimit
	}
	if f&ShareConfigSessionTimeout != 0 {
		c.SessionTimeout = n.SessionTimeout
	}
	if f&ShareConfigHeartbeatInterval != 0 {
		c.HeartbeatInterval = n.HeartbeatInterval
	}
	if f&ShareConfigIsolationLevel != 0 {
		c.IsolationLevel = n.IsolationLevel
	}
	return c
}

// shareConfigSet is a config command's payload: the fields Fields of the
// key's group are replaced by Config's (a zero one unsets it).
type shareConfigSet struct {
	Config ShareGroupConfig  `json:"c"`
	Fields ShareConfigFields `json:"f"`
}

// shopConfig sets fields of a group's config (the key's Group).
const shopConfig = "config"

func (c *shareCmd) checkConfig() uint64 {
	if !validShareName(c.Group) || c.Config == nil || c.Config.Fields == 0 ||
		c.Config.Fields&^ShareConfigAll != 0 || (ShareGroupConfig{}).merge(c.Config.Config, c.Config.Fields).validateFields() != nil {
		return sInvalid
	}
	return sOK
}

// setConfig merges the command's fields into the group's config: the
// result must validate as a whole (the heartbeat below the session
// timeout). A config with every field unset is forgotten.
func (s *shareSM) setConfig(c shareCmd) uint64 {
	old, ok := s.configs[c.Group]
	cfg := old.merge(c.Config.Config, c.Config.Fields)
	switch {
	case cfg.Validate() != nil:
		return sInvalid
	case cfg == ShareGroupConfig{}:
		delete(s.configs, c.Group)
		return sOK
	case !ok && len(s.configs) >= MaxShareGroupConfigs:
		return sTooMany
	}
	if s.configs == nil {
		s.configs = map[string]ShareGroupConfig{}
	}
	s.configs[c.Group] = cfg
	return sOK
}

// shareConfigQuery reads a group's config (zero if none).
type shareConfigQuery struct{ group string }

// ShareGroupConfigEntry is a group's config in a snapshot.
type ShareGroupConfigEntry struct {
	Group string `json:"group"`
	ShareGroupConfig
}

// configSnapshot returns the configs sorted by group; nil if none, so that
// a snapshot without configs is as before configs existed.
func (s *shareSM) configSnapshot() []ShareGroupConfigEntry {
	var out []ShareGroupConfigEntry
	for _, g := range slices.Sorted(maps.Keys(s.configs)) {
		out = append(out, ShareGroupConfigEntry{Group: g, ShareGroupConfig: s.configs[g]})
	}
	return out
}

// recoverShareConfigs validates a snapshot's configs.
func recoverShareConfigs(es []ShareGroupConfigEntry) (map[string]ShareGroupConfig, error) {
	if len(es) > MaxShareGroupConfigs {
		return nil, errors.New("too many group configs")
	}
	out := make(map[string]ShareGroupConfig, len(es))
	for _, e := range es {
		switch {
		case !validShareName(e.Group):
			return nil, fmt.Errorf("group config of %.64q", e.Group)
		case e.ShareGroupConfig == ShareGroupConfig{}:
			return nil, fmt.Errorf("empty config of group %.64q", e.Group)
		case out[e.Group] != ShareGroupConfig{}:
			return nil, fmt.Errorf("group config of %.64q twice", e.Group)
		}
		if err := e.ShareGroupConfig.Validate(); err != nil {
			return nil, fmt.Errorf("group config of %.64q: %w", e.Group, err)
		}
		out[e.Group] = e.ShareGroupConfig
	}
	return out, nil
}

// ShareGroupConfig reads a share group's config, linearizably; unset
// fields are zero (a group without a config has a zero one).
func (n *Node) ShareGroupConfig(ctx context.Context, group string) (ShareGroupConfig, error) {
	if !validShareName(group) {
		return ShareGroupConfig{}, fmt.Errorf("%w: share group name %.64q", ErrInvalid, group)
	}
	v, err := n.syncRead(ctx, ShareShardID, shareConfigQuery{group: group})
	if err != nil {
		return ShareGroupConfig{}, err
	}
	c, ok := v.(ShareGroupConfig)
	if !ok {
		return ShareGroupConfig{}, ErrInvalid
	}
	return c, nil
}

// ShareGroupConfigStale reads a share group's config from this node's
// replica of the coordinator without a round trip: it may lag a change
// just made. A zero config (every default) if the replica cannot answer.
// For hot paths (every fetch).
func (n *Node) ShareGroupConfigStale(group string) ShareGroupConfig {
	v, err := n.nh.StaleRead(ShareShardID, shareConfigQuery{group: group})
	c, _ := v.(ShareGroupConfig)
	if err != nil {
		return ShareGroupConfig{}
	}
	return c
}

// SetShareGroupConfig replaces the fields of a share group's config named
// by fields with cfg's (a zero field unsets it: its default applies); the
// others stay, and the whole must validate. The group need not exist. An error wrapping ErrInvalid says what is out of
// bounds; ErrShareTooMany if MaxShareGroupConfigs groups have configs.
func (n *Node) SetShareGroupConfig(ctx context.Context, group string, cfg ShareGroupConfig, fields ShareConfigFields) error {
	if !validShareName(group) {
		return fmt.Errorf("%w: share group name %.64q", ErrInvalid, group)
	}
	if fields == 0 || fields&^ShareConfigAll != 0 {
		return fmt.Errorf("%w: share config fields %#x", ErrInvalid, fields)
	}
	cfg = ShareGroupConfig{}.merge(cfg, fields)
	if err := cfg.validateFields(); err != nil {
		return err
	}
	_, _, err := n.proposeShare(ctx, shareCmd{Op: shopConfig, SharePartitionKey: SharePartitionKey{Group: group},
		Config: &shareConfigSet{Config: cfg, Fields: fields}})
	if errors.Is(err, ErrInvalid) {
		// The fields are valid: the coordinator refused the config
		// they make with the group's others.
		return fmt.Errorf("%w: the share group's heartbeat interval would not be below its session timeout", ErrInvalid)
	}
	return err
}
