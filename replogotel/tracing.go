package replogotel

import (
	"context"
	"slices"
	"strconv"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/replog/replog"
)

var (
	_ replog.HookRecordProduced = (*Tracing)(nil)
	_ replog.HookRecordWritten  = (*Tracing)(nil)
	_ replog.HookRecordConsumed = (*Tracing)(nil)
)

// offsetKey is the consumed record's offset: the conventions define one
// for Kafka only (messaging.kafka.offset).
var offsetKey = attribute.Key("replog.offset")

// Tracing is a hook (see [replog.Hook]) that traces records from producer
// to consumer through their headers; the package doc describes its spans.
// It is safe for concurrent use.
type Tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	fields []string // prop.Fields(), the headers it writes
}

// NewTracing returns a Tracing that starts spans with tp (nil means the
// global provider, [otel.GetTracerProvider]) and writes and reads the
// headers with propagator (nil means [propagation.TraceContext]: W3C
// traceparent and tracestate, not the global propagator, whose default
// writes nothing).
func NewTracing(tp trace.TracerProvider, propagator propagation.TextMapPropagator) *Tracing {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if propagator == nil {
		propagator = propagation.TraceContext{}
	}
	return &Tracing{
		tracer: tp.Tracer(scope, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   propagator,
		fields: propagator.Fields(),
	}
}

// OnRecordProduced starts a "create" span, a child of the span in ctx, and
// writes its context into r's headers; [Tracing.OnRecordWritten] ends it
// when the record is stored or fails. Headers the propagator
// writes that r already has (a record forwarded with the headers it was
// consumed with) are replaced, so the record carries one trace context:
// its own.
func (t *Tracing) OnRecordProduced(ctx context.Context, r *replog.ProducedRecord) {
	attrs := []attribute.KeyValue{
		systemAttr,
		semconv.MessagingOperationName("create"),
		semconv.MessagingOperationTypeCreate,
		semconv.MessagingDestinationName(r.Topic),
	}
	if r.Partition >= 0 {
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(strconv.Itoa(r.Partition)))
	}
	ctx, _ = t.tracer.Start(ctx, "create "+r.Topic,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	r.Context = ctx
	r.Headers = without(r.Headers, t.fields)
	t.prop.Inject(ctx, (*producedCarrier)(&r.Headers))
}

// OnRecordWritten ends the record's create span with where it was stored,
// or with its error.
func (t *Tracing) OnRecordWritten(r *replog.ProducedRecord, pos replog.Position, err error) {
	span := trace.SpanFromContext(r.Context)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(semconv.MessagingDestinationPartitionID(strconv.Itoa(pos.Partition)), offsetKey.Int64(pos.Offset))
	}
	span.End()
}

// OnRecordConsumed starts and ends a "poll" span whose parent is the
// context in r's headers (none: a new trace).
func (t *Tracing) OnRecordConsumed(r replog.ConsumedRecord) {
	ctx := t.Extract(context.Background(), r.Headers)
	attrs := []attribute.KeyValue{
		systemAttr,
		semconv.MessagingOperationName("poll"),
		semconv.MessagingOperationTypeReceive,
		semconv.MessagingDestinationName(r.Topic),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(r.Partition)),
		offsetKey.Int64(r.Offset),
	}
	if r.Group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(r.Group))
	}
	_, span := t.tracer.Start(ctx, "poll "+r.Topic,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	span.End()
}

// Extract returns ctx with the trace context found in headers by t's
// propagator: start the processing span of a consumed record from it to
// make it a child of the record's create span.
func (t *Tracing) Extract(ctx context.Context, headers []replog.Header) context.Context {
	return t.prop.Extract(ctx, consumedCarrier(headers))
}

// Extract returns ctx with the W3C trace context (traceparent, tracestate)
// found in headers, as a [Tracing] made with the default propagator writes
// it. With another propagator use [Tracing.Extract].
func Extract(ctx context.Context, headers []replog.Header) context.Context {
	return propagation.TraceContext{}.Extract(ctx, consumedCarrier(headers))
}

// without returns hs without the headers named in keys. It never writes
// into hs's array, which may be the caller's Message.Headers.
func without(hs []replog.Header, keys []string) []replog.Header {
	has := func(h replog.Header) bool { return slices.Contains(keys, h.Key) }
	if !slices.ContainsFunc(hs, has) {
		return hs
	}
	return slices.DeleteFunc(slices.Clone(hs), has)
}

// producedCarrier writes a propagator's fields into a produced record's
// headers. Set replaces a header of the same key on a copy and appends
// (the hook contract allows appending: the slice is clipped).
type producedCarrier []replog.Header

func (c *producedCarrier) Get(key string) string { return consumedCarrier(*c).Get(key) }

func (c *producedCarrier) Set(key, value string) {
	*c = append(without(*c, []string{key}), replog.Header{Key: key, Value: []byte(value)})
}

func (c *producedCarrier) Keys() []string { return consumedCarrier(*c).Keys() }

// consumedCarrier reads a propagator's fields from a record's headers; it
// never writes into them (they are the record's).
type consumedCarrier []replog.Header

func (c consumedCarrier) Get(key string) string {
	for _, h := range c {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (consumedCarrier) Set(string, string) {}

func (c consumedCarrier) Keys() []string {
	keys := make([]string, len(c))
	for i, h := range c {
		keys[i] = h.Key
	}
	return keys
}
