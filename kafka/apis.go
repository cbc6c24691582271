package replogkafka

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// versionRange is the versions of one API the listener answers.
type versionRange struct{ min, max int16 }

// servedAPI is an API the listener answers, with its versions.
type servedAPI struct {
	key int16
	versionRange
}

// servedAPIs lists the APIs the listener answers, by key. Minimums:
// Produce from v3 and Fetch from v4, the first versions whose records are
// magic v2 batches (older clients speak message sets, which Kafka 4
// dropped too), ListOffsets from v1 (v0 has another answer shape).
// Maximums: what the handlers implement, inside what franz-go, sarama and
// librdkafka negotiate; Fetch stops at v12 and Produce at v11, before topic
// ids replace names.
func servedAPIs() []servedAPI {
	return append([]servedAPI{
		{kmsg.Produce.Int16(), versionRange{3, 11}},
		{kmsg.Fetch.Int16(), versionRange{4, 12}},
		{kmsg.ListOffsets.Int16(), versionRange{1, 6}},
		{kmsg.Metadata.Int16(), versionRange{0, 12}},
		{kmsg.ApiVersions.Int16(), versionRange{0, 3}},
		{kmsg.CreateTopics.Int16(), versionRange{0, 7}},
		{kmsg.DeleteTopics.Int16(), versionRange{0, 6}},
		{kmsg.InitProducerID.Int16(), versionRange{0, 4}},
		{kmsg.DescribeConfigs.Int16(), versionRange{0, 4}},
		{kmsg.IncrementalAlterConfigs.Int16(), versionRange{0, 1}},
		{kmsg.CreatePartitions.Int16(), versionRange{0, 3}},
		{kmsg.DeleteRecords.Int16(), versionRange{0, 2}},
		{kmsg.DescribeCluster.Int16(), versionRange{0, 2}},
	}, slices.Concat(groupAPIs(), txnAPIs(), saslAPIs(), shareAdminAPIs())...)
}

// served returns the versions of API key that the listener answers.
func served(key int16) (versionRange, bool) {
	for _, a := range servedAPIs() {
		if a.key == key {
			return a.versionRange, true
		}
	}
	return versionRange{}, false
}

// maxSmallRequestBytes caps every request but Produce. kmsg decodes an
// array of n elements into n structs allocated at once, and a struct can be
// 20 times its smallest encoding: only Produce needs large frames, and they
// are mostly record bytes, which are not copied.
const maxSmallRequestBytes = 1 << 20

// maxRequestBytes is the largest frame accepted for an API.
func maxRequestBytes(key int16, max int32) int32 {
	if key == kmsg.Produce.Int16() {
		return max
	}
	return min(max, maxSmallRequestBytes)
}

// reply waits for a response; see pending.
type reply func(ctx context.Context) kmsg.Response

// ready is the reply of a response already made.
func ready(r kmsg.Response) reply { return func(context.Context) kmsg.Response { return r } }

// errBadRequest is returned by decode for a frame that gets no response:
// the connection is closed, as Kafka does.
var errBadRequest = errors.New("replogkafka: bad request")

// decode parses one request frame (without its size) and starts its work.
// An error means the connection must close.
func (s *Server) decode(c *conn, frame []byte) (*pending, error) {
	corr, req, err := parseRequest(frame)
	if err != nil {
		return nil, err
	}
	if req == nil {
		// KIP-511: an ApiVersions version we do not speak is answered
		// with a v0 body (and a v0 header) listing what we do, so the
		// client retries with one of them.
		resp := s.apiVersionsResponse(0)
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		return &pending{corr: corr, reply: ready(resp)}, nil
	}
	// ApiVersions responses keep header v0 even when flexible, so that a
	// client can read one whatever version it sent.
	flexible := req.IsFlexible() && req.Key() != kmsg.ApiVersions.Int16()
	rep, err := s.handle(c, req)
	if err != nil {
		return nil, err
	}
	return &pending{corr: corr, flexible: flexible, reply: rep}, nil
}

// parseRequest decodes a request frame: header v1 or v2 (with tagged
// fields, for flexible versions) and body. It returns a nil request, and no
// error, for an ApiVersions request of a version not served. It never
// panics: kmsg's decoders check every length against the bytes left.
func parseRequest(frame []byte) (corr int32, req kmsg.Request, err error) {
	b := kbin.Reader{Src: frame}
	key, version := b.Int16(), b.Int16()
	corr = b.Int32()
	if !b.Ok() {
		return 0, nil, fmt.Errorf("%w: short header", errBadRequest)
	}
	vr, ok := served(key)
	if !ok {
		return corr, nil, fmt.Errorf("%w: API key %d (%s) not served", errBadRequest, key, kmsg.NameForKey(key))
	}
	if version < vr.min || version > vr.max {
		if key == kmsg.ApiVersions.Int16() {
			return corr, nil, nil
		}
		return corr, nil, fmt.Errorf("%w: %s v%d not served (v%d to v%d are)", errBadRequest, kmsg.NameForKey(key), version, vr.min, vr.max)
	}
	req = kmsg.RequestForKey(key)
	req.SetVersion(version)
	b.NullableString() // client id
	if req.IsFlexible() {
		kmsg.SkipTags(&b)
	}
	if !b.Ok() {
		return corr, nil, fmt.Errorf("%w: short %s header", errBadRequest, kmsg.NameForKey(key))
	}
	if err := req.ReadFrom(b.Src); err != nil {
		return corr, nil, fmt.Errorf("%w: %s v%d: %w", errBadRequest, kmsg.NameForKey(key), version, err)
	}
	return corr, req, nil
}

// handle starts the work of a decoded request, whose key and version are
// served.
func (s *Server) handle(c *conn, req kmsg.Request) (reply, error) {
	switch req := req.(type) {
	case *kmsg.ApiVersionsRequest:
		return ready(s.apiVersionsResponse(req.Version)), nil
	case *kmsg.MetadataRequest:
		return ready(s.metadata(c.ctx, req)), nil
	case *kmsg.CreateTopicsRequest:
		return ready(s.createTopics(c.ctx, req)), nil
	case *kmsg.DeleteTopicsRequest:
		return ready(s.deleteTopics(c.ctx, req)), nil
	case *kmsg.ProduceRequest:
		return s.produce(c.ctx, req), nil
	case *kmsg.FetchRequest:
		return s.fetch(req), nil
	case *kmsg.ShareFetchRequest:
		return s.shareFetch(req), nil
	case *kmsg.ShareAcknowledgeRequest:
		return s.shareAcknowledge(req), nil
	case *kmsg.ListOffsetsRequest:
		return ready(s.listOffsets(c.ctx, req)), nil
	case *kmsg.InitProducerIDRequest:
		return func(ctx context.Context) kmsg.Response { return s.initProducerID(ctx, req) }, nil
	case *kmsg.DescribeConfigsRequest:
		return ready(s.describeConfigs(c.ctx, req)), nil
	case *kmsg.IncrementalAlterConfigsRequest:
		return ready(s.incrementalAlterConfigs(c.ctx, req)), nil
	case *kmsg.CreatePartitionsRequest:
		return ready(s.createPartitions(c.ctx, req)), nil
	case *kmsg.DeleteRecordsRequest:
		return ready(s.deleteRecords(c.ctx, req)), nil
	case *kmsg.DescribeClusterRequest:
		return ready(s.describeCluster(req)), nil
	case *kmsg.SASLHandshakeRequest:
		return ready(s.saslHandshake(c, req)), nil
	case *kmsg.SASLAuthenticateRequest:
		return ready(s.saslAuthenticate(c, req)), nil
	}
	if rep, ok := s.handleGroup(c, req); ok {
		return rep, nil
	}
	if rep, ok := s.handleTxn(req); ok {
		return rep, nil
	}
	if rep, ok := s.handleShareAdmin(req); ok {
		return rep, nil
	}
	// Only if apiVersions lists a request that has no case above.
	return nil, fmt.Errorf("%w: %s has no handler", errBadRequest, kmsg.NameForKey(req.Key()))
}

func (s *Server) apiVersionsResponse(version int16) *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = version
	for _, a := range servedAPIs() {
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = a.key, a.min, a.max
		resp.ApiKeys = append(resp.ApiKeys, ak)
	}
	return resp
}
