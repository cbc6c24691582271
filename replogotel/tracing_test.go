package replogotel_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/replog/replog"
	"github.com/replog/replog/replogotel"
)

func header(hs []replog.Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func attr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// A record produced under a span carries its trace to the consumer: the
// create span is a child of the producer's span, the poll span a child of
// the create span, and Extract gives the application the same parent.
func TestTracing(t *testing.T) {
	ctx := testCtx(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	l := openMem(t, replogotel.NewTracing(tp, nil))
	topic, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{})
	require.NoError(t, err)

	p, err := replog.NewProducer(topic, replog.String(), nil)
	require.NoError(t, err)
	defer p.Close()
	reqCtx, req := tp.Tracer("test").Start(ctx, "request")
	_, err = p.Produce(reqCtx, replog.Message[string]{Value: "v", Headers: []replog.Header{{Key: "k", Value: []byte("x")}}})
	require.NoError(t, err)
	req.End()

	c, err := replog.NewConsumer(topic, replog.String(), &replog.ConsumerOptions{Group: "billing"})
	require.NoError(t, err)
	defer c.Close()
	recs, err := c.Poll(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	rec := recs[0]
	tparent, ok := header(rec.Headers, "traceparent")
	require.True(t, ok, "traceparent header: %v", rec.Headers)
	v, _ := header(rec.Headers, "k")
	require.Equal(t, "x", v, "the producer's own header is kept")

	var create, poll sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		switch s.Name() {
		case "create orders":
			create = s
		case "poll orders":
			poll = s
		}
	}
	require.NotNil(t, create)
	require.NotNil(t, poll)
	traceID := req.SpanContext().TraceID()

	require.Equal(t, trace.SpanKindProducer, create.SpanKind())
	require.Equal(t, traceID, create.Parent().TraceID())
	require.Equal(t, req.SpanContext().SpanID(), create.Parent().SpanID())
	require.Equal(t, fmt.Sprintf("00-%s-%s-01", traceID, create.SpanContext().SpanID()), tparent)
	require.Equal(t, "replog", attr(create, "messaging.system").AsString())
	require.Equal(t, "create", attr(create, "messaging.operation.type").AsString())

	require.Equal(t, trace.SpanKindConsumer, poll.SpanKind())
	require.Equal(t, traceID, poll.SpanContext().TraceID())
	require.Equal(t, create.SpanContext().SpanID(), poll.Parent().SpanID())
	require.True(t, poll.Parent().IsRemote())
	require.Equal(t, "orders", attr(poll, "messaging.destination.name").AsString())
	require.Equal(t, "0", attr(poll, "messaging.destination.partition.id").AsString())
	require.Equal(t, "billing", attr(poll, "messaging.consumer.group.name").AsString())
	require.Equal(t, rec.Offset, attr(poll, "replog.offset").AsInt64())
	// The create span ended when the record was stored, with its offset.
	require.Equal(t, rec.Offset, attr(create, "replog.offset").AsInt64())
	require.False(t, create.EndTime().Before(create.StartTime()))

	sc := trace.SpanContextFromContext(replogotel.Extract(context.Background(), rec.Headers))
	require.Equal(t, traceID, sc.TraceID())
	require.Equal(t, create.SpanContext().SpanID(), sc.SpanID())
}

// Producers share one Headers slice that already holds a trace context (a
// record forwarded as consumed): each record gets its own, and the shared
// slice is never written (-race watches the concurrent use).
func TestTracingForwardedHeaders(t *testing.T) {
	ctx := testCtx(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	l := openMem(t)
	topic, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{})
	require.NoError(t, err)
	tracing := replogotel.NewTracing(tp, nil)
	p, err := replog.NewProducer(topic, replog.String(), &replog.ProducerOptions{Hooks: []replog.Hook{tracing}})
	require.NoError(t, err)
	defer p.Close()

	const stale = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	shared := make([]replog.Header, 3, 8) // room to append: a hook must not use it
	shared[0] = replog.Header{Key: "traceparent", Value: []byte(stale)}
	shared[1] = replog.Header{Key: "tracestate", Value: []byte("old=1")}
	shared[2] = replog.Header{Key: "k", Value: []byte("x")}
	orig := slices.Clone(shared)

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				p.ProduceAsync(ctx, replog.Message[string]{Value: "v", Headers: shared}, func(_ replog.Position, err error) {
					assert.NoError(t, err)
				})
			}
		})
	}
	wg.Wait()
	require.NoError(t, p.Flush(ctx))
	require.Equal(t, orig, shared)
	for _, h := range shared[3:cap(shared)] {
		require.Zero(t, h, "written past the shared slice's length")
	}

	c, err := replog.NewConsumer(topic, replog.String(), nil)
	require.NoError(t, err)
	defer c.Close()
	seen := map[string]bool{}
	for n := 0; n < 40; {
		recs, err := c.Poll(ctx)
		require.NoError(t, err)
		for _, r := range recs {
			n++
			var keys []string
			for _, h := range r.Headers {
				keys = append(keys, h.Key)
			}
			require.ElementsMatch(t, []string{"k", "traceparent"}, keys, "stale tracestate dropped, one traceparent")
			tparent, _ := header(r.Headers, "traceparent")
			require.NotEqual(t, stale, tparent)
			seen[tparent] = true
		}
	}
	require.Len(t, seen, 40, "a trace context per record")
}

// Without a span in the Produce call's context the create span starts a
// trace; a record without headers gets a poll span all the same, and
// Extract of no headers is ctx unchanged.
func TestTracingNoParent(t *testing.T) {
	ctx := testCtx(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	tracing := replogotel.NewTracing(tp, nil)
	l := openMem(t)
	topic, err := l.CreateTopic(ctx, "orders", replog.TopicConfig{})
	require.NoError(t, err)

	plain, err := replog.NewProducer(topic, replog.String(), nil)
	require.NoError(t, err)
	defer plain.Close()
	_, err = plain.Produce(ctx, replog.Message[string]{Value: "untraced"})
	require.NoError(t, err)
	traced, err := replog.NewProducer(topic, replog.String(), &replog.ProducerOptions{Hooks: []replog.Hook{tracing}})
	require.NoError(t, err)
	defer traced.Close()
	_, err = traced.Produce(ctx, replog.Message[string]{Value: "traced"})
	require.NoError(t, err)

	c, err := replog.NewConsumer(topic, replog.String(), &replog.ConsumerOptions{Hooks: []replog.Hook{tracing}})
	require.NoError(t, err)
	defer c.Close()
	var recs []replog.Record[string]
	for len(recs) < 2 {
		rs, err := c.Poll(ctx)
		require.NoError(t, err)
		recs = append(recs, rs...)
	}
	require.Empty(t, recs[0].Headers)
	require.False(t, trace.SpanContextFromContext(replogotel.Extract(context.Background(), recs[0].Headers)).IsValid())

	var creates, polls []sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		switch s.Name() {
		case "create orders":
			creates = append(creates, s)
		case "poll orders":
			polls = append(polls, s)
		}
	}
	require.Len(t, creates, 1)
	require.False(t, creates[0].Parent().IsValid(), "a root span")
	require.Len(t, polls, 2)
	require.False(t, polls[0].Parent().IsValid(), "the untraced record's poll span is a root")
	require.Equal(t, creates[0].SpanContext().SpanID(), polls[1].Parent().SpanID())
}
