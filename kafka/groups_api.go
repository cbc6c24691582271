package replogkafka

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
	"github.com/replog/replog/replication"
)

// groupAPIs are the group coordinator's APIs (see groups.go), inside the
// versions franz-go, sarama (JoinGroup v2 when pinned to Kafka 1.0) and
// librdkafka negotiate. Left out: OffsetCommit and OffsetFetch v10 (topic
// ids), FindCoordinator v5+ and DescribeGroups v6 (share groups and
// KIP-848 errors), OffsetFetch v0 (ZooKeeper offsets).
func groupAPIs() []servedAPI {
	return []servedAPI{
		{kmsg.FindCoordinator.Int16(), versionRange{0, 4}},
		{kmsg.JoinGroup.Int16(), versionRange{0, 9}},
		{kmsg.SyncGroup.Int16(), versionRange{0, 5}},
		{kmsg.Heartbeat.Int16(), versionRange{0, 4}},
		{kmsg.LeaveGroup.Int16(), versionRange{0, 5}},
		{kmsg.OffsetCommit.Int16(), versionRange{0, 9}},
		{kmsg.OffsetFetch.Int16(), versionRange{1, 9}},
		{kmsg.ListGroups.Int16(), versionRange{0, 5}},
		{kmsg.DescribeGroups.Int16(), versionRange{0, 5}},
		{kmsg.DeleteGroups.Int16(), versionRange{0, 2}},
		{kmsg.OffsetDelete.Int16(), versionRange{0, 0}},
		{kmsg.ShareGroupHeartbeat.Int16(), versionRange{1, 1}},
		{kmsg.ShareGroupDescribe.Int16(), versionRange{1, 1}},
		{kmsg.ShareFetch.Int16(), versionRange{1, 2}},
		{kmsg.ShareAcknowledge.Int16(), versionRange{1, 2}},
	}
}

// handleGroup starts a group API request; ok is false for other APIs.
// Each runs in the connection's writer, in request order, as Kafka runs a
// connection's requests one at a time: a JoinGroup waiting for its
// rebalance holds back the responses after it, never other connections.
func (s *Server) handleGroup(c *conn, req kmsg.Request) (reply, bool) {
	rep, ok := s.handleGroupHere(c, req)
	if !ok {
		return nil, false
	}
	return func(ctx context.Context) kmsg.Response {
		if resp := s.redirectGroup(req); resp != nil {
			return resp
		}
		return rep(ctx)
	}, true
}

// redirectGroup answers a request for the group coordinator when this
// node is not the coordinator (see coordinatorCode): NOT_COORDINATOR (or
// COORDINATOR_NOT_AVAILABLE during an election), and for ListGroups an
// empty list, as a Kafka broker lists only the groups it coordinates
// (clients ask every broker). It returns nil on the coordinator, and for
// the requests any node serves: FindCoordinator, and OffsetFetch, whose
// offsets are read through Raft, the same on every node.
func (s *Server) redirectGroup(req kmsg.Request) kmsg.Response {
	switch req.(type) {
	case *kmsg.FindCoordinatorRequest, *kmsg.OffsetFetchRequest:
		return nil
	}
	code := s.coordinatorCode()
	if code == 0 {
		return nil
	}
	switch req := req.(type) {
	case *kmsg.ListGroupsRequest:
		return req.ResponseKind()
	case *kmsg.JoinGroupRequest:
		return joinError(req, code)
	case *kmsg.SyncGroupRequest:
		resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.HeartbeatRequest:
		resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.LeaveGroupRequest:
		resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.OffsetCommitRequest:
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range req.Topics {
			t := kmsg.NewOffsetCommitResponseTopic()
			t.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				p := kmsg.NewOffsetCommitResponseTopicPartition()
				p.Partition, p.ErrorCode = rp.Partition, code
				t.Partitions = append(t.Partitions, p)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp
	case *kmsg.DescribeGroupsRequest:
		resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
		for _, name := range req.Groups {
			g := kmsg.NewDescribeGroupsResponseGroup()
			g.Group, g.ErrorCode = name, code
			resp.Groups = append(resp.Groups, g)
		}
		return resp
	case *kmsg.DeleteGroupsRequest:
		resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
		for _, name := range req.Groups {
			g := kmsg.NewDeleteGroupsResponseGroup()
			g.Group, g.ErrorCode = name, code
			resp.Groups = append(resp.Groups, g)
		}
		return resp
	case *kmsg.OffsetDeleteRequest:
		resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.ShareGroupHeartbeatRequest:
		resp := req.ResponseKind().(*kmsg.ShareGroupHeartbeatResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.ShareGroupDescribeRequest:
		resp := req.ResponseKind().(*kmsg.ShareGroupDescribeResponse)
		for _, name := range req.GroupIDs {
			g := kmsg.NewShareGroupDescribeResponseGroup()
			g.GroupID, g.ErrorCode = name, code
			resp.Groups = append(resp.Groups, g)
		}
		return resp
	}
	return nil
}

// handleGroupHere starts a group API request on the coordinator.
func (s *Server) handleGroupHere(c *conn, req kmsg.Request) (reply, bool) {
	switch req := req.(type) {
	case *kmsg.FindCoordinatorRequest:
		return ready(s.findCoordinator(req)), true
	case *kmsg.JoinGroupRequest:
		return func(ctx context.Context) kmsg.Response { return s.joinGroup(ctx, req, c.remote()) }, true
	case *kmsg.SyncGroupRequest:
		return func(ctx context.Context) kmsg.Response { return wait(ctx, s.groups.sync(req)) }, true
	case *kmsg.HeartbeatRequest:
		return func(context.Context) kmsg.Response {
			resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
			resp.ErrorCode = s.groups.heartbeat(req)
			return resp
		}, true
	case *kmsg.LeaveGroupRequest:
		return func(context.Context) kmsg.Response { return s.leaveGroup(req) }, true
	case *kmsg.OffsetCommitRequest:
		return func(ctx context.Context) kmsg.Response { return s.offsetCommit(ctx, req) }, true
	case *kmsg.OffsetFetchRequest:
		return func(ctx context.Context) kmsg.Response { return s.offsetFetch(ctx, req) }, true
	case *kmsg.ListGroupsRequest:
		return func(ctx context.Context) kmsg.Response { return s.listGroups(ctx, req) }, true
	case *kmsg.DescribeGroupsRequest:
		return func(ctx context.Context) kmsg.Response { return s.describeGroups(ctx, req) }, true
	case *kmsg.DeleteGroupsRequest:
		return func(ctx context.Context) kmsg.Response { return s.deleteGroups(ctx, req) }, true
	case *kmsg.OffsetDeleteRequest:
		return func(ctx context.Context) kmsg.Response { return s.offsetDelete(ctx, req) }, true
	case *kmsg.ShareGroupHeartbeatRequest:
		return func(context.Context) kmsg.Response { return s.shareGroupHeartbeat(req, c.remote()) }, true
	case *kmsg.ShareGroupDescribeRequest:
		return func(ctx context.Context) kmsg.Response { return s.shareGroupDescribe(ctx, req) }, true
	}
	return nil, false
}

// wait returns the response that comes on ch, or nil (no response) once
// the connection closes.
func wait[R kmsg.Response](ctx context.Context, ch <-chan R) kmsg.Response {
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		return nil
	}
}

// groupErrorCode maps an error of the groups state machine to a Kafka
// code: a name used by replog consumers is INCONSISTENT_GROUP_PROTOCOL,
// and an unavailable groups Raft group COORDINATOR_NOT_AVAILABLE, which
// clients retry after looking the coordinator up again.
func groupErrorCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, replication.ErrGroupKind), errors.Is(err, replog.ErrGroupKind):
		return kerr.InconsistentGroupProtocol.Code
	case errors.Is(err, replication.ErrGroupNotFound), errors.Is(err, replog.ErrGroupNotFound):
		return kerr.GroupIDNotFound.Code
	case errors.Is(err, replication.ErrGroupNotEmpty), errors.Is(err, replog.ErrGroupNotEmpty):
		return kerr.NonEmptyGroup.Code
	}
	switch errorCode(err) {
	case kerr.NotLeaderForPartition.Code, kerr.RequestTimedOut.Code, kerr.UnknownServerError.Code:
		return kerr.CoordinatorNotAvailable.Code
	}
	return errorCode(err)
}

// findCoordinator names the coordinator of every group, and of every
// transactional id (key type 1, see txn.go): the node leading the groups
// Raft group (see coordinatorNode), the same answer on every node. While
// none is known, or it runs no listener, the answer is
// COORDINATOR_NOT_AVAILABLE, which clients retry.
func (s *Server) findCoordinator(req *kmsg.FindCoordinatorRequest) *kmsg.FindCoordinatorResponse {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	coord, found := findBroker(s.brokers(), s.coordinatorNode())
	answer := func(key string) (code int16, msg *string) {
		switch {
		case req.CoordinatorType != 0 && req.CoordinatorType != 1:
			return kerr.InvalidRequest.Code, kmsg.StringPtr("replog coordinates consumer groups and transactions only")
		case key == "" && req.CoordinatorType == 1:
			return kerr.InvalidRequest.Code, kmsg.StringPtr("empty transactional id")
		case key == "":
			return kerr.InvalidGroupID.Code, nil
		case !found:
			return kerr.CoordinatorNotAvailable.Code, kmsg.StringPtr("no group coordinator elected, or it runs no Kafka listener")
		}
		return 0, nil
	}
	if req.Version < 4 {
		resp.ErrorCode, resp.ErrorMessage = answer(req.CoordinatorKey)
		if resp.ErrorCode == 0 {
			resp.NodeID, resp.Host, resp.Port = coord.id, coord.host, coord.port
		} else {
			resp.NodeID, resp.Port = -1, -1
		}
		return resp
	}
	for _, key := range req.CoordinatorKeys {
		c := kmsg.NewFindCoordinatorResponseCoordinator()
		c.Key = key
		c.ErrorCode, c.ErrorMessage = answer(key)
		if c.ErrorCode == 0 {
			c.NodeID, c.Host, c.Port = coord.id, coord.host, coord.port
		} else {
			c.NodeID, c.Port = -1, -1
		}
		resp.Coordinators = append(resp.Coordinators, c)
	}
	return resp
}

// joinGroup claims the group's name in the groups state machine when the
// group forms here (so that replog consumers cannot take it, nor it
// theirs), then waits in the coordinator for the rebalance.
func (s *Server) joinGroup(ctx context.Context, req *kmsg.JoinGroupRequest, host string) kmsg.Response {
	if req.Group != "" && !s.groups.formed(req.Group) {
		cctx, cancel := context.WithTimeout(ctx, s.node.AttemptTimeout())
		_, err := s.node.ClaimKafkaGroup(cctx, req.Group)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, replication.ErrGroupKind) {
				s.log.Warn("replogkafka: a Kafka client joined a replog consumer group; refused", "group", req.Group, "remote", host)
			}
			return joinError(req, groupErrorCode(err))
		}
	}
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return wait(ctx, s.groups.join(req, host))
}

func (s *Server) leaveGroup(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	if req.Version < 3 {
		resp.ErrorCode = s.groups.leave(req.Group, []string{req.MemberID}, []*string{nil})[0]
		return resp
	}
	ids, instances := make([]string, len(req.Members)), make([]*string, len(req.Members))
	for i, m := range req.Members {
		ids[i], instances[i] = m.MemberID, m.InstanceID
	}
	for i, code := range s.groups.leave(req.Group, ids, instances) {
		m := kmsg.NewLeaveGroupResponseMember()
		m.MemberID, m.InstanceID, m.ErrorCode = ids[i], instances[i], code
		resp.Members = append(resp.Members, m)
	}
	return resp
}

// groupsCtx bounds a request to the groups Raft group.
func (s *Server) groupsCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.node.AttemptTimeout())
}

// offsetCommit checks the member and generation in the coordinator, then
// replicates the offsets through the groups Raft group.
func (s *Server) offsetCommit(ctx context.Context, req *kmsg.OffsetCommitRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	generation, member := req.Generation, req.MemberID
	if req.Version == 0 {
		generation, member = -1, ""
	}
	code := s.groups.commitAllowed(req.Group, member, req.InstanceID, generation)
	if req.Group == "" {
		code = kerr.InvalidGroupID.Code
	}
	commits := map[string]map[int]replication.CommittedOffset{}
	var sent []*kmsg.OffsetCommitResponseTopicPartition // to be told the commit's outcome
	for _, rt := range req.Topics {
		t := kmsg.NewOffsetCommitResponseTopic()
		t.Topic = rt.Topic
		topic, terr := s.l.Topic(rt.Topic)
		for _, rp := range rt.Partitions {
			p := kmsg.NewOffsetCommitResponseTopicPartition()
			p.Partition = rp.Partition
			switch {
			case code != 0:
				p.ErrorCode = code
			case terr != nil || rp.Partition < 0 || int(rp.Partition) >= topic.Partitions():
				p.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case rp.Metadata != nil && len(*rp.Metadata) > replication.MaxOffsetMetadata:
				p.ErrorCode = kerr.OffsetMetadataTooLarge.Code
			case rp.Offset < 0:
				p.ErrorCode = kerr.OffsetOutOfRange.Code
			default:
				if commits[rt.Topic] == nil {
					commits[rt.Topic] = map[int]replication.CommittedOffset{}
				}
				co := replication.CommittedOffset{Offset: rp.Offset}
				if rp.Metadata != nil {
					co.Metadata = *rp.Metadata
				}
				commits[rt.Topic][int(rp.Partition)] = co
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	if len(commits) == 0 {
		return resp
	}
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			if resp.Topics[i].Partitions[j].ErrorCode == 0 {
				sent = append(sent, &resp.Topics[i].Partitions[j])
			}
		}
	}
	cctx, cancel := s.groupsCtx(ctx)
	defer cancel()
	if _, err := s.node.CommitKafkaOffsets(cctx, req.Group, commits); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		for _, p := range sent {
			p.ErrorCode = groupErrorCode(err)
		}
	}
	return resp
}

// readGroup reads a group from the groups state machine, linearizably;
// nil and no error if there is none.
func (s *Server) readGroup(ctx context.Context, name string) (*replication.GroupState, error) {
	cctx, cancel := s.groupsCtx(ctx)
	defer cancel()
	gs, err := s.node.Groups(cctx, name)
	if errors.Is(err, replication.ErrGroupNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return gs[0], nil
}

// committed is the offsets of a group, by topic and partition: a Kafka
// group's, or a replog group's for its topics (so Kafka tools show them
// too).
func committed(g *replication.GroupState) map[string]map[int]replication.CommittedOffset {
	if g == nil {
		return nil
	}
	if g.Kind == replication.GroupKindKafka {
		return g.TopicOffsets
	}
	out := map[string]map[int]replication.CommittedOffset{}
	for topic, t := range g.Topics {
		out[topic] = map[int]replication.CommittedOffset{}
		for p, off := range t.Offsets {
			out[topic][p] = replication.CommittedOffset{Offset: off}
		}
	}
	return out
}

// offsetFetchPart is one partition of an OffsetFetch answer.
type offsetFetchPart struct {
	partition int32
	offset    int64
	metadata  string
	code      int16 // UNSTABLE_OFFSET_COMMIT, with offset -1
}

// fetchOffsets answers one group of an OffsetFetch: the topics asked for
// (nil: every topic with an offset), -1 for partitions without one. With
// requireStable (KIP-447), partitions whose offsets a transaction has
// pending get UNSTABLE_OFFSET_COMMIT (see txn_offsets.go).
func (s *Server) fetchOffsets(ctx context.Context, group string, topics map[string][]int32, all, requireStable bool) (map[string][]offsetFetchPart, int16) {
	var unstable map[string]map[int]bool
	if requireStable {
		var err error
		if unstable, err = s.unstable(ctx, group); err != nil {
			return nil, groupErrorCode(err)
		}
	}
	g, err := s.readGroup(ctx, group)
	if err != nil {
		return nil, groupErrorCode(err)
	}
	offsets := committed(g)
	out := map[string][]offsetFetchPart{}
	part := func(topic string, p int32) offsetFetchPart {
		fp := offsetFetchPart{partition: p, offset: -1}
		if unstable[topic][int(p)] {
			fp.code = kerr.UnstableOffsetCommit.Code
		} else if co, ok := offsets[topic][int(p)]; ok {
			fp.offset, fp.metadata = co.Offset, co.Metadata
		}
		return fp
	}
	if all {
		for topic, ps := range offsets {
			for _, p := range slices.Sorted(maps.Keys(ps)) {
				out[topic] = append(out[topic], part(topic, int32(p)))
			}
		}
		return out, 0
	}
	for topic, ps := range topics {
		out[topic] = []offsetFetchPart{}
		for _, p := range ps {
			out[topic] = append(out[topic], part(topic, p))
		}
	}
	return out, 0
}

func (s *Server) offsetFetch(ctx context.Context, req *kmsg.OffsetFetchRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if req.Version < 8 {
		topics := map[string][]int32{}
		var order []string
		for _, t := range req.Topics {
			if _, ok := topics[t.Topic]; !ok {
				order = append(order, t.Topic)
			}
			topics[t.Topic] = append(topics[t.Topic], t.Partitions...)
		}
		all := req.Topics == nil && req.Version >= 2
		got, code := s.fetchOffsets(ctx, req.Group, topics, all, req.Version >= 7 && req.RequireStable)
		if ctx.Err() != nil {
			return nil
		}
		resp.ErrorCode = code
		if all {
			order = slices.Sorted(maps.Keys(got))
		}
		for _, topic := range order {
			t := kmsg.NewOffsetFetchResponseTopic()
			t.Topic = topic
			for _, fp := range got[topic] {
				p := kmsg.NewOffsetFetchResponseTopicPartition()
				p.Partition, p.Offset, p.Metadata, p.LeaderEpoch = fp.partition, fp.offset, kmsg.StringPtr(fp.metadata), -1
				p.ErrorCode = code
				if code == 0 {
					p.ErrorCode = fp.code
				}
				t.Partitions = append(t.Partitions, p)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp
	}
	for _, rg := range req.Groups {
		g := kmsg.NewOffsetFetchResponseGroup()
		g.Group = rg.Group
		topics := map[string][]int32{}
		var order []string
		for _, t := range rg.Topics {
			if _, ok := topics[t.Topic]; !ok {
				order = append(order, t.Topic)
			}
			topics[t.Topic] = append(topics[t.Topic], t.Partitions...)
		}
		got, code := s.fetchOffsets(ctx, rg.Group, topics, rg.Topics == nil, req.RequireStable)
		if ctx.Err() != nil {
			return nil
		}
		g.ErrorCode = code
		if rg.Topics == nil {
			order = slices.Sorted(maps.Keys(got))
		}
		for _, topic := range order {
			t := kmsg.NewOffsetFetchResponseGroupTopic()
			t.Topic = topic
			for _, fp := range got[topic] {
				p := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				p.Partition, p.Offset, p.Metadata, p.LeaderEpoch = fp.partition, fp.offset, kmsg.StringPtr(fp.metadata), -1
				p.ErrorCode = fp.code
				t.Partitions = append(t.Partitions, p)
			}
			g.Topics = append(g.Topics, t)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}
