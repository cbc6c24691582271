package replogkafka

// Share groups' offsets admin APIs (KIP-932): DescribeShareGroupOffsets,
// AlterShareGroupOffsets and DeleteShareGroupOffsets, over the Log's share
// group admin (Log.DescribeShareGroup, ResetShareGroup,
// DeleteShareGroupOffsets). Clients send them to the group coordinator,
// the node leading the groups Raft group, like the group APIs: other
// nodes answer NOT_COORDINATOR. The state itself is the share
// coordinator's, the same from every node.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/replog/replog"
)

// shareAdminAPIs are the versions kmsg has.
func shareAdminAPIs() []servedAPI {
	return []servedAPI{
		{kmsg.DescribeShareGroupOffsets.Int16(), versionRange{0, 1}},
		{kmsg.AlterShareGroupOffsets.Int16(), versionRange{0, 0}},
		{kmsg.DeleteShareGroupOffsets.Int16(), versionRange{0, 0}},
	}
}

// handleShareAdmin starts a share offsets request; ok is false for other
// APIs. As the group APIs, each runs in the connection's writer.
func (s *Server) handleShareAdmin(req kmsg.Request) (reply, bool) {
	var run func(context.Context) kmsg.Response
	switch req := req.(type) {
	case *kmsg.DescribeShareGroupOffsetsRequest:
		run = func(ctx context.Context) kmsg.Response { return s.describeShareGroupOffsets(ctx, req) }
	case *kmsg.AlterShareGroupOffsetsRequest:
		run = func(ctx context.Context) kmsg.Response { return s.alterShareGroupOffsets(ctx, req) }
	case *kmsg.DeleteShareGroupOffsetsRequest:
		run = func(ctx context.Context) kmsg.Response { return s.deleteShareGroupOffsets(ctx, req) }
	default:
		return nil, false
	}
	return func(ctx context.Context) kmsg.Response {
		if code := s.coordinatorCode(); code != 0 {
			return shareAdminError(req, code, nil)
		}
		return run(ctx)
	}, true
}

// shareAdminError answers req with code for every group, or at the top.
func shareAdminError(req kmsg.Request, code int16, msg *string) kmsg.Response {
	switch req := req.(type) {
	case *kmsg.DescribeShareGroupOffsetsRequest:
		resp := req.ResponseKind().(*kmsg.DescribeShareGroupOffsetsResponse)
		for _, rg := range req.Groups {
			g := kmsg.NewDescribeShareGroupOffsetsResponseGroup()
			g.GroupID, g.ErrorCode, g.ErrorMessage = rg.GroupID, code, msg
			resp.Groups = append(resp.Groups, g)
		}
		return resp
	case *kmsg.AlterShareGroupOffsetsRequest:
		resp := req.ResponseKind().(*kmsg.AlterShareGroupOffsetsResponse)
		resp.ErrorCode, resp.ErrorMessage = code, msg
		return resp
	case *kmsg.DeleteShareGroupOffsetsRequest:
		resp := req.ResponseKind().(*kmsg.DeleteShareGroupOffsetsResponse)
		resp.ErrorCode, resp.ErrorMessage = code, msg
		return resp
	}
	return nil
}

// shareGroupsWithMembers lists the share groups with members held here
// (see share_group.go).
func (s *Server) shareGroupsWithMembers() []string {
	s.shares.mu.Lock()
	defer s.shares.mu.Unlock()
	return slices.Collect(maps.Keys(s.shares.groups))
}

// shareHasMembers reports whether a share group has members held here:
// Kafka's condition for altering or deleting it. Members that hold
// records also hold locks, which the share coordinator checks.
func (s *Server) shareHasMembers(group string) bool {
	_, _, ok := s.shareMembers(group)
	return ok
}

// errShareMembers refuses an admin operation on a share group with
// members.
func errShareMembers(group string) error {
	return fmt.Errorf("share group %q has members", group)
}

// describeShareGroupOffsets answers each group's share-partition start
// offsets and lags. Topics nil: every topic the group has state of that
// exists; named partitions the group has no state of, or of topics that
// do not exist, answer start offset -1, as Kafka, and an unknown group
// has no state: it is no error.
func (s *Server) describeShareGroupOffsets(ctx context.Context, req *kmsg.DescribeShareGroupOffsetsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeShareGroupOffsetsResponse)
	rctx, cancel := requestCtx(ctx, 0)
	defer cancel()
	for _, rg := range req.Groups {
		g := kmsg.NewDescribeShareGroupOffsetsResponseGroup()
		g.GroupID = rg.GroupID
		if !validShareName(rg.GroupID) {
			g.ErrorCode = kerr.InvalidGroupID.Code
			resp.Groups = append(resp.Groups, g)
			continue
		}
		info, err := s.l.DescribeShareGroup(rctx, rg.GroupID)
		switch {
		case errors.Is(err, replog.ErrGroupNotFound):
		case ctx.Err() != nil:
			return nil // the connection closed
		case err != nil:
			g.ErrorCode, g.ErrorMessage = groupErrorCode(err), errorMessage(err)
			resp.Groups = append(resp.Groups, g)
			continue
		}
		// By topic and partition; of a topic deleted and created again,
		// the newest (listed last) wins.
		state := map[string]map[int32]replog.SharePartitionInfo{}
		for _, p := range info.Partitions {
			if state[p.Topic] == nil {
				state[p.Topic] = map[int32]replog.SharePartitionInfo{}
			}
			state[p.Topic][int32(p.Partition)] = p
		}
		topics := rg.Topics
		if topics == nil {
			for _, name := range slices.Sorted(maps.Keys(state)) {
				if _, err := s.l.Topic(name); err != nil {
					continue // deleted: Kafka lists only topics that exist
				}
				rt := kmsg.NewDescribeShareGroupOffsetsRequestGroupTopic()
				rt.Topic = name
				rt.Partitions = slices.Sorted(maps.Keys(state[name]))
				topics = append(topics, rt)
			}
		}
		for _, rt := range topics {
			t := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopic()
			t.Topic = rt.Topic
			topic, err := s.l.Topic(rt.Topic)
			if err == nil {
				t.TopicID = topicID(topic.Info())
			}
			for _, part := range rt.Partitions {
				p := kmsg.NewDescribeShareGroupOffsetsResponseGroupTopicPartition()
				p.Partition, p.StartOffset = part, -1
				if ps, ok := state[rt.Topic][part]; ok && err == nil {
					p.StartOffset, p.Lag = ps.Start, ps.Lag
				}
				t.Partitions = append(t.Partitions, p)
			}
			g.Topics = append(g.Topics, t)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

// alterShareGroupOffsets sets start offsets of an empty share group
// (NON_EMPTY_GROUP while a member holds a record under an unexpired
// lock), creating the group's state of partitions it had none of. One
// coordinator command per topic: topics apply one by one, each topic's
// partitions at once.
func (s *Server) alterShareGroupOffsets(ctx context.Context, req *kmsg.AlterShareGroupOffsetsRequest) kmsg.Response {
	if !validShareName(req.GroupID) {
		return shareAdminError(req, kerr.InvalidGroupID.Code, nil)
	}
	if s.shareHasMembers(req.GroupID) {
		return shareAdminError(req, kerr.NonEmptyGroup.Code, errorMessage(errShareMembers(req.GroupID)))
	}
	resp := req.ResponseKind().(*kmsg.AlterShareGroupOffsetsResponse)
	rctx, cancel := requestCtx(ctx, 0)
	defer cancel()
	seen := map[string]bool{}
	for _, rt := range req.Topics {
		t := kmsg.NewAlterShareGroupOffsetsResponseTopic()
		t.Topic = rt.Topic
		code, err := s.alterShareTopic(rctx, req.GroupID, rt, seen[rt.Topic])
		seen[rt.Topic] = true
		if ctx.Err() != nil {
			return nil // the connection closed
		}
		if topic, terr := s.l.Topic(rt.Topic); terr == nil {
			t.TopicID = topicID(topic.Info())
		}
		if code == kerr.NonEmptyGroup.Code {
			resp.ErrorCode, resp.ErrorMessage = code, errorMessage(err)
		}
		for _, rp := range rt.Partitions {
			p := kmsg.NewAlterShareGroupOffsetsResponseTopicPartition()
			p.Partition, p.ErrorCode, p.ErrorMessage = rp.Partition, code, errorMessage(err)
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// alterShareTopic resets one topic's partitions, all or none.
func (s *Server) alterShareTopic(ctx context.Context, group string, rt kmsg.AlterShareGroupOffsetsRequestTopic, twice bool) (int16, error) {
	topic, err := s.l.Topic(rt.Topic)
	switch {
	case twice:
		return kerr.InvalidRequest.Code, fmt.Errorf("topic %q named twice", rt.Topic)
	case err != nil:
		return errorCode(err), err
	case len(rt.Partitions) == 0:
		return kerr.InvalidRequest.Code, errors.New("no partitions")
	}
	offsets := map[int]int64{}
	for _, rp := range rt.Partitions {
		p := int(rp.Partition)
		switch _, dup := offsets[p]; {
		case rp.Partition < 0 || p >= topic.Partitions():
			return kerr.UnknownTopicOrPartition.Code, fmt.Errorf("%s has no partition %d", rt.Topic, rp.Partition)
		case dup:
			return kerr.InvalidRequest.Code, fmt.Errorf("partition %d named twice", rp.Partition)
		case rp.StartOffset < 0:
			return kerr.InvalidRequest.Code, fmt.Errorf("start offset %d", rp.StartOffset)
		}
		offsets[p] = rp.StartOffset
	}
	err = s.l.ResetShareGroup(ctx, group, replog.OffsetReset{Topic: rt.Topic, Offsets: offsets})
	if err != nil {
		return groupErrorCode(err), err
	}
	s.log.Info("replogkafka: share group offsets altered", "group", group, "topic", rt.Topic)
	return 0, nil
}

// deleteShareGroupOffsets forgets an empty share group's state of whole
// topics: GROUP_ID_NOT_FOUND if the group has no state, NON_EMPTY_GROUP
// while a member holds a record under an unexpired lock, and
// UNKNOWN_TOPIC_OR_PARTITION for a topic that does not exist, as Kafka.
// One coordinator command per topic.
func (s *Server) deleteShareGroupOffsets(ctx context.Context, req *kmsg.DeleteShareGroupOffsetsRequest) kmsg.Response {
	if !validShareName(req.GroupID) {
		return shareAdminError(req, kerr.InvalidGroupID.Code, nil)
	}
	if s.shareHasMembers(req.GroupID) {
		return shareAdminError(req, kerr.NonEmptyGroup.Code, errorMessage(errShareMembers(req.GroupID)))
	}
	resp := req.ResponseKind().(*kmsg.DeleteShareGroupOffsetsResponse)
	rctx, cancel := requestCtx(ctx, 0)
	defer cancel()
	// The group first: an unknown one is GROUP_ID_NOT_FOUND whatever
	// its topics.
	if _, err := s.node.ShareGroup(rctx, req.GroupID); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return shareAdminError(req, groupErrorCode(err), errorMessage(err))
	}
	for _, rt := range req.Topics {
		t := kmsg.NewDeleteShareGroupOffsetsResponseTopic()
		t.Topic = rt.Topic
		topic, err := s.l.Topic(rt.Topic)
		if err == nil {
			t.TopicID = topicID(topic.Info())
			err = s.l.DeleteShareGroupOffsets(rctx, req.GroupID, rt.Topic)
		}
		if ctx.Err() != nil {
			return nil // the connection closed
		}
		code := groupErrorCode(err)
		switch code {
		case kerr.GroupIDNotFound.Code, kerr.NonEmptyGroup.Code:
			// The group's, not the topic's: Kafka answers them at the
			// top.
			resp.ErrorCode, resp.ErrorMessage = code, errorMessage(err)
			resp.Topics = nil
			return resp
		}
		t.ErrorCode, t.ErrorMessage = code, errorMessage(err)
		if code == 0 {
			s.log.Info("replogkafka: share group offsets deleted", "group", req.GroupID, "topic", rt.Topic)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}
