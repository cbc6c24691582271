package replog

import (
	"context"
	"fmt"
	"time"

	"github.com/replog/replog/replication"
)

// ShareGroupConfig configures a share group for all its members, Kafka
// clients' and [ShareConsumer]s alike (Kafka's group configs, the share.*
// keys, which Kafka clients set with IncrementalAlterConfigs). The share
// coordinator keeps it, replicated; it goes when the group is deleted
// ([Log.DeleteShareGroup]). A zero field is unset: its default applies.
type ShareGroupConfig struct {
	// AutoOffsetReset is where a share partition the group has no state
	// of starts, for Kafka clients: "earliest" (the log start) or
	// "latest" (the high watermark; the default, as Kafka's
	// share.auto.offset.reset). A [ShareConsumer] starts at the log
	// start unless it says "latest" explicitly ([Log.ResetShareGroup]
	// starts a new group anywhere).
	AutoOffsetReset string
	// LockDuration is how long a member holds a record it acquired
	// (share.record.lock.duration.ms): 1s to 1h, default 30s. A
	// [ShareConsumer] uses it unless its options set one.
	LockDuration time.Duration
	// DeliveryCountLimit is how many times a record is delivered before
	// it is given up on (share.delivery.count.limit): 2 to 10, default 5.
	// A [ShareConsumer] uses it as MaxDeliveries unless its options set
	// one.
	DeliveryCountLimit int
	// SessionTimeout and HeartbeatInterval are those of Kafka clients'
	// members (share.session.timeout.ms, default 45s, and
	// share.heartbeat.interval.ms, default 5s): each 1ms to 1h, the
	// interval below the timeout. A [ShareConsumer] has no session.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	// IsolationLevel is "read_uncommitted" (the default) or
	// "read_committed" (share.isolation.level; see
	// [ShareConsumerOptions.Isolation]). A [ShareConsumer] whose options
	// leave Isolation zero reads committed if it says read_committed.
	IsolationLevel string
}

// Share group config values.
const (
	ShareOffsetEarliest  = replication.ShareOffsetEarliest
	ShareOffsetLatest    = replication.ShareOffsetLatest
	ShareReadUncommitted = replication.ShareReadUncommitted
	ShareReadCommitted   = replication.ShareReadCommitted
)

func (c ShareGroupConfig) internal() replication.ShareGroupConfig {
	return replication.ShareGroupConfig(c)
}

// ShareGroupConfig reads a share group's config; a group without one (or
// that does not exist) has a zero config: every default. A ctx without
// deadline gets 30s.
func (l *Log) ShareGroupConfig(ctx context.Context, group string) (ShareGroupConfig, error) {
	if l.isClosed() {
		return ShareGroupConfig{}, ErrClosed
	}
	if err := checkShareGroupName(group); err != nil {
		return ShareGroupConfig{}, err
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	c, err := l.node.ShareGroupConfig(ctx, group)
	if err != nil {
		return ShareGroupConfig{}, mapErr(err)
	}
	return ShareGroupConfig(c), nil
}

// SetShareGroupConfig replaces a share group's config with cfg (zero
// fields unset: their defaults apply). The group need not exist yet.
// [ErrInvalidConfig], saying which, if a field is out of bounds. Members
// apply it from their next acquisition on; [ShareConsumer]s read it when
// they are created. A ctx without deadline gets 30s.
func (l *Log) SetShareGroupConfig(ctx context.Context, group string, cfg ShareGroupConfig) error {
	if l.isClosed() {
		return ErrClosed
	}
	if err := checkShareGroupName(group); err != nil {
		return err
	}
	if err := cfg.internal().Validate(); err != nil {
		return mapErr(err)
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultTimeout)
	defer cancel()
	if err := l.node.SetShareGroupConfig(ctx, group, cfg.internal(), replication.ShareConfigAll); err != nil {
		return fmt.Errorf("%w (share group %q)", shareErr(err), group)
	}
	return nil
}

func checkShareGroupName(group string) error {
	if group == "" || len(group) > replication.MaxShareNameLength {
		return fmt.Errorf("%w: share group name of %d bytes (1 to %d)", ErrInvalidConfig, len(group), replication.MaxShareNameLength)
	}
	return nil
}
