package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// configFlags collects repeated -config k=v flags.
type configFlags map[string]*string

func (c configFlags) String() string {
	var s []string
	for k, v := range c {
		s = append(s, k+"="+*v)
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}

func (c configFlags) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", kv)
	}
	c[k] = &v
	return nil
}

func topicCmd(ctx context.Context, args []string, e env) error {
	if len(args) == 0 {
		return usagef("topic needs a subcommand: create, list, describe or delete")
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "create":
		return topicCreate(ctx, rest, e)
	case "list":
		return topicList(ctx, rest, e)
	case "describe":
		return topicDescribe(ctx, rest, e)
	case "delete":
		return topicDelete(ctx, rest, e)
	default:
		return usagef("unknown topic subcommand %q: want create, list, describe or delete", sub)
	}
}

func topicCreate(ctx context.Context, args []string, e env) error {
	fs := newFlags("topic create", e)
	var cf clientFlags
	cf.register(fs, e, true)
	partitions := fs.Int("partitions", 1, "number of `partitions` (-1: the broker's default)")
	replicas := fs.Int("replicas", -1, "replication `factor` (-1: the broker's default)")
	configs := configFlags{}
	fs.Var(configs, "config", "topic setting `key=value` (repeatable), e.g. retention.ms=86400000")
	adm, pos, err := cf.adminFor(fs, args, 1, "a topic name")
	if err != nil {
		return err
	}
	defer adm.Close()
	resp, err := adm.CreateTopic(ctx, int32(*partitions), int16(*replicas), configs, pos[0])
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		if resp.ErrMessage != "" {
			err = fmt.Errorf("%w: %s", err, resp.ErrMessage)
		}
		return fmt.Errorf("create topic %q: %w", pos[0], err)
	}
	if cf.json {
		return printJSON(e.stdout, map[string]any{"topic": resp.Topic, "partitions": resp.NumPartitions, "replicas": resp.ReplicationFactor})
	}
	fmt.Fprintf(e.stdout, "created topic %s: %d partition(s), %d replica(s)\n", resp.Topic, resp.NumPartitions, resp.ReplicationFactor)
	return nil
}

// topicJSON is a topic in -json output.
type topicJSON struct {
	Topic      string            `json:"topic"`
	ID         string            `json:"id,omitempty"`
	Partitions int               `json:"partitions"`
	Replicas   int               `json:"replicas"`
	Internal   bool              `json:"internal,omitempty"`
	Configs    map[string]string `json:"configs,omitempty"`
	Offsets    []partitionJSON   `json:"partition_offsets,omitempty"`
}

type partitionJSON struct {
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Replicas  []int32 `json:"replicas"`
	Start     int64   `json:"start_offset"`
	End       int64   `json:"end_offset"`
}

func describeTopic(d kadm.TopicDetail) topicJSON {
	t := topicJSON{Topic: d.Topic, Partitions: len(d.Partitions), Replicas: d.Partitions.NumReplicas(), Internal: d.IsInternal}
	if d.ID != (kadm.TopicID{}) {
		t.ID = d.ID.String()
	}
	return t
}

func topicList(ctx context.Context, args []string, e env) error {
	fs := newFlags("topic list", e)
	var cf clientFlags
	cf.register(fs, e, true)
	adm, _, err := cf.adminFor(fs, args, 0, "no argument")
	if err != nil {
		return err
	}
	defer adm.Close()
	details, err := adm.ListTopics(ctx)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	if err := details.Error(); err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	out := []topicJSON{}
	for _, d := range details.Sorted() {
		out = append(out, describeTopic(d))
	}
	if cf.json {
		return printJSON(e.stdout, out)
	}
	for _, t := range out {
		fmt.Fprintf(e.stdout, "%s\tpartitions=%d\treplicas=%d\n", t.Topic, t.Partitions, t.Replicas)
	}
	return nil
}

func topicDescribe(ctx context.Context, args []string, e env) error {
	fs := newFlags("topic describe", e)
	var cf clientFlags
	cf.register(fs, e, true)
	adm, pos, err := cf.adminFor(fs, args, 1, "a topic name")
	if err != nil {
		return err
	}
	name := pos[0]
	defer adm.Close()
	details, err := adm.ListTopics(ctx, name)
	if err != nil {
		return fmt.Errorf("describe topic %q: %w", name, err)
	}
	d, ok := details[name]
	if !ok {
		return fmt.Errorf("describe topic %q: not in the brokers' answer", name)
	}
	if d.Err != nil {
		return fmt.Errorf("describe topic %q: %w", name, d.Err)
	}
	t := describeTopic(d)
	starts, err := adm.ListStartOffsets(ctx, name)
	if err != nil {
		return fmt.Errorf("describe topic %q: start offsets: %w", name, err)
	}
	ends, err := adm.ListEndOffsets(ctx, name)
	if err != nil {
		return fmt.Errorf("describe topic %q: end offsets: %w", name, err)
	}
	for _, p := range d.Partitions.Sorted() {
		pj := partitionJSON{Partition: p.Partition, Leader: p.Leader, Replicas: p.Replicas, Start: -1, End: -1}
		if o, ok := starts.Lookup(name, p.Partition); ok && o.Err == nil {
			pj.Start = o.Offset
		}
		if o, ok := ends.Lookup(name, p.Partition); ok && o.Err == nil {
			pj.End = o.Offset
		}
		t.Offsets = append(t.Offsets, pj)
	}
	// Settings that differ from the broker's defaults, as kafka-topics
	// --describe shows them. A broker without DescribeConfigs still gets
	// the rest described.
	var configsErr error
	if rcs, err := adm.DescribeTopicConfigs(ctx, name); err != nil {
		configsErr = err
	} else if rc, err := rcs.On(name, nil); err != nil {
		configsErr = err
	} else if rc.Err != nil {
		configsErr = rc.Err
	} else {
		t.Configs = map[string]string{}
		for _, c := range rc.Configs {
			if c.Source == kmsg.ConfigSourceDynamicTopicConfig && c.Value != nil {
				t.Configs[c.Key] = *c.Value
			}
		}
	}
	if configsErr != nil {
		fmt.Fprintf(e.stderr, "replog: topic configs not described: %v\n", configsErr)
	}
	if cf.json {
		return printJSON(e.stdout, t)
	}
	fmt.Fprintf(e.stdout, "topic %s\tpartitions=%d\treplicas=%d", t.Topic, t.Partitions, t.Replicas)
	if t.ID != "" {
		fmt.Fprintf(e.stdout, "\tid=%s", t.ID)
	}
	fmt.Fprintln(e.stdout)
	for _, k := range slices.Sorted(maps.Keys(t.Configs)) {
		fmt.Fprintf(e.stdout, "  config %s=%s\n", k, t.Configs[k])
	}
	for _, p := range t.Offsets {
		fmt.Fprintf(e.stdout, "  partition %d\tleader=%d\treplicas=%v\tstart=%d\tend=%d\n", p.Partition, p.Leader, p.Replicas, p.Start, p.End)
	}
	return nil
}

func topicDelete(ctx context.Context, args []string, e env) error {
	fs := newFlags("topic delete", e)
	var cf clientFlags
	cf.register(fs, e, false)
	adm, pos, err := cf.adminFor(fs, args, 1, "a topic name")
	if err != nil {
		return err
	}
	defer adm.Close()
	resp, err := adm.DeleteTopic(ctx, pos[0])
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		if resp.ErrMessage != "" && !errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w: %s", err, resp.ErrMessage)
		}
		return fmt.Errorf("delete topic %q: %w", pos[0], err)
	}
	fmt.Fprintf(e.stdout, "deleted topic %s\n", pos[0])
	return nil
}
