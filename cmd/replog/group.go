package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func groupCmd(ctx context.Context, args []string, e env) error {
	if len(args) == 0 {
		return usagef("group needs a subcommand: list or describe")
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "list":
		return groupList(ctx, rest, e)
	case "describe":
		return groupDescribe(ctx, rest, e)
	default:
		return usagef("unknown group subcommand %q: want list or describe", sub)
	}
}

// groupJSON is a group in -json output.
type groupJSON struct {
	Group string `json:"group"`
	// Type is "classic" or "share" (a share group, KIP-932: its offsets
	// are share-partition start offsets).
	Type         string       `json:"type,omitempty"`
	State        string       `json:"state"`
	ProtocolType string       `json:"protocol_type,omitempty"`
	Protocol     string       `json:"protocol,omitempty"`
	Coordinator  int32        `json:"coordinator"`
	Members      []memberJSON `json:"members,omitempty"`
	Offsets      []lagJSON    `json:"offsets,omitempty"`
	TotalLag     int64        `json:"total_lag"`
}

type memberJSON struct {
	Member     string             `json:"member"`
	InstanceID string             `json:"instance_id,omitempty"`
	ClientID   string             `json:"client_id"`
	Host       string             `json:"host"`
	Assigned   map[string][]int32 `json:"assigned,omitempty"`
}

// lagJSON is one partition of a group's committed offsets (of a share
// group, its share-partition start offsets, and End -1).
type lagJSON struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Committed int64  `json:"committed"` // -1: none
	End       int64  `json:"end"`
	Lag       int64  `json:"lag"` // -1: unknown
	Member    string `json:"member,omitempty"`
}

func groupList(ctx context.Context, args []string, e env) error {
	fs := newFlags("group list", e)
	var cf clientFlags
	cf.register(fs, e, true)
	adm, _, err := cf.adminFor(fs, args, 0, "no argument")
	if err != nil {
		return err
	}
	defer adm.Close()
	if err := requireAPIs(ctx, adm, "listing groups", kmsg.ListGroups); err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	out := []groupJSON{}
	for _, g := range groups.Sorted() {
		out = append(out, groupJSON{Group: g.Group, Type: g.GroupType, State: g.State, ProtocolType: g.ProtocolType, Coordinator: g.Coordinator})
	}
	if cf.json {
		return printJSON(e.stdout, out)
	}
	for _, g := range out {
		fmt.Fprintf(e.stdout, "%s\ttype=%s\tstate=%s\tprotocol_type=%s\n", g.Group, g.Type, g.State, g.ProtocolType)
	}
	return nil
}

func groupDescribe(ctx context.Context, args []string, e env) error {
	fs := newFlags("group describe", e)
	var cf clientFlags
	cf.register(fs, e, true)
	adm, pos, err := cf.adminFor(fs, args, 1, "a group name")
	if err != nil {
		return err
	}
	name := pos[0]
	defer adm.Close()
	if err := requireAPIs(ctx, adm, "describing groups", kmsg.FindCoordinator, kmsg.DescribeGroups, kmsg.OffsetFetch); err != nil {
		return fmt.Errorf("describe group %q: %w", name, err)
	}
	lags, err := adm.Lag(ctx, name)
	if err != nil {
		return fmt.Errorf("describe group %q: %w", name, err)
	}
	l, ok := lags[name]
	if !ok {
		return fmt.Errorf("describe group %q: not in the brokers' answer", name)
	}
	if err := l.Error(); errors.Is(err, kerr.GroupIDNotFound) {
		// Kafka answers so for a share group.
		if g, ok, serr := describeShareGroup(ctx, adm, name); serr != nil || ok {
			if serr != nil {
				return fmt.Errorf("describe group %q: %w", name, serr)
			}
			return printGroup(e, cf.json, g)
		}
	}
	if err := l.Error(); err != nil {
		return fmt.Errorf("describe group %q: %w", name, err)
	}
	g := groupJSON{Group: l.Group, Type: "classic", State: l.State, ProtocolType: l.ProtocolType, Protocol: l.Protocol, Coordinator: l.Coordinator.NodeID, TotalLag: l.Lag.Total()}
	for _, m := range l.Members {
		mj := memberJSON{Member: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost}
		if m.InstanceID != nil {
			mj.InstanceID = *m.InstanceID
		}
		if a, ok := m.Assigned.AsConsumer(); ok {
			mj.Assigned = map[string][]int32{}
			for _, t := range a.Topics {
				mj.Assigned[t.Topic] = t.Partitions
			}
		}
		g.Members = append(g.Members, mj)
	}
	for _, ml := range l.Lag.Sorted() {
		lj := lagJSON{Topic: ml.Topic, Partition: ml.Partition, Committed: ml.Commit.At, End: ml.End.Offset, Lag: ml.Lag}
		if ml.Member != nil {
			lj.Member = ml.Member.MemberID
		}
		g.Offsets = append(g.Offsets, lj)
	}
	return printGroup(e, cf.json, g)
}

// describeShareGroup describes a share group: its members and, per
// partition, the share-partition start offset (as "committed") and lag.
// ok is false if the brokers know no share group of the name.
func describeShareGroup(ctx context.Context, adm *kadm.Client, name string) (groupJSON, bool, error) {
	ds, err := adm.DescribeShareGroups(ctx, name)
	if err != nil {
		return groupJSON{}, false, err
	}
	d, ok := ds[name]
	if !ok || errors.Is(d.Err, kerr.GroupIDNotFound) {
		return groupJSON{}, false, nil
	}
	if d.Err != nil {
		return groupJSON{}, false, d.Err
	}
	g := groupJSON{Group: name, Type: "share", State: d.GroupState, Protocol: d.Assignor, Coordinator: d.Coordinator.NodeID}
	for _, m := range d.Members {
		mj := memberJSON{Member: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost, Assigned: map[string][]int32{}}
		m.Assignment.EachPartitions(func(t string, ps []int32) {
			slices.Sort(ps)
			mj.Assigned[t] = ps
		})
		g.Members = append(g.Members, mj)
	}
	offs, err := adm.DescribeShareGroupOffsets(ctx, name)
	if err != nil {
		return groupJSON{}, false, err
	}
	o := offs[name]
	if o.Err != nil {
		return groupJSON{}, false, o.Err
	}
	for _, t := range slices.Sorted(maps.Keys(o.Offsets)) {
		for _, p := range slices.Sorted(maps.Keys(o.Offsets[t])) {
			so := o.Offsets[t][p]
			g.Offsets = append(g.Offsets, lagJSON{Topic: t, Partition: p, Committed: so.StartOffset, End: -1, Lag: so.Lag})
			if so.Lag > 0 {
				g.TotalLag += so.Lag
			}
		}
	}
	return g, true, nil
}

func printGroup(e env, asJSON bool, g groupJSON) error {
	if asJSON {
		return printJSON(e.stdout, g)
	}
	fmt.Fprintf(e.stdout, "group %s\ttype=%s\tstate=%s\tprotocol=%s\tcoordinator=%d\tmembers=%d\ttotal_lag=%d\n",
		g.Group, g.Type, g.State, g.Protocol, g.Coordinator, len(g.Members), g.TotalLag)
	for _, m := range g.Members {
		fmt.Fprintf(e.stdout, "  member %s\tclient=%s\thost=%s\tassigned=%v\n", m.Member, m.ClientID, m.Host, m.Assigned)
	}
	for _, o := range g.Offsets {
		if g.Type == "share" {
			fmt.Fprintf(e.stdout, "  %s/%d\tstart=%d\tlag=%d\n", o.Topic, o.Partition, o.Committed, o.Lag)
			continue
		}
		fmt.Fprintf(e.stdout, "  %s/%d\tcommitted=%d\tend=%d\tlag=%d\tmember=%s\n", o.Topic, o.Partition, o.Committed, o.End, o.Lag, o.Member)
	}
	return nil
}
