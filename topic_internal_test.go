package replog

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/replog/replog/replication"
)

// TestTopicInfoOfOldMetadata: a topic whose metadata was written before
// its later settings existed reads them as their defaults.
func TestTopicInfoOfOldMetadata(t *testing.T) {
	old := `{"name":"a","id":1024,"partitions":[{"shard":1024,"replicas":[1]}],"replicas":1,"compression":2,"created":9}`
	var tm replication.TopicMeta
	require.NoError(t, json.Unmarshal([]byte(old), &tm))
	info := topicInfo(&tm)
	require.Equal(t, CleanupDelete, info.Cleanup)
	require.Equal(t, DefaultDeleteRetention, info.DeleteRetention)
	require.Equal(t, DefaultMaxMessageBytes, info.MaxMessageBytes)
	require.Equal(t, CompressionSnappy, info.Compression)
	require.Zero(t, info.Retention)
	require.Zero(t, info.RetentionBytes)
}
