package replication

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	crdberrors "github.com/cockroachdb/errors"
	pebble2022 "github.com/cockroachdb/pebble"

	"github.com/replog/replog/internal/logadapt"
	"github.com/replog/replog/storage"
)

// checkRaftLog reads every live key of dragonboat's Raft log, the Pebble
// databases under nhDir, and fails with an error matching
// [storage.ErrCorrupt] if a table or the manifest is damaged (or one of
// dragonboat's flag files, see checkFlagFile).
//
// Why before NewNodeHost: dragonboat reads the Raft log in its step workers,
// and on a read error (a table's block checksum, say) it calls its logger's
// Panicf there, in a goroutine of its own, which takes the whole process
// down; nothing outside dragonboat can recover it, and its own recover
// covers only NewNodeHost. Reading everything once here, in the caller's
// goroutine and with a Pebble of our own that is closed before dragonboat
// opens the files, turns that panic into an error.
//
// It opens each database read-only with the Pebble dragonboat bundles (the
// same code reads the same files), so it sees what dragonboat will see:
// live tables only (a table left half-written by a crash, and no longer in
// the manifest, is not read), and the WAL replayed into memory. The cost is
// one sequential read of the Raft log at each Open, which is compacted
// after every snapshot (Config.SnapshotEntries).
//
// What it cannot cover: damage that appears after Open, while the node
// runs, still reaches dragonboat's Panicf.
func checkRaftLog(nhDir string, log *slog.Logger) error {
	var dbs []string
	err := filepath.WalkDir(nhDir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case !d.IsDir() && (d.Name() == "NODEHOST.ID" || d.Name() == "dragonboat.ds"):
			return checkFlagFile(path)
		case !d.IsDir():
			return nil
		case strings.HasPrefix(d.Name(), "logdb-"):
			dbs = append(dbs, path)
			return fs.SkipDir
		case strings.Count(strings.TrimPrefix(path, nhDir), string(os.PathSeparator)) >= 3:
			// dragonboat keeps its Raft log in nhDir/HOSTNAME/DEPLOYMENT/logdb-N.
			return fs.SkipDir
		}
		return nil
	})
	var corrupt *corruptError
	switch {
	case errors.As(err, &corrupt):
		return err
	case err != nil && !os.IsNotExist(err):
		return fmt.Errorf("replog: check raft log: %w", err)
	}
	for _, dir := range dbs {
		if err := checkPebble2022(dir, log); err != nil {
			return err
		}
	}
	return nil
}

// checkFlagFile checks one of dragonboat's flag files, which NewNodeHost
// reads: the node host's id and the directory's deployment. A damaged one
// makes dragonboat panic; NewNodeHost recovers that but returns no error,
// so the cause would be lost. The format (dragonboat's
// fileutil.CreateFlagFile): the last 8 bytes of the MD5 of the content,
// then the content.
func checkFlagFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(b) < 8 {
		return &corruptError{fmt.Sprintf("raft flag file %s: %d bytes", path, len(b))}
	}
	if sum := md5.Sum(b[8:]); !bytes.Equal(b[:8], sum[8:]) {
		return &corruptError{fmt.Sprintf("raft flag file %s: checksum mismatch", path)}
	}
	return nil
}

func checkPebble2022(dir string, log *slog.Logger) (err error) {
	var db *pebble2022.DB
	defer func() {
		// Pebble calls Logger.Fatalf, which panics, on some inconsistencies
		// it finds; here that is in this goroutine, and no Pebble of
		// dragonboat's is open yet.
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			}
			err = &corruptError{fmt.Sprintf("raft log %s: %v", dir, r)}
		}
	}()
	db, err = pebble2022.Open(dir, &pebble2022.Options{
		ReadOnly:         true,
		ErrorIfNotExists: true,
		Logger:           logadapt.Pebble{L: log},
	})
	if err != nil {
		return classify2022(dir, err)
	}
	it := db.NewIter(nil)
	for valid := it.First(); valid; valid = it.Next() {
	}
	err = it.Error()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return classify2022(dir, err)
}

// classify2022 marks corruption found by dragonboat's Pebble as
// [storage.ErrCorrupt]; Pebble marks it with cockroachdb/errors, which the
// standard errors.Is does not see.
func classify2022(dir string, err error) error {
	switch {
	case err == nil:
		return nil
	case crdberrors.Is(err, pebble2022.ErrCorruption):
		return &corruptError{fmt.Sprintf("raft log %s: %v", dir, err)}
	}
	return fmt.Errorf("replog: check raft log %s: %w", dir, err)
}

// corruptError reports damaged files. It matches [storage.ErrCorrupt].
type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return "replog: corrupt " + e.msg }
func (e *corruptError) Is(target error) bool { return target == storage.ErrCorrupt }
