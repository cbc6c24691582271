package replogkafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
)

// alterGroupConfigs sends one IncrementalAlterConfigs of a group's
// configs: name, op, value triples (value "" with DELETE: none).
func alterGroupConfigs(t *testing.T, ctx context.Context, cl *kgo.Client, group string, validate bool, ops ...any) (int16, string) {
	t.Helper()
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	req.ValidateOnly = validate
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, group
	for i := 0; i < len(ops); i += 3 {
		c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		c.Name, c.Op = ops[i].(string), ops[i+1].(kmsg.IncrementalAlterConfigOp)
		if v := ops[i+2].(string); v != "" {
			c.Value = kmsg.StringPtr(v)
		}
		res.Configs = append(res.Configs, c)
	}
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Len(t, resp.Resources, 1)
	r := resp.Resources[0]
	var msg string
	if r.ErrorMessage != nil {
		msg = *r.ErrorMessage
	}
	return r.ErrorCode, msg
}

// describeGroupConfigs describes a group's configs, those named or all.
func describeGroupConfigs(t *testing.T, ctx context.Context, cl *kgo.Client, group string, names ...string) map[string]kmsg.DescribeConfigsResponseResourceConfig {
	t.Helper()
	req := kmsg.NewPtrDescribeConfigsRequest()
	req.IncludeSynonyms = true
	res := kmsg.NewDescribeConfigsRequestResource()
	res.ResourceType, res.ResourceName, res.ConfigNames = kmsg.ConfigResourceTypeGroupConfig, group, names
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Len(t, resp.Resources, 1)
	require.NoError(t, kerr.ErrorForCode(resp.Resources[0].ErrorCode))
	out := map[string]kmsg.DescribeConfigsResponseResourceConfig{}
	for _, c := range resp.Resources[0].Configs {
		out[c.Name] = c
	}
	return out
}

const (
	opSet    = kmsg.IncrementalAlterConfigOpSet
	opDelete = kmsg.IncrementalAlterConfigOpDelete
)

// TestGroupConfigs: a group's share configs are described with Kafka's
// defaults, set (SET) and unset (DELETE) key by key, refused with
// INVALID_CONFIG when unknown or out of bounds, all or none; the Log
// sees them.
func TestGroupConfigs(t *testing.T) {
	l := openLog(t)
	cl := newClient(t, listen(t, l, nil))
	ctx := testCtx(t)

	got := describeGroupConfigs(t, ctx, cl, "g")
	want := map[string]string{
		"share.auto.offset.reset": "latest", "share.record.lock.duration.ms": "30000",
		"share.delivery.count.limit": "5", "share.session.timeout.ms": "45000",
		"share.heartbeat.interval.ms": "5000", "share.isolation.level": "read_uncommitted",
	}
	require.Len(t, got, len(want))
	for name, v := range want {
		c := got[name]
		require.Equal(t, v, *c.Value, name)
		require.Equal(t, kmsg.ConfigSourceDefaultConfig, c.Source, name)
	}
	require.Equal(t, kmsg.ConfigTypeInt, got["share.delivery.count.limit"].ConfigType)

	code, msg := alterGroupConfigs(t, ctx, cl, "g", false,
		"share.auto.offset.reset", opSet, "earliest",
		"share.record.lock.duration.ms", opSet, "15000",
		"share.delivery.count.limit", opSet, "3")
	require.Zero(t, code, msg)
	got = describeGroupConfigs(t, ctx, cl, "g", "share.auto.offset.reset", "share.record.lock.duration.ms", "share.delivery.count.limit", "no.such.key")
	require.Len(t, got, 3)
	for name, v := range map[string]string{"share.auto.offset.reset": "earliest", "share.record.lock.duration.ms": "15000", "share.delivery.count.limit": "3"} {
		c := got[name]
		require.Equal(t, v, *c.Value, name)
		require.Equal(t, kmsg.ConfigSourceGroupConfig, c.Source, name)
		require.Len(t, c.ConfigSynonyms, 1)
	}
	cfg, err := l.ShareGroupConfig(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, replog.ShareGroupConfig{AutoOffsetReset: "earliest", LockDuration: 15 * time.Second, DeliveryCountLimit: 3}, cfg)

	// Refused, all or none: nothing changes.
	for name, ops := range map[string][]any{
		"unknown":      {"share.delivery.count.limit", opSet, "4", "consumer.session.timeout.ms", opSet, "50000"},
		"by duration":  {"share.auto.offset.reset", opSet, "by_duration:PT1H"},
		"isolation":    {"share.isolation.level", opSet, "serializable"},
		"lock short":   {"share.record.lock.duration.ms", opSet, "999"},
		"lock long":    {"share.record.lock.duration.ms", opSet, "3600001"},
		"deliveries":   {"share.delivery.count.limit", opSet, "11"},
		"not a number": {"share.delivery.count.limit", opSet, "five"},
		"heartbeat":    {"share.heartbeat.interval.ms", opSet, "45000"},
		"no value":     {"share.delivery.count.limit", opSet, ""},
		"append":       {"share.auto.offset.reset", kmsg.IncrementalAlterConfigOpAppend, "latest"},
	} {
		code, msg := alterGroupConfigs(t, ctx, cl, "g", false, ops...)
		require.Equal(t, kerr.InvalidConfig.Code, code, "%s: %s", name, msg)
		require.NotEmpty(t, msg, name)
	}
	code, msg = alterGroupConfigs(t, ctx, cl, "g", false, "share.isolation.level", opSet, "read_committed")
	require.Zero(t, code, msg)
	require.Equal(t, "read_committed", *describeGroupConfigs(t, ctx, cl, "g", "share.isolation.level")["share.isolation.level"].Value)
	code, msg = alterGroupConfigs(t, ctx, cl, "g", false, "share.isolation.level", opDelete, "")
	require.Zero(t, code, msg)
	code, _ = alterGroupConfigs(t, ctx, cl, "g", false, "share.delivery.count.limit", opSet, "4", "share.delivery.count.limit", opSet, "4")
	require.Equal(t, kerr.InvalidRequest.Code, code, "a key twice")
	// Validate only: checked, not applied.
	code, msg = alterGroupConfigs(t, ctx, cl, "g", true, "share.delivery.count.limit", opSet, "10")
	require.Zero(t, code, msg)
	cfg2, err := l.ShareGroupConfig(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, cfg, cfg2)

	// A session timeout and heartbeat set together, checked as a whole.
	code, msg = alterGroupConfigs(t, ctx, cl, "g", false,
		"share.session.timeout.ms", opSet, "60000", "share.heartbeat.interval.ms", opSet, "50000")
	require.Zero(t, code, msg)

	// DELETE returns a key to its default; the others stay.
	code, msg = alterGroupConfigs(t, ctx, cl, "g", false, "share.record.lock.duration.ms", opDelete, "")
	require.Zero(t, code, msg)
	got = describeGroupConfigs(t, ctx, cl, "g")
	require.Equal(t, "30000", *got["share.record.lock.duration.ms"].Value)
	require.Equal(t, kmsg.ConfigSourceDefaultConfig, got["share.record.lock.duration.ms"].Source)
	require.Equal(t, "earliest", *got["share.auto.offset.reset"].Value)
	require.Equal(t, "50000", *got["share.heartbeat.interval.ms"].Value)

	// The heartbeat must stay below the timeout: deleting the timeout
	// (back to 45s) alone is refused.
	code, _ = alterGroupConfigs(t, ctx, cl, "g", false, "share.session.timeout.ms", opDelete, "")
	require.Equal(t, kerr.InvalidConfig.Code, code)
}
