package replication

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog/storage"
)

func shConfig(group string, cfg ShareGroupConfig, f ShareConfigFields) shareCmd {
	return shareCmd{Op: shopConfig, SharePartitionKey: SharePartitionKey{Group: group}, Now: sec,
		Config: &shareConfigSet{Config: cfg, Fields: f}}
}

func shGetConfig(t *testing.T, s *shareSM, group string) ShareGroupConfig {
	t.Helper()
	v, err := s.Lookup(shareConfigQuery{group: group})
	require.NoError(t, err)
	return v.(ShareGroupConfig)
}

// TestShareSMConfig: a config command replaces the fields it names and
// keeps the others; unsetting every field forgets the group's config.
func TestShareSMConfig(t *testing.T) {
	s := newShareSM()
	require.Equal(t, ShareGroupConfig{}, shGetConfig(t, s, "g"))
	shMust(t, s, shConfig("g", ShareGroupConfig{AutoOffsetReset: "earliest", LockDuration: 15 * time.Second},
		ShareConfigAutoOffsetReset|ShareConfigLockDuration))
	shMust(t, s, shConfig("g", ShareGroupConfig{DeliveryCountLimit: 3, AutoOffsetReset: "bogus, not named"},
		ShareConfigDeliveryCountLimit))
	want := ShareGroupConfig{AutoOffsetReset: "earliest", LockDuration: 15 * time.Second, DeliveryCountLimit: 3}
	require.Equal(t, want, shGetConfig(t, s, "g"))
	require.Equal(t, ShareGroupConfig{}, shGetConfig(t, s, "other"))

	shMust(t, s, shConfig("g", ShareGroupConfig{}, ShareConfigLockDuration))
	want.LockDuration = 0
	require.Equal(t, want, shGetConfig(t, s, "g"))
	shMust(t, s, shConfig("g", ShareGroupConfig{}, ShareConfigAll))
	require.Empty(t, s.configs)
}

// TestShareSMConfigInvalid: a config out of bounds, alone or with the
// group's other fields, is refused and changes nothing.
func TestShareSMConfigInvalid(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shConfig("g", ShareGroupConfig{SessionTimeout: 10 * time.Second, HeartbeatInterval: 2 * time.Second},
		ShareConfigSessionTimeout|ShareConfigHeartbeatInterval))
	before := shareSnap(t, s)
	for name, c := range map[string]shareCmd{
		"reset":         shConfig("g", ShareGroupConfig{AutoOffsetReset: "by_duration:PT1H"}, ShareConfigAutoOffsetReset),
		"lock short":    shConfig("g", ShareGroupConfig{LockDuration: 999 * time.Millisecond}, ShareConfigLockDuration),
		"lock long":     shConfig("g", ShareGroupConfig{LockDuration: 2 * time.Hour}, ShareConfigLockDuration),
		"lock negative": shConfig("g", ShareGroupConfig{LockDuration: -time.Second}, ShareConfigLockDuration),
		"deliveries 1":  shConfig("g", ShareGroupConfig{DeliveryCountLimit: 1}, ShareConfigDeliveryCountLimit),
		"deliveries 11": shConfig("g", ShareGroupConfig{DeliveryCountLimit: 11}, ShareConfigDeliveryCountLimit),
		"isolation":     shConfig("g", ShareGroupConfig{IsolationLevel: "serializable"}, ShareConfigIsolationLevel),
		"heartbeat":     shConfig("g", ShareGroupConfig{HeartbeatInterval: 10 * time.Second}, ShareConfigHeartbeatInterval),
		"session":       shConfig("g", ShareGroupConfig{SessionTimeout: time.Second}, ShareConfigSessionTimeout),
		"no fields":     shConfig("g", ShareGroupConfig{LockDuration: time.Minute}, 0),
		"unknown field": shConfig("g", ShareGroupConfig{}, 1<<7),
		"no group":      shConfig("", ShareGroupConfig{LockDuration: time.Minute}, ShareConfigLockDuration),
		"long group":    shConfig(strings.Repeat("g", MaxShareNameLength+1), ShareGroupConfig{LockDuration: time.Minute}, ShareConfigLockDuration),
		"no config":     {Op: shopConfig, SharePartitionKey: SharePartitionKey{Group: "g"}, Now: sec},
	} {
		code, _ := shDo(t, s, c)
		require.Equal(t, sInvalid, code, name)
		require.Equal(t, before, shareSnap(t, s), name)
	}
}

// TestShareSMConfigDeleteGroup: deleting a group deletes its config, and
// a group with a config but no share partition can be deleted.
func TestShareSMConfigDeleteGroup(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shConfig("g", ShareGroupConfig{DeliveryCountLimit: 2}, ShareConfigDeliveryCountLimit))
	shMust(t, s, shAcquire("a", 1, 10, sec))
	del := shareCmd{Op: shopDeleteGroup, SharePartitionKey: SharePartitionKey{Group: "g"}, Now: 2 * sec}
	code, _ := shDo(t, s, del)
	require.Equal(t, sNotEmpty, code, "a lock is held")
	require.Equal(t, 2, shGetConfig(t, s, "g").DeliveryCountLimit)
	del.Now = 40 * sec
	shMust(t, s, del)
	require.Equal(t, ShareGroupConfig{}, shGetConfig(t, s, "g"))
	code, _ = shDo(t, s, del)
	require.Equal(t, sNoGroup, code)

	shMust(t, s, shConfig("h", ShareGroupConfig{DeliveryCountLimit: 2}, ShareConfigDeliveryCountLimit))
	shMust(t, s, shareCmd{Op: shopDeleteGroup, SharePartitionKey: SharePartitionKey{Group: "h"}, Now: sec})
	require.Empty(t, s.configs)
}

// TestShareSMConfigLimit: no more than MaxShareGroupConfigs groups have
// configs; changing one that has is still allowed.
func TestShareSMConfigLimit(t *testing.T) {
	s := newShareSM()
	s.configs = map[string]ShareGroupConfig{}
	for i := range MaxShareGroupConfigs - 1 {
		s.configs[strconv.Itoa(i)] = ShareGroupConfig{DeliveryCountLimit: 3}
	}
	s.configs["g"] = ShareGroupConfig{DeliveryCountLimit: 3}
	code, _ := shDo(t, s, shConfig("new", ShareGroupConfig{DeliveryCountLimit: 4}, ShareConfigDeliveryCountLimit))
	require.Equal(t, sTooMany, code)
	shMust(t, s, shConfig("g", ShareGroupConfig{DeliveryCountLimit: 4}, ShareConfigDeliveryCountLimit))
}

// TestShareSMConfigSnapshot: configs survive a snapshot, sorted by group;
// a snapshot without configs writes no "configs" key (see
// TestShareSMSnapshotToday); damaged configs are refused.
func TestShareSMConfigSnapshot(t *testing.T) {
	s := newShareSM()
	shMust(t, s, shAcquire("a", 3, 10, sec))
	shMust(t, s, shConfig("z", ShareGroupConfig{AutoOffsetReset: "latest"}, ShareConfigAutoOffsetReset))
	shMust(t, s, shConfig("g", ShareGroupConfig{LockDuration: time.Minute, IsolationLevel: "read_committed"},
		ShareConfigLockDuration|ShareConfigIsolationLevel))
	snap := shareSnap(t, s)
	require.Contains(t, string(snap), `"configs":[{"group":"g","lock":60000000000,"isolation":"read_committed"},{"group":"z","reset":"latest"}]`)
	r := newShareSM()
	require.NoError(t, r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil))
	require.Equal(t, snap, shareSnap(t, r))
	require.Equal(t, time.Minute, shGetConfig(t, r, "g").LockDuration)

	for name, bad := range map[string]string{
		"no group": `{"partitions":[],"configs":[{"group":"","lock":60000000000}]}`,
		"empty":    `{"partitions":[],"configs":[{"group":"g"}]}`,
		"twice":    `{"partitions":[],"configs":[{"group":"g","deliveries":3},{"group":"g","deliveries":4}]}`,
		"bounds":   `{"partitions":[],"configs":[{"group":"g","deliveries":30}]}`,
		"cross":    `{"partitions":[],"configs":[{"group":"g","heartbeat":50000000000}]}`,
		"type":     `{"partitions":[],"configs":{"group":"g"}}`,
	} {
		err := r.RecoverFromSnapshot(strings.NewReader(bad), nil, nil)
		require.ErrorIs(t, err, storage.ErrCorrupt, name)
		require.Equal(t, snap, shareSnap(t, r), name)
	}
}

// TestShareGroupConfigDefaults: WithDefaults fills Kafka's defaults, and
// the defaults validate.
func TestShareGroupConfigDefaults(t *testing.T) {
	d := ShareGroupConfig{}.WithDefaults()
	require.Equal(t, ShareGroupConfig{AutoOffsetReset: "latest", LockDuration: 30 * time.Second, DeliveryCountLimit: 5,
		SessionTimeout: 45 * time.Second, HeartbeatInterval: 5 * time.Second, IsolationLevel: "read_uncommitted"}, d)
	require.NoError(t, d.Validate())
	require.NoError(t, ShareGroupConfig{}.Validate())
	require.ErrorIs(t, ShareGroupConfig{DeliveryCountLimit: 11}.Validate(), ErrInvalid)
	set := ShareGroupConfig{LockDuration: time.Minute}
	require.Equal(t, time.Minute, set.WithDefaults().LockDuration)
}

// TestShareNodeConfig: a config set on one node is read linearizably on
// every node, and soon from each node's replica; bad input is refused
// before proposing with ErrInvalid; deleting the group deletes it.
func TestShareNodeConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newTestClusterWith(t, 3, 0, nil)
	n1, n2, n3 := c.nodes[1], c.nodes[2], c.nodes[3]

	cfg, err := n2.ShareGroupConfig(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, ShareGroupConfig{}, cfg)
	require.Equal(t, ShareGroupConfig{}, n3.ShareGroupConfigStale("g"))

	want := ShareGroupConfig{AutoOffsetReset: ShareOffsetEarliest, LockDuration: 15 * time.Second}
	require.NoError(t, n1.SetShareGroupConfig(ctx, "g", want, ShareConfigAutoOffsetReset|ShareConfigLockDuration))
	for _, n := range []*Node{n1, n2, n3} {
		cfg, err := n.ShareGroupConfig(ctx, "g")
		require.NoError(t, err)
		require.Equal(t, want, cfg)
		eventually(t, "the replica's config", func() bool { return n.ShareGroupConfigStale("g") == want })
	}

	for name, err := range map[string]error{
		"bounds":    n2.SetShareGroupConfig(ctx, "g", ShareGroupConfig{DeliveryCountLimit: 11}, ShareConfigDeliveryCountLimit),
		"fields":    n2.SetShareGroupConfig(ctx, "g", want, 0),
		"group":     n2.SetShareGroupConfig(ctx, "", want, ShareConfigAll),
		"heartbeat": n2.SetShareGroupConfig(ctx, "g", ShareGroupConfig{HeartbeatInterval: time.Minute}, ShareConfigHeartbeatInterval),
	} {
		require.ErrorIs(t, err, ErrInvalid, name)
	}
	_, err = n2.ShareGroupConfig(ctx, "")
	require.ErrorIs(t, err, ErrInvalid)

	require.NoError(t, n3.ShareDeleteGroup(ctx, "g"))
	cfg, err = n1.ShareGroupConfig(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, ShareGroupConfig{}, cfg)
}
