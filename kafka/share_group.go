package replogkafka

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	"github.com/replog/replog/replication"
)

// Share groups (KIP-932) through the Kafka protocol: membership here
// (ShareGroupHeartbeat, ShareGroupDescribe), fetching and acknowledging in
// share_fetch.go. A share group's records, their locks, delivery counts
// and acknowledgements live in the share coordinator's Raft group (see
// replication/share.go), the same for Go members ([replog.NewShareConsumer])
// and Kafka clients of a group. Membership is held in memory by the group
// coordinator, the node leading the groups Raft group (see
// findCoordinator), as Kafka's classic groups here are: when another node
// becomes coordinator, members find it and join again, which costs them
// nothing, since what they hold is in the share coordinator.
//
// Assignment: every member of a share group is assigned every partition of
// the topics it subscribes to. Share groups let members read a partition
// together (the share coordinator hands each record to one of them at a
// time), so this is correct for any number of members; Kafka's simple
// assignor spreads partitions over members when there are more partitions
// than members, which fetches in larger batches.

// Share group limits. The heartbeat interval and session timeout are the
// group's share.heartbeat.interval.ms and share.session.timeout.ms
// (5s and 45s by default, as in Kafka).
const (
	// maxShareMembers caps the members of one share group
	// (group.share.max.size is 200 in Kafka), and maxShareGroups the
	// share groups with members on one coordinator.
	maxShareMembers = 1000
	maxShareGroups  = 10000
	// maxShareMembersAll caps the members of all share groups on one
	// coordinator, so that their memory is bounded whoever joins.
	maxShareMembersAll = 100000
	// maxShareSubscriptions caps the topics one member subscribes to.
	maxShareSubscriptions = 1000
)

// shareGroups is the share groups with members that this node
// coordinates.
type shareGroups struct {
	mu     sync.Mutex
	groups map[string]*shareGroup
	// members counts the members of all groups.
	members int
}

type shareGroup struct {
	// epoch goes up at each change of a member's assignment.
	epoch   int32
	members map[string]*shareMember
}

type shareMember struct {
	id       string
	epoch    int32
	rack     *string
	host     string
	topics   []string // subscribed, sorted
	assigned []shareAssigned
	seen     time.Time // last heartbeat
	// timeout is the group's session timeout at the last heartbeat.
	timeout time.Duration
}

// shareAssigned is a topic of a member's assignment.
type shareAssigned struct {
	topic      string
	id         [16]byte
	partitions []int32
}

func newShareGroups() *shareGroups { return &shareGroups{groups: map[string]*shareGroup{}} }

// shareAssignment is every partition of the topics subscribed that exist,
// sorted by topic name.
func (s *Server) shareAssignment(topics []string) []shareAssigned {
	meta := s.node.Metadata()
	var out []shareAssigned
	for _, name := range topics {
		tm := meta.Topics[name]
		if tm == nil || len(tm.Partitions) == 0 {
			continue
		}
		a := shareAssigned{topic: name, id: kafkaTopicID(tm)}
		for i := range tm.Partitions {
			a.partitions = append(a.partitions, int32(i))
		}
		out = append(out, a)
	}
	return out
}

func sameAssignment(a, b []shareAssigned) bool {
	return slices.EqualFunc(a, b, func(x, y shareAssigned) bool {
		return x.id == y.id && slices.Equal(x.partitions, y.partitions)
	})
}

// kafkaTopicID is the Kafka topic id of a topic, as Metadata names it.
func kafkaTopicID(tm *replication.TopicMeta) [16]byte {
	return topicID(replog.TopicInfo{Name: tm.Name, Created: time.Unix(0, tm.Created)})
}

// shareGroupHeartbeat answers a member's heartbeat (KIP-932): epoch 0
// joins, -1 leaves, any other must be the member's current epoch. The
// response carries the member's assignment when it changed.
func (s *Server) shareGroupHeartbeat(req *kmsg.ShareGroupHeartbeatRequest, host string) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ShareGroupHeartbeatResponse)
	fail := func(code int16, msg string) kmsg.Response {
		resp.ErrorCode, resp.ErrorMessage = code, kmsg.StringPtr(msg)
		return resp
	}
	switch {
	case !validShareName(req.GroupID):
		return fail(kerr.InvalidRequest.Code, fmt.Sprintf("group id of %d bytes (1 to %d)", len(req.GroupID), replication.MaxShareNameLength))
	case !validShareName(req.MemberID):
		return fail(kerr.InvalidRequest.Code, "the member id is made by the client, and may not be empty")
	case len(req.SubscribedTopicNames) > maxShareSubscriptions:
		return fail(kerr.InvalidRequest.Code, fmt.Sprintf("%d topics subscribed (at most %d)", len(req.SubscribedTopicNames), maxShareSubscriptions))
	case req.MemberEpoch < -1:
		return fail(kerr.InvalidRequest.Code, fmt.Sprintf("member epoch %d", req.MemberEpoch))
	}
	resp.MemberID = kmsg.StringPtr(req.MemberID)
	cfg := s.node.ShareGroupConfigStale(req.GroupID).WithDefaults()
	resp.HeartbeatIntervalMillis = int32(min(cfg.HeartbeatInterval/time.Millisecond, math.MaxInt32))
	var topics []string
	if req.SubscribedTopicNames != nil {
		topics = slices.Compact(slices.Sorted(slices.Values(req.SubscribedTopicNames)))
	}
	sg := s.shares
	sg.mu.Lock()
	defer sg.mu.Unlock()
	g := sg.groups[req.GroupID]
	var m *shareMember
	if g != nil {
		m = g.members[req.MemberID]
	}
	switch req.MemberEpoch {
	case -1:
		if m == nil {
			return fail(kerr.UnknownMemberID.Code, "not a member")
		}
		s.removeShareMember(req.GroupID, g, m)
		resp.MemberEpoch = -1
		return resp
	case 0:
		if len(topics) == 0 {
			return fail(kerr.InvalidRequest.Code, "a member joins with the topics it subscribes to")
		}
		if g == nil {
			if len(sg.groups) >= maxShareGroups {
				return fail(kerr.GroupMaxSizeReached.Code, "too many share groups with members on this coordinator")
			}
			g = &shareGroup{members: map[string]*shareMember{}}
			sg.groups[req.GroupID] = g
		}
		if m == nil {
			if len(g.members) >= maxShareMembers || sg.members >= maxShareMembersAll {
				if len(g.members) == 0 {
					delete(sg.groups, req.GroupID)
				}
				return fail(kerr.GroupMaxSizeReached.Code, fmt.Sprintf("the group has %d members, all share groups %d", len(g.members), sg.members))
			}
			m = &shareMember{id: req.MemberID}
			g.members[m.id] = m
			sg.members++
		}
		// A member joining again (it lost its epoch) gets its
		// assignment again.
		m.assigned = nil
	default:
		switch {
		case m == nil:
			return fail(kerr.UnknownMemberID.Code, "not a member (the coordinator moved, or the member's session expired): join again")
		case req.MemberEpoch != m.epoch:
			return fail(kerr.FencedMemberEpoch.Code, fmt.Sprintf("member epoch %d, expected %d", req.MemberEpoch, m.epoch))
		}
	}
	if topics != nil {
		m.topics = topics
	}
	if req.RackID != nil {
		m.rack = req.RackID
	}
	m.host, m.seen, m.timeout = host, time.Now(), cfg.SessionTimeout
	a := s.shareAssignment(m.topics)
	if m.assigned == nil || !sameAssignment(a, m.assigned) {
		g.epoch++
		m.epoch, m.assigned = g.epoch, a
		resp.Assignment = &kmsg.ShareGroupHeartbeatResponseAssignment{}
		for _, t := range a {
			tp := kmsg.NewShareGroupHeartbeatResponseAssignmentTopicPartition()
			tp.TopicID, tp.Partitions = t.id, t.partitions
			resp.Assignment.TopicPartitions = append(resp.Assignment.TopicPartitions, tp)
		}
	}
	resp.MemberEpoch = m.epoch
	return resp
}

// removeShareMember drops m from g and releases, in the background, the
// records it holds in the partitions it was assigned. Called with
// s.shares.mu held.
func (s *Server) removeShareMember(group string, g *shareGroup, m *shareMember) {
	delete(g.members, m.id)
	s.shares.members--
	if len(g.members) == 0 {
		delete(s.shares.groups, group)
	}
	keys := s.shareKeys(group, m.assigned)
	if len(keys) == 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		for _, k := range keys {
			if err := s.node.ShareLeave(ctx, k, m.id); err != nil && s.ctx.Err() == nil {
				// Its locks expire instead.
				s.log.Debug("replogkafka: share member's records not released", "group", group, "member", m.id, "err", err)
				return
			}
		}
	}()
}

// shareKeys names the share partitions of an assignment.
func (s *Server) shareKeys(group string, as []shareAssigned) []replication.SharePartitionKey {
	meta := s.node.Metadata()
	var keys []replication.SharePartitionKey
	for _, a := range as {
		tm := meta.Topics[a.topic]
		if tm == nil || kafkaTopicID(tm) != a.id {
			continue // deleted: its share state goes with it
		}
		for _, p := range a.partitions {
			keys = append(keys, replication.SharePartitionKey{Group: group, Topic: tm.Name, TopicID: tm.ID, Partition: int(p)})
		}
	}
	return keys
}

// expireShareMembers drops members not heard from within their group's
// session timeout, every second, until the server closes.
func (s *Server) expireShareMembers() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		s.shares.mu.Lock()
		for name, g := range s.shares.groups {
			for _, m := range g.members {
				if time.Since(m.seen) > m.timeout {
					s.log.Info("replogkafka: share group member's session expired", "group", name, "member", m.id)
					s.removeShareMember(name, g, m)
				}
			}
		}
		s.shares.mu.Unlock()
		s.shareSessions.expire()
	}
}

// resign forgets the members held here, when another node becomes the
// coordinator: they join again there.
func (sg *shareGroups) resign() {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	clear(sg.groups)
	sg.members = 0
}

// shareGroupDescribe describes share groups: members from this
// coordinator's memory, and a group with no member but share state in
// the share coordinator as Empty.
func (s *Server) shareGroupDescribe(ctx context.Context, req *kmsg.ShareGroupDescribeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ShareGroupDescribeResponse)
	var known map[string]bool
	for _, name := range req.GroupIDs {
		g := kmsg.NewShareGroupDescribeResponseGroup()
		g.GroupID, g.Assignor, g.AuthorizedOperations = name, "replog-all", -2147483648
		if members, epoch, ok := s.shareMembers(name); ok {
			g.GroupState, g.GroupEpoch, g.AssignmentEpoch, g.Members = "Stable", epoch, epoch, members
			resp.Groups = append(resp.Groups, g)
			continue
		}
		if known == nil {
			known = map[string]bool{}
			rctx, cancel := requestCtx(ctx, 0)
			groups, err := s.l.ListShareGroups(rctx)
			cancel()
			if err != nil {
				g.ErrorCode = groupErrorCode(err)
				resp.Groups = append(resp.Groups, g)
				known = nil
				continue
			}
			for _, sg := range groups {
				known[sg.Name] = true
			}
		}
		if known[name] {
			g.GroupState = "Empty"
		} else {
			g.ErrorCode = kerr.GroupIDNotFound.Code
			g.ErrorMessage = kmsg.StringPtr("no share group of that name")
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

// shareMembers describes the members of a share group held here.
func (s *Server) shareMembers(group string) ([]kmsg.ShareGroupDescribeResponseGroupMember, int32, bool) {
	s.shares.mu.Lock()
	defer s.shares.mu.Unlock()
	g := s.shares.groups[group]
	if g == nil {
		return nil, 0, false
	}
	var out []kmsg.ShareGroupDescribeResponseGroupMember
	for _, id := range slices.Sorted(maps.Keys(g.members)) {
		m := g.members[id]
		dm := kmsg.NewShareGroupDescribeResponseGroupMember()
		dm.MemberID, dm.RackID, dm.MemberEpoch, dm.ClientHost = m.id, m.rack, m.epoch, m.host
		dm.SubscribedTopicNames = slices.Clone(m.topics)
		for _, a := range m.assigned {
			tp := kmsg.NewShareGroupDescribeResponseGroupMemberAssignmentTopicPartition()
			tp.TopicID, tp.Topic, tp.Partitions = a.id, a.topic, slices.Clone(a.partitions)
			dm.Assignment.TopicPartitions = append(dm.Assignment.TopicPartitions, tp)
		}
		out = append(out, dm)
	}
	return out, g.epoch, true
}

func validShareName(s string) bool { return s != "" && len(s) <= replication.MaxShareNameLength }
