package main

import "testing"

// TestKafkaMode runs the phases through the Kafka listener on a small
// load: every record produced is consumed back and the figures are set.
func TestKafkaMode(t *testing.T) {
	c := config{records: 2000, size: 50, partitions: 2, replicas: 1, topics: 2, codec: "none", acks: "all",
		payload: "text", producers: 1, latencyN: 20, kafka: true}
	r, err := run(c)
	if err != nil {
		t.Fatal(err)
	}
	if r.ProduceRecordsPerS <= 0 || r.ConsumeRecordsPerS <= 0 || r.ProduceP99Ms <= 0 {
		t.Fatalf("figures not set: %+v", r)
	}
	if r.StoredRecords != int64(c.records) {
		t.Fatalf("stored %d records after the produce phase, want %d", r.StoredRecords, c.records)
	}
	c.replicas = 3
	if _, err := run(c); err == nil {
		t.Fatal("-kafka with 3 replicas accepted")
	}
}
