package replog

import (
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// TestFilesSurviveCrash writes NODE_ADDRESS into a new directory and
// checks that a crash right after keeps both: the directory entries are
// synced, not only the file.
func TestFilesSurviveCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	require.NoError(t, createDir(fs, "/srv/logs/a"))
	require.NoError(t, writeFileSync(fs, "/srv/logs/a/NODE_ADDRESS", []byte("inproc-0123456789abcdef")))
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	f, err := crashed.Open("/srv/logs/a/NODE_ADDRESS")
	require.NoError(t, err, "NODE_ADDRESS lost in the crash")
	defer f.Close()
	b, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, "inproc-0123456789abcdef", string(b))
	_, err = crashed.Stat("/srv/logs/a/NODE_ADDRESS.tmp")
	require.Error(t, err, "the temporary file survived the rename")
}
