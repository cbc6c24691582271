package main

import (
	"context"
	"fmt"

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
	Group        string       `json:"group"`
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

// lagJSON is one partition of a group's committed offsets.
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
		out = append(out, groupJSON{Group: g.Group, State: g.State, ProtocolType: g.ProtocolType, Coordinator: g.Coordinator})
	}
	if cf.json {
		return printJSON(e.stdout, out)
	}
	for _, g := range out {
		fmt.Fprintf(e.stdout, "%s\tstate=%s\tprotocol_type=%s\n", g.Group, g.State, g.ProtocolType)
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
	if err := l.Error(); err != nil {
		return fmt.Errorf("describe group %q: %w", name, err)
	}
	g := groupJSON{Group: l.Group, State: l.State, ProtocolType: l.ProtocolType, Protocol: l.Protocol, Coordinator: l.Coordinator.NodeID, TotalLag: l.Lag.Total()}
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
	if cf.json {
		return printJSON(e.stdout, g)
	}
	fmt.Fprintf(e.stdout, "group %s\tstate=%s\tprotocol=%s\tcoordinator=%d\tmembers=%d\ttotal_lag=%d\n",
		g.Group, g.State, g.Protocol, g.Coordinator, len(g.Members), g.TotalLag)
	for _, m := range g.Members {
		fmt.Fprintf(e.stdout, "  member %s\tclient=%s\thost=%s\tassigned=%v\n", m.Member, m.ClientID, m.Host, m.Assigned)
	}
	for _, o := range g.Offsets {
		fmt.Fprintf(e.stdout, "  %s/%d\tcommitted=%d\tend=%d\tlag=%d\tmember=%s\n", o.Topic, o.Partition, o.Committed, o.End, o.Lag, o.Member)
	}
	return nil
}
