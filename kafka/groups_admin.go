package replogkafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	"github.com/replog/replog/replication"
)

// replogProtocolType is the protocol type Kafka's admin APIs show for a
// replog consumer group (server-side assignment); its members'
// assignments are encoded as a Kafka consumer's, so tools can read them.
const replogProtocolType = "replog"

// storedView describes a group of the groups state machine that no member
// holds here: a replog group, or a Kafka group without members.
func storedView(g *replication.GroupState) groupView {
	if g.Kind == replication.GroupKindKafka {
		return groupView{name: g.Name, state: "Empty", subscribed: map[string]bool{}}
	}
	v := groupView{name: g.Name, state: "Empty", protocolType: replogProtocolType, protocol: g.Strategy}
	if len(g.Members) > 0 {
		v.state = "Stable"
	}
	for _, id := range slices.Sorted(maps.Keys(g.Members)) {
		m := g.Members[id]
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID = id
		if m.Static {
			dm.InstanceID = kmsg.StringPtr(id)
		}
		var a kmsg.ConsumerMemberAssignment
		for _, topic := range slices.Sorted(maps.Keys(m.Target)) {
			at := kmsg.ConsumerMemberAssignmentTopic{Topic: topic}
			for _, p := range m.Target[topic] {
				at.Partitions = append(at.Partitions, int32(p))
			}
			a.Topics = append(a.Topics, at)
		}
		dm.MemberAssignment = a.AppendTo(nil)
		v.members = append(v.members, dm)
	}
	return v
}

// listGroups lists the groups held here and those of the groups state
// machine (replog groups, and Kafka groups without members), of type
// "classic", and the share groups (see listShareGroups).
func (s *Server) listGroups(ctx context.Context, req *kmsg.ListGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	views := map[string]groupView{}
	cctx, cancel := s.groupsCtx(ctx)
	stored, err := s.node.Groups(cctx, "")
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		resp.ErrorCode = groupErrorCode(err)
		return resp
	}
	for _, g := range stored {
		views[g.Name] = storedView(g)
	}
	for _, name := range s.groups.names() {
		if v, ok := s.groups.view(name); ok {
			views[name] = v
		}
	}
	for _, name := range slices.Sorted(maps.Keys(views)) {
		v := views[name]
		if len(req.StatesFilter) > 0 && !slices.ContainsFunc(req.StatesFilter, func(f string) bool { return strings.EqualFold(f, v.state) }) {
			continue
		}
		if len(req.TypesFilter) > 0 && !slices.ContainsFunc(req.TypesFilter, func(f string) bool { return strings.EqualFold(f, "classic") }) {
			continue
		}
		g := kmsg.NewListGroupsResponseGroup()
		g.Group, g.ProtocolType, g.GroupState, g.GroupType = name, v.protocolType, v.state, "classic"
		resp.Groups = append(resp.Groups, g)
	}
	if len(req.TypesFilter) > 0 && !slices.ContainsFunc(req.TypesFilter, func(f string) bool { return strings.EqualFold(f, "share") }) {
		return resp
	}
	shares, err := s.listShareGroups(ctx, views)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		resp.ErrorCode = groupErrorCode(err)
		return resp
	}
	for _, g := range shares {
		if len(req.StatesFilter) > 0 && !slices.ContainsFunc(req.StatesFilter, func(f string) bool { return strings.EqualFold(f, g.GroupState) }) {
			continue
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

// listShareGroups lists the share groups with members here or state in
// the share coordinator, of type "share", but those named as a classic
// group too (replog keeps share groups apart from consumer groups; Kafka
// has one namespace): "Stable" while it has members or one of its records
// is under an unexpired lock (a replog ShareConsumer's), else "Empty".
func (s *Server) listShareGroups(ctx context.Context, classic map[string]groupView) ([]kmsg.ListGroupsResponseGroup, error) {
	cctx, cancel := s.groupsCtx(ctx)
	defer cancel()
	names, err := s.node.ShareGroups(cctx)
	if err != nil {
		return nil, err
	}
	members := s.shareGroupsWithMembers()
	var out []kmsg.ListGroupsResponseGroup
	for _, name := range slices.Compact(slices.Sorted(slices.Values(append(names, members...)))) {
		if _, ok := classic[name]; ok {
			continue
		}
		g := kmsg.NewListGroupsResponseGroup()
		g.Group, g.ProtocolType, g.GroupState, g.GroupType = name, "share", "Stable", "share"
		if !slices.Contains(members, name) {
			ps, err := s.node.ShareGroup(cctx, name)
			if errors.Is(err, replication.ErrGroupNotFound) {
				continue // deleted since listed
			}
			if err != nil {
				return nil, err
			}
			if !shareLocked(ps, time.Now()) {
				g.GroupState = "Empty"
			}
		}
		out = append(out, g)
	}
	return out, nil
}

// shareLocked reports whether a record of ps is acquired under a lock
// unexpired at now.
func shareLocked(ps []*replication.SharePartitionState, now time.Time) bool {
	for _, p := range ps {
		for _, r := range p.InFlight {
			if r.State == replication.ShareAcquired && r.Deadline > now.UnixNano() {
				return true
			}
		}
	}
	return false
}

// describe describes group name, as held here or stored; ok is false if
// there is no such group.
func (s *Server) describe(ctx context.Context, name string) (v groupView, ok bool, err error) {
	if v, ok := s.groups.view(name); ok {
		return v, true, nil
	}
	g, err := s.readGroup(ctx, name)
	if err != nil || g == nil {
		return groupView{}, false, err
	}
	return storedView(g), true, nil
}

func (s *Server) describeGroups(ctx context.Context, req *kmsg.DescribeGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, name := range req.Groups {
		g := kmsg.NewDescribeGroupsResponseGroup()
		g.Group = name
		v, ok, err := s.describe(ctx, name)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			g.ErrorCode = groupErrorCode(err)
		case !ok && s.isShareGroup(ctx, name):
			// As Kafka: DescribeGroups describes classic groups only
			// (ShareGroupDescribe, share ones).
			g.ErrorCode = kerr.GroupIDNotFound.Code
			g.ErrorMessage = kmsg.StringPtr(fmt.Sprintf("Group %s is not a classic group; it is a share group.", name))
		case !ok:
			g.State = "Dead" // as Kafka answers for an unknown group
		default:
			g.State, g.ProtocolType, g.Protocol, g.Members = v.state, v.protocolType, v.protocol, v.members
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

// deleteGroups deletes groups without members, Kafka's or replog's, with
// their offsets, and share groups of the name with their state and
// configs (see Log.DeleteShareGroup). A group with members here or in the
// groups state machine, or a share group whose member holds a record
// under an unexpired lock, is NON_EMPTY_GROUP; a name that is neither
// GROUP_ID_NOT_FOUND.
func (s *Server) deleteGroups(ctx context.Context, req *kmsg.DeleteGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, name := range req.Groups {
		g := kmsg.NewDeleteGroupsResponseGroup()
		g.Group = name
		if !s.groups.forget(name) {
			g.ErrorCode = kerr.NonEmptyGroup.Code
			resp.Groups = append(resp.Groups, g)
			continue
		}
		err := s.l.DeleteGroup(ctx, name)
		if err == nil {
			s.log.Info("replogkafka: group deleted", "group", name)
		}
		if errors.Is(err, replog.ErrGroupNotFound) && s.shareHasMembers(name) {
			err = errShareMembers(name)
			g.ErrorCode, g.ErrorMessage = kerr.NonEmptyGroup.Code, errorMessage(err)
			resp.Groups = append(resp.Groups, g)
			continue
		}
		if validShareName(name) && (err == nil || errors.Is(err, replog.ErrGroupNotFound)) {
			serr := s.l.DeleteShareGroup(ctx, name)
			switch {
			case serr == nil:
				s.log.Info("replogkafka: share group deleted", "group", name)
				err = nil
			case err == nil && errors.Is(serr, replog.ErrGroupNotFound):
				// A classic group only.
			default:
				err = serr
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		g.ErrorCode, g.ErrorMessage = groupErrorCode(err), errorMessage(err)
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

// isShareGroup reports whether the share coordinator holds state of a
// group of the name (false if it cannot tell).
func (s *Server) isShareGroup(ctx context.Context, name string) bool {
	if !validShareName(name) {
		return false
	}
	if s.shareHasMembers(name) {
		return true
	}
	cctx, cancel := s.groupsCtx(ctx)
	defer cancel()
	_, err := s.node.ShareGroup(cctx, name)
	return err == nil
}

// offsetDelete drops a Kafka group's offsets of partitions of topics its
// members do not subscribe to (GROUP_SUBSCRIBED_TO_TOPIC otherwise).
func (s *Server) offsetDelete(ctx context.Context, req *kmsg.OffsetDeleteRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	v, held := s.groups.view(req.Group)
	drop := map[string][]int{}
	for _, rt := range req.Topics {
		t := kmsg.NewOffsetDeleteResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewOffsetDeleteResponseTopicPartition()
			p.Partition = rp.Partition
			switch {
			case held && len(v.members) > 0 && (v.subscribed == nil || v.subscribed[rt.Topic]):
				p.ErrorCode = kerr.GroupSubscribedToTopic.Code
			case rp.Partition < 0 || rp.Partition >= replication.MaxPartitions || rt.Topic == "":
				p.ErrorCode = kerr.UnknownTopicOrPartition.Code
			default:
				drop[rt.Topic] = append(drop[rt.Topic], int(rp.Partition))
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	if req.Group == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	cctx, cancel := s.groupsCtx(ctx)
	defer cancel()
	var err error
	if len(drop) > 0 {
		_, err = s.node.DeleteKafkaOffsets(cctx, req.Group, drop)
	} else {
		// Nothing to drop: the group must still exist.
		var g *replication.GroupState
		if g, err = s.readGroup(cctx, req.Group); err == nil && g == nil {
			err = replication.ErrGroupNotFound
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		resp.ErrorCode = groupErrorCode(err)
	}
	return resp
}
