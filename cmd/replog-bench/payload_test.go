package main

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestPayloads(t *testing.T) {
	for _, size := range []int{0, 10, 100, 1000, 10000} {
		for _, kind := range []string{"text", "zeros", "json", "random"} {
			vs, err := payloads(kind, size)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range vs {
				switch kind {
				case "json":
					var m map[string]any
					if err := json.Unmarshal(v, &m); err != nil {
						t.Fatalf("json %d, value %d: %v: %s", size, i, err, v)
					}
					// About size: within one item of it, or the smallest object.
					if len(v) > max(size, 20) || len(v) < size-60 {
						t.Fatalf("json %d, value %d: %d bytes: %s", size, i, len(v), v)
					}
				default:
					if len(v) != size {
						t.Fatalf("%s %d: value %d has %d bytes", kind, size, i, len(v))
					}
				}
			}
			if (kind == "json" || kind == "random" && size >= 8) && bytes.Equal(vs[0], vs[1]) {
				t.Fatalf("%s %d: the first two values are equal", kind, size)
			}
		}
	}
	vs, _ := payloads("json", 100)
	t.Logf("json 100: %s (%d B), mean %.0f B", vs[0], len(vs[0]), meanLen(vs))
	vs, _ = payloads("json", 300)
	t.Logf("json 300: %s (%d B), mean %.0f B", vs[1], len(vs[1]), meanLen(vs))
}
