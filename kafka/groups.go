package replogkafka

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kafka's classic consumer groups, with client-side assignment.
//
// # The protocol
//
// A member sends JoinGroup with the protocols it speaks (for consumers:
// assignors such as "range" or "cooperative-sticky", each with its
// subscription as metadata). A first JoinGroup without a member id gets
// MEMBER_ID_REQUIRED and an id to join with (KIP-394, from v4), so that a
// client that times out and retries does not leave a ghost member behind.
// A join moves the group to PreparingRebalance: every member must join
// again (members that are consuming learn it from Heartbeat's
// REBALANCE_IN_PROGRESS) within the rebalance timeout, the longest any
// member asked for; members that do not are dropped. The JoinGroup
// requests wait, on a channel, until then; the join then completes: the
// generation goes up, the protocol that every member speaks and most
// prefer is chosen, a leader is picked (the previous one if still there),
// and every JoinGroup is answered, the leader's with every member's
// metadata. The group is in CompletingRebalance until the leader's
// SyncGroup brings the assignment, which answers every SyncGroup (those
// of other members wait for it) with its member's share; the group is
// then Stable. Heartbeats keep a member's session alive: a member silent
// for its session timeout is dropped, as one that sends LeaveGroup, and
// the others rebalance. Requests of an old generation get
// ILLEGAL_GENERATION, of an unknown member UNKNOWN_MEMBER_ID.
//
// Static members (group.instance.id, KIP-345) keep their place across
// restarts: a JoinGroup without a member id but with a known instance id
// takes over the old member (whose id is fenced: FENCED_INSTANCE_ID); in a
// Stable group, a follower coming back with the same protocols gets the
// current generation and its old assignment without a rebalance.
//
// # Where the state lives
//
// Membership and rebalances live in memory, in this listener, as in a
// Kafka coordinator: they last no longer than a session, and after a
// coordinator moves, clients rebuild them by joining again. The committed
// offsets must outlive everything: they are replicated through Raft, in
// replog's groups state machine, keyed by (group, topic, partition), as
// a group of Kind kafka (see replication.GroupKindKafka). There replog's
// own DescribeGroup and ListGroups see them, and a replog consumer group
// cannot take the name: a JoinGroup claims the name in the state machine
// when the group forms here, so a JoinGroup or OffsetCommit on the name of
// a replog group gets INCONSISTENT_GROUP_PROTOCOL, and replog consumers
// joining a Kafka group get replog.ErrGroupKind.
//
// On a cluster, one node coordinates every group: the one leading
// replog's groups Raft group (see Server.coordinatorNode), which every
// node's FindCoordinator names; the others answer NOT_COORDINATOR. When
// that leadership moves, the old coordinator drops its groups (resign)
// and their members join at the new one, as after a Kafka coordinator
// fails over. Groups are not spread over nodes as Kafka spreads them
// over the partitions of __consumer_offsets: one node holds every
// group's membership (their commits go through Raft in any case).
//
// # Concurrency
//
// coordinator.mu guards every group; timers (session, rebalance, pending
// member ids) are time.AfterFunc callbacks that take it, do a few map
// operations and return, and do nothing once the listener closed, which
// stops them. Waiting requests hold channels (one buffer slot, so that
// the coordinator never blocks on a request whose connection went away);
// no Raft proposal is made under the lock.

// Bounds of a member's session timeout, as Kafka's
// group.min.session.timeout.ms (lower here, for tests and fast failover)
// and group.max.session.timeout.ms; the rebalance timeout has the same
// upper bound.
const (
	minSessionTimeout = time.Second
	maxSessionTimeout = 30 * time.Minute
)

type groupState int8

const (
	groupEmpty groupState = iota
	groupPreparingRebalance
	groupCompletingRebalance
	groupStable
)

// String is the state's name in Kafka's DescribeGroups and ListGroups.
func (s groupState) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable"}[s]
}

// coordinator holds the Kafka groups of a listener. Safe for concurrent
// use.
type coordinator struct {
	mu     sync.Mutex
	closed bool
	groups map[string]*group // a group with neither members nor pending ids is dropped
}

type group struct {
	name         string
	state        groupState
	protocolType string
	protocol     string // chosen at the last completed join
	generation   int32
	leader       string
	members      map[string]*member
	joinOrder    []string               // member ids, oldest first: the leader is the oldest
	pending      map[string]*time.Timer // KIP-394 member ids handed out, not joined yet
	static       map[string]string      // instance id -> member id
	rebalance    *time.Timer            // ends PreparingRebalance
}

type member struct {
	id             string
	instanceID     *string
	clientHost     string
	protocols      []kmsg.JoinGroupRequestProtocol
	sessionTimeout time.Duration
	rebalanceTO    time.Duration
	assignment     []byte
	session        *time.Timer // nil while the member waits in JoinGroup
	// join and sync are set while the member waits in JoinGroup and
	// SyncGroup, with the version of the request to answer.
	join        chan *kmsg.JoinGroupResponse
	joinVersion int16
	sync        chan *kmsg.SyncGroupResponse
	syncVersion int16
}

func newCoordinator() *coordinator {
	return &coordinator{groups: map[string]*group{}}
}

// close stops every timer; later requests get COORDINATOR_NOT_AVAILABLE.
// Waiting requests end with their connections.
func (c *coordinator) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, g := range c.groups {
		g.stopTimers()
	}
	c.groups = map[string]*group{}
}

// resign drops every group, and reports whether there was one: another
// node coordinates them now. Waiting JoinGroup and SyncGroup requests are
// answered NOT_COORDINATOR, so that their members look the coordinator up
// and join there; the committed offsets are in Raft and stay. Timers of
// the dropped groups that fire anyway find their group gone and do
// nothing.
func (c *coordinator) resign() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.groups) == 0 {
		return false
	}
	for _, g := range c.groups {
		g.stopTimers()
		for _, m := range g.members {
			if m.join != nil {
				resp := kmsg.NewPtrJoinGroupResponse()
				resp.Version, resp.ErrorCode, resp.Generation, resp.MemberID = m.joinVersion, kerr.NotCoordinator.Code, -1, m.id
				m.join <- resp
				m.join = nil
			}
			if m.sync != nil {
				m.sync <- &kmsg.SyncGroupResponse{Version: m.syncVersion, ErrorCode: kerr.NotCoordinator.Code}
				m.sync = nil
			}
		}
	}
	c.groups = map[string]*group{}
	return true
}

// stopTimers stops g's timers.
func (g *group) stopTimers() {
	if g.rebalance != nil {
		g.rebalance.Stop()
	}
	for _, t := range g.pending {
		t.Stop()
	}
	for _, m := range g.members {
		if m.session != nil {
			m.session.Stop()
		}
	}
}

func newMemberID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "replog-" + hex.EncodeToString(b[:])
}

// formed reports whether group name is held here: its name was claimed in
// the groups state machine when it formed.
func (c *coordinator) formed(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.groups[name] != nil
}

func joinError(req *kmsg.JoinGroupRequest, code int16) *kmsg.JoinGroupResponse {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.ErrorCode, resp.Generation, resp.MemberID = code, -1, req.MemberID
	return resp
}

// sessionTimeouts checks a JoinGroup's timeouts: the rebalance timeout
// is the session timeout before v1.
func sessionTimeouts(req *kmsg.JoinGroupRequest) (session, rebalance time.Duration, ok bool) {
	session = time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	rebalance = session
	if req.Version >= 1 && req.RebalanceTimeoutMillis > 0 {
		rebalance = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	}
	ok = session >= minSessionTimeout && session <= maxSessionTimeout && rebalance <= maxSessionTimeout
	return session, rebalance, ok
}

// join registers a JoinGroup and returns the channel its answer comes on.
// The group's name must be claimed already.
func (c *coordinator) join(req *kmsg.JoinGroupRequest, host string) <-chan *kmsg.JoinGroupResponse {
	out := make(chan *kmsg.JoinGroupResponse, 1)
	answer := func(code int16) <-chan *kmsg.JoinGroupResponse {
		out <- joinError(req, code)
		return out
	}
	session, rebalance, ok := sessionTimeouts(req)
	switch {
	case req.Group == "":
		return answer(kerr.InvalidGroupID.Code)
	case !ok:
		return answer(kerr.InvalidSessionTimeout.Code)
	case req.ProtocolType == "" || len(req.Protocols) == 0:
		return answer(kerr.InconsistentGroupProtocol.Code)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return answer(kerr.CoordinatorNotAvailable.Code)
	}
	g := c.groups[req.Group]
	if g == nil {
		if req.MemberID != "" {
			return answer(kerr.UnknownMemberID.Code)
		}
		g = &group{name: req.Group, members: map[string]*member{}, pending: map[string]*time.Timer{}, static: map[string]string{}}
		c.groups[req.Group] = g
	}
	defer c.dropIfEmpty(g)
	if len(g.members) == 0 {
		g.protocolType = req.ProtocolType
	}
	if len(g.members) > 0 && (req.ProtocolType != g.protocolType || !g.supports(req.MemberID, req.Protocols)) {
		return answer(kerr.InconsistentGroupProtocol.Code)
	}
	instance := ""
	if req.InstanceID != nil {
		instance = *req.InstanceID
	}
	var m *member
	switch {
	case req.MemberID == "" && instance != "" && g.static[instance] != "":
		// A static member back: it takes over its old member, whose id is
		// fenced from now on.
		old := g.members[g.static[instance]]
		if old.join != nil {
			old.join <- joinError(req, kerr.FencedInstanceID.Code)
			old.join = nil
		}
		if old.sync != nil {
			old.sync <- &kmsg.SyncGroupResponse{Version: old.syncVersion, ErrorCode: kerr.FencedInstanceID.Code}
			old.sync = nil
		}
		delete(g.members, old.id)
		newID := newMemberID()
		g.joinOrder[slices.Index(g.joinOrder, old.id)] = newID
		if g.leader == old.id {
			g.leader = newID
		}
		old.id = newID
		g.members[newID], g.static[instance] = old, newID
		if g.state == groupStable && g.leader != newID && sameProtocols(old.protocols, req.Protocols) {
			// KIP-345: no rebalance; its SyncGroup gets its assignment.
			c.resetSession(g, old)
			resp := g.joinResponse(old, req.Version)
			out <- resp
			return out
		}
		m = old
	case req.MemberID == "":
		id := newMemberID()
		if req.Version >= 4 && instance == "" {
			// KIP-394: the client joins again with this id.
			var t *time.Timer
			t = time.AfterFunc(session, func() { c.pendingExpired(g, id, t) })
			g.pending[id] = t
			resp := joinError(req, kerr.MemberIDRequired.Code)
			resp.MemberID = id
			out <- resp
			return out
		}
		m = g.add(id, req.InstanceID)
	default:
		m = g.members[req.MemberID]
		if m == nil {
			t := g.pending[req.MemberID]
			if t == nil {
				return answer(kerr.UnknownMemberID.Code)
			}
			t.Stop()
			delete(g.pending, req.MemberID)
			m = g.add(req.MemberID, req.InstanceID)
		} else if instance != "" && g.static[instance] != m.id || m.instanceID != nil && instance != *m.instanceID {
			return answer(kerr.FencedInstanceID.Code)
		}
	}
	unchanged := m.protocols != nil && sameProtocols(m.protocols, req.Protocols)
	m.protocols = slices.Clone(req.Protocols)
	m.sessionTimeout, m.rebalanceTO, m.clientHost = session, rebalance, host
	if m.join != nil { // a second JoinGroup of the member: the first is superseded
		m.join <- joinError(req, kerr.UnknownMemberID.Code)
	}
	m.join, m.joinVersion = out, req.Version
	if m.session != nil {
		// While it waits in JoinGroup the rebalance timeout, not its
		// session, bounds the member.
		m.session.Stop()
		m.session = nil
	}
	switch {
	case g.state == groupPreparingRebalance:
	case unchanged && (g.state == groupCompletingRebalance || g.state == groupStable && m.id != g.leader):
		// A member joining again with nothing new, as after a lost
		// response: the current generation, without a rebalance.
		m.join <- g.joinResponse(m, req.Version)
		m.join = nil
		c.resetSession(g, m)
		return out
	default:
		c.prepareRebalance(g)
	}
	c.maybeCompleteJoin(g)
	return out
}

func sameProtocols(a, b []kmsg.JoinGroupRequestProtocol) bool {
	return slices.EqualFunc(a, b, func(x, y kmsg.JoinGroupRequestProtocol) bool {
		return x.Name == y.Name && string(x.Metadata) == string(y.Metadata)
	})
}

// supports reports whether protocols has one that every member other than
// id speaks.
func (g *group) supports(id string, protocols []kmsg.JoinGroupRequestProtocol) bool {
	for _, p := range protocols {
		all := true
		for mid, m := range g.members {
			if mid != id && !slices.ContainsFunc(m.protocols, func(q kmsg.JoinGroupRequestProtocol) bool { return q.Name == p.Name }) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func (g *group) add(id string, instanceID *string) *member {
	m := &member{id: id}
	if instanceID != nil && *instanceID != "" {
		m.instanceID = instanceID
		g.static[*instanceID] = id
	}
	g.members[id] = m
	g.joinOrder = append(g.joinOrder, id)
	return m
}

// joinResponse is the answer to m's JoinGroup in the current generation:
// the leader gets every member's metadata for the chosen protocol.
func (g *group) joinResponse(m *member, version int16) *kmsg.JoinGroupResponse {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.Version = version
	resp.Generation = g.generation
	resp.ProtocolType, resp.Protocol = kmsg.StringPtr(g.protocolType), kmsg.StringPtr(g.protocol)
	resp.LeaderID, resp.MemberID = g.leader, m.id
	if m.id == g.leader {
		for _, id := range g.joinOrder {
			o := g.members[id]
			rm := kmsg.NewJoinGroupResponseMember()
			rm.MemberID, rm.InstanceID = id, o.instanceID
			for _, p := range o.protocols {
				if p.Name == g.protocol {
					rm.ProtocolMetadata = p.Metadata
					break
				}
			}
			resp.Members = append(resp.Members, rm)
		}
	}
	return resp
}

// prepareRebalance starts a rebalance: SyncGroups waiting are told to
// join again, and members get the longest rebalance timeout to do so.
func (c *coordinator) prepareRebalance(g *group) {
	if g.state == groupCompletingRebalance {
		for _, m := range g.members {
			if m.sync != nil {
				m.sync <- &kmsg.SyncGroupResponse{Version: m.syncVersion, ErrorCode: kerr.RebalanceInProgress.Code}
				m.sync = nil
			}
		}
	}
	g.state = groupPreparingRebalance
	var d time.Duration
	for _, m := range g.members {
		d = max(d, m.rebalanceTO)
	}
	if g.rebalance != nil {
		g.rebalance.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed || g.rebalance != t || c.groups[g.name] != g {
			return
		}
		// Members that did not join in time are out.
		for _, id := range slices.Clone(g.joinOrder) {
			if g.members[id].join == nil {
				c.remove(g, g.members[id])
			}
		}
		for id, pt := range g.pending {
			pt.Stop()
			delete(g.pending, id)
		}
		c.completeJoin(g)
		c.dropIfEmpty(g)
	})
	g.rebalance = t
}

// maybeCompleteJoin completes the join once every member (and every
// member id handed out) has joined.
func (c *coordinator) maybeCompleteJoin(g *group) {
	if g.state != groupPreparingRebalance || len(g.pending) > 0 {
		return
	}
	for _, m := range g.members {
		if m.join == nil {
			return
		}
	}
	c.completeJoin(g)
}

// completeJoin starts a generation with the members that joined.
func (c *coordinator) completeJoin(g *group) {
	if g.rebalance != nil {
		g.rebalance.Stop()
		g.rebalance = nil
	}
	g.generation++
	if len(g.members) == 0 {
		g.state, g.protocol, g.leader = groupEmpty, "", ""
		return
	}
	g.protocol = g.chooseProtocol()
	if g.members[g.leader] == nil {
		g.leader = g.joinOrder[0]
	}
	g.state = groupCompletingRebalance
	for _, m := range g.members {
		m.assignment = nil
		if m.join != nil {
			m.join <- g.joinResponse(m, m.joinVersion)
			m.join = nil
		}
		c.resetSession(g, m)
	}
}

// chooseProtocol picks the protocol every member speaks that most members
// prefer, as Kafka does; ties go to the leader's preference.
func (g *group) chooseProtocol() string {
	var candidates []string
	for _, p := range g.members[g.joinOrder[0]].protocols {
		if g.supports("", []kmsg.JoinGroupRequestProtocol{p}) {
			candidates = append(candidates, p.Name)
		}
	}
	votes := map[string]int{}
	for _, m := range g.members {
		for _, p := range m.protocols {
			if slices.Contains(candidates, p.Name) {
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, name := range candidates {
		if best == "" || votes[name] > votes[best] {
			best = name
		}
	}
	return best
}

// resetSession restarts m's session timer.
func (c *coordinator) resetSession(g *group, m *member) {
	if m.session != nil {
		m.session.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(m.sessionTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed || m.session != t || g.members[m.id] != m || c.groups[g.name] != g {
			return
		}
		c.remove(g, m)
		c.rebalanceAfterRemoval(g)
	})
	m.session = t
}

func (c *coordinator) pendingExpired(g *group, id string, t *time.Timer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || g.pending[id] != t || c.groups[g.name] != g {
		return
	}
	delete(g.pending, id)
	c.maybeCompleteJoin(g)
	c.dropIfEmpty(g)
}

// remove takes m out of g, answering its waiting requests.
func (c *coordinator) remove(g *group, m *member) {
	if m.session != nil {
		m.session.Stop()
		m.session = nil
	}
	if m.join != nil {
		m.join <- &kmsg.JoinGroupResponse{Version: m.joinVersion, ErrorCode: kerr.UnknownMemberID.Code, Generation: -1}
		m.join = nil
	}
	if m.sync != nil {
		m.sync <- &kmsg.SyncGroupResponse{Version: m.syncVersion, ErrorCode: kerr.UnknownMemberID.Code}
		m.sync = nil
	}
	delete(g.members, m.id)
	g.joinOrder = slices.DeleteFunc(g.joinOrder, func(id string) bool { return id == m.id })
	if m.instanceID != nil && g.static[*m.instanceID] == m.id {
		delete(g.static, *m.instanceID)
	}
	if g.leader == m.id {
		g.leader = ""
	}
}

// rebalanceAfterRemoval rebalances the members left after some left.
func (c *coordinator) rebalanceAfterRemoval(g *group) {
	switch g.state {
	case groupStable, groupCompletingRebalance:
		c.prepareRebalance(g)
	}
	c.maybeCompleteJoin(g)
	c.dropIfEmpty(g)
}

// dropIfEmpty forgets a group with no members and no pending ids: its
// name and offsets are in the groups state machine, and the next member
// forms it again.
func (c *coordinator) dropIfEmpty(g *group) {
	if len(g.members) == 0 && len(g.pending) == 0 && c.groups[g.name] == g {
		if g.rebalance != nil {
			g.rebalance.Stop()
		}
		delete(c.groups, g.name)
	}
}

// member finds a member of a request that names its group, member id,
// generation and instance id; a zero code means it is current.
func (c *coordinator) member(name, id string, instance *string, generation int32) (*group, *member, int16) {
	g := c.groups[name]
	if c.closed {
		return nil, nil, kerr.CoordinatorNotAvailable.Code
	}
	if g == nil {
		return nil, nil, kerr.UnknownMemberID.Code
	}
	m := g.members[id]
	if instance != nil && *instance != "" {
		if cur := g.static[*instance]; cur != "" && cur != id {
			return g, nil, kerr.FencedInstanceID.Code
		}
	}
	switch {
	case m == nil:
		return g, nil, kerr.UnknownMemberID.Code
	case generation != g.generation:
		return g, m, kerr.IllegalGeneration.Code
	}
	return g, m, 0
}

// sync registers a SyncGroup and returns the channel its answer comes on.
func (c *coordinator) sync(req *kmsg.SyncGroupRequest) <-chan *kmsg.SyncGroupResponse {
	out := make(chan *kmsg.SyncGroupResponse, 1)
	answer := func(code int16, assignment []byte, g *group) <-chan *kmsg.SyncGroupResponse {
		resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
		resp.ErrorCode, resp.MemberAssignment = code, assignment
		if g != nil {
			resp.ProtocolType, resp.Protocol = kmsg.StringPtr(g.protocolType), kmsg.StringPtr(g.protocol)
		}
		out <- resp
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g, m, code := c.member(req.Group, req.MemberID, req.InstanceID, req.Generation)
	switch {
	case code != 0:
		return answer(code, nil, nil)
	case req.ProtocolType != nil && *req.ProtocolType != g.protocolType || req.Protocol != nil && *req.Protocol != g.protocol:
		return answer(kerr.InconsistentGroupProtocol.Code, nil, nil)
	}
	switch g.state {
	case groupEmpty:
		return answer(kerr.UnknownMemberID.Code, nil, nil)
	case groupPreparingRebalance:
		return answer(kerr.RebalanceInProgress.Code, nil, nil)
	case groupStable:
		c.resetSession(g, m)
		return answer(0, m.assignment, g)
	}
	// CompletingRebalance: wait for the leader's assignment.
	c.resetSession(g, m)
	if m.sync != nil {
		m.sync <- &kmsg.SyncGroupResponse{Version: m.syncVersion, ErrorCode: kerr.RebalanceInProgress.Code}
	}
	m.sync, m.syncVersion = out, req.Version
	if m.id == g.leader {
		for _, a := range req.GroupAssignment {
			if o := g.members[a.MemberID]; o != nil {
				o.assignment = a.MemberAssignment
			}
		}
		g.state = groupStable
		for _, o := range g.members {
			if o.sync != nil {
				resp := &kmsg.SyncGroupResponse{Version: o.syncVersion, MemberAssignment: o.assignment}
				resp.ProtocolType, resp.Protocol = kmsg.StringPtr(g.protocolType), kmsg.StringPtr(g.protocol)
				o.sync <- resp
				o.sync = nil
			}
		}
	}
	return out
}

// heartbeat answers a Heartbeat.
func (c *coordinator) heartbeat(req *kmsg.HeartbeatRequest) int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, m, code := c.member(req.Group, req.MemberID, req.InstanceID, req.Generation)
	if code != 0 {
		return code
	}
	switch g.state {
	case groupEmpty:
		return kerr.UnknownMemberID.Code
	case groupPreparingRebalance:
		if m.join == nil {
			c.resetSession(g, m)
		}
		return kerr.RebalanceInProgress.Code
	}
	c.resetSession(g, m)
	return 0
}

// leave removes members: by member id, or by instance id for static
// members (v3+). It returns a code per member.
func (c *coordinator) leave(name string, ids []string, instances []*string) []int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	codes := make([]int16, len(ids))
	g := c.groups[name]
	if c.closed {
		for i := range codes {
			codes[i] = kerr.CoordinatorNotAvailable.Code
		}
		return codes
	}
	removed := false
	for i, id := range ids {
		var m *member
		if g != nil {
			m = g.members[id]
			if inst := instances[i]; inst != nil && *inst != "" {
				cur := g.static[*inst]
				switch {
				case cur == "":
					m = nil
				case id != "" && cur != id:
					codes[i] = kerr.FencedInstanceID.Code
					continue
				default:
					m = g.members[cur]
				}
			}
		}
		if m == nil {
			codes[i] = kerr.UnknownMemberID.Code
			continue
		}
		c.remove(g, m)
		removed = true
	}
	if removed {
		c.rebalanceAfterRemoval(g)
	}
	return codes
}

// commitAllowed checks an OffsetCommit's member and generation, as Kafka
// does: a commit without generation (-1) and member is allowed only when
// the group has no members (kadm and standalone consumers); a member
// commits in its generation while the group is Stable or preparing a
// rebalance (as it gives partitions up), not while the leader assigns.
func (c *coordinator) commitAllowed(name, id string, instance *string, generation int32) int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return kerr.CoordinatorNotAvailable.Code
	}
	g := c.groups[name]
	if g == nil || len(g.members) == 0 {
		if generation < 0 {
			return 0
		}
		return kerr.IllegalGeneration.Code
	}
	g, m, code := c.member(name, id, instance, generation)
	if code != 0 {
		return code
	}
	if g.state == groupCompletingRebalance {
		return kerr.RebalanceInProgress.Code
	}
	if m.join == nil {
		c.resetSession(g, m)
	}
	return 0
}

// groupView is a group as DescribeGroups and ListGroups show it.
type groupView struct {
	name, state, protocolType, protocol string
	members                             []kmsg.DescribeGroupsResponseGroupMember
	subscribed                          map[string]bool // topics of consumer members; nil if unknown
}

// view describes group name if it is held here.
func (c *coordinator) view(name string) (groupView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	if g == nil {
		return groupView{}, false
	}
	v := groupView{name: g.name, state: g.state.String(), protocolType: g.protocolType, protocol: g.protocol}
	if g.protocolType == "consumer" {
		v.subscribed = map[string]bool{}
	}
	for _, id := range g.joinOrder {
		m := g.members[id]
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.InstanceID, dm.ClientHost = id, m.instanceID, m.clientHost
		dm.MemberAssignment = m.assignment
		for _, p := range m.protocols {
			if p.Name == g.protocol || g.protocol == "" {
				dm.ProtocolMetadata = p.Metadata
				break
			}
		}
		if v.subscribed != nil {
			for _, p := range m.protocols {
				var meta kmsg.ConsumerMemberMetadata
				if meta.ReadFrom(p.Metadata) != nil {
					v.subscribed = nil // unknown: protect every topic
					break
				}
				for _, t := range meta.Topics {
					v.subscribed[t] = true
				}
			}
		}
		v.members = append(v.members, dm)
	}
	return v, true
}

// names lists the groups held here.
func (c *coordinator) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.groups))
	for name := range c.groups {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// forget drops group name for DeleteGroups, unless it has members or
// pending member ids; it reports whether the group may be deleted.
func (c *coordinator) forget(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	if g == nil {
		return true
	}
	if len(g.members) > 0 || len(g.pending) > 0 {
		return false
	}
	c.dropIfEmpty(g)
	return true
}
