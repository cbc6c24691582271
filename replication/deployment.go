package replication

import (
	"crypto/sha256"
	"encoding/binary"
)

// deploymentID hashes a cluster id into dragonboat's deployment id, which
// every message batch and snapshot chunk carries and a receiver compares
// with its own. An empty id gives 0, dragonboat's default; a non-empty one
// never gives 0 or 1 (dragonboat's value for "unset").
func deploymentID(clusterID string) uint64 {
	if clusterID == "" {
		return 0
	}
	h := sha256.Sum256([]byte("replog cluster id\x00" + clusterID))
	return max(binary.BigEndian.Uint64(h[:8]), 2)
}
