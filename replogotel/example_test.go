package replogotel_test

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/replog/replog"
	"github.com/replog/replog/replogotel"
)

func ExampleNewMetrics() {
	l, _ := replog.Open("", &replog.Options{InMemory: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t, _ := l.CreateTopic(ctx, "orders", replog.TopicConfig{})
	p, _ := replog.NewProducer(t, replog.String(), nil)
	defer p.Close()
	p.Produce(ctx, replog.Message[string]{Value: "o-1"})
	p.Produce(ctx, replog.Message[string]{Value: "o-2"})

	// A ManualReader for the example; a program would use a periodic
	// reader with an exporter (OTLP, Prometheus).
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := replogotel.NewMetrics(l, mp)
	if err != nil {
		panic(err)
	}
	defer m.Close()

	var rm metricdata.ResourceMetrics
	reader.Collect(ctx, &rm)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "replog.partition.high_watermark" {
				for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
					topic, _ := dp.Attributes.Value("messaging.destination.name")
					part, _ := dp.Attributes.Value("messaging.destination.partition.id")
					fmt.Println(topic.AsString(), part.AsString(), dp.Value)
				}
			}
		}
	}
	// Output: orders 0 2
}

func ExampleNewTracing() {
	// Every producer and consumer of the Log traces its records; nil uses
	// the global tracer provider and the W3C trace context headers.
	l, _ := replog.Open("", &replog.Options{InMemory: true,
		Hooks: []replog.Hook{replogotel.NewTracing(nil, nil)}})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t, _ := l.CreateTopic(ctx, "orders", replog.TopicConfig{})
	c, _ := replog.NewConsumer(t, replog.String(), nil)
	defer c.Close()

	for r, err := range c.Records(ctx) {
		if err != nil {
			break
		}
		// The processing span is a child of the record's create span.
		_, span := otel.Tracer("billing").Start(replogotel.Extract(ctx, r.Headers), "bill")
		fmt.Println("billing", r.Value)
		span.End()
	}
}
