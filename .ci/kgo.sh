#!/usr/bin/env bash
# franz-go's own client integration tests (pkg/kgo of franz-go v1.22.3,
# the version replog's go.mod requires) against "replog serve". Issue 12 is
# done when they pass; .ci/run calls this script. Needs only go and the
# module proxy.
#
# The suite lives in franz-go's module, read-only in the module cache, and
# needs that module's go.mod to build: the whole module (3.5 MB) is copied
# to a temp dir, made writable, and tested there with -mod=mod (so that a
# missing go.sum line is fetched, never an error).
#
# Every test runs (TestTxnEtl, transactions, since issue 13); what skips
# itself, and why:
#   - The SCRAM tests run against a second "replog serve" that requires
#     SASL (KGO_TEST_SCRAM_SEEDS); TestOAuthAuth skips itself without
#     KGO_TEST_OAUTH_SEEDS: the listener offers SCRAM and PLAIN, not
#     OAUTHBEARER.
#   - KIP-848 tests skip themselves: replog's ApiVersions does not list
#     ConsumerGroupHeartbeat. Share-group tests (KIP-932) run since issue
#     14: ApiVersions lists ShareFetch v2 and ShareAcknowledge v2.
# Any other skip, or any failure, is printed; a failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

franz=github.com/twmb/franz-go@v1.22.3
# KGO_TEST_RECORDS: records of the group ETL test (the suite's default is
# 500000); enough for members to come and go many times while it runs. It
# finished within the suite's slowest tests, which wait on the client's
# own timers (metadata refreshes, the 15s purge of deleted topics).
records=${KGO_TEST_RECORDS:-20000}
# KGO_RUN: a go test -run pattern, to run some of the tests (all by
# default).
run=${KGO_RUN:-.}
# The tests that may skip themselves, for the reasons above; any other
# skip fails the script, so that nothing stops running unnoticed.
selfskip='^(TestOAuthAuth|Test848.*)$'

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      wait "$p" || true
    fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "kgo.sh: $*" >&2
  for f in "$tmp"/*.err; do
    [ -e "$f" ] || continue
    echo "--- $(basename "$f" .err): replog serve stderr (last 40 lines):" >&2
    tail -n 40 "$f" >&2
  done
  exit 1
}

# serve NAME ARGS... starts "replog serve -dir $tmp/NAME ARGS" on a free
# loopback port (port 0: the kernel picks one, and the "listening" line
# says which) and sets addr to it.
serve() {
  local name=$1
  shift
  "$tmp/replog" serve -dir "$tmp/$name" -kafka 127.0.0.1:0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/.*listening.* on \([0-9.]*:[0-9]*\).*/\1/p' "$tmp/$name.out")
    [ -n "$addr" ] && return
    kill -0 "${pids[-1]}" 2>/dev/null || fail "replog serve ($name) exited before listening"
    sleep 0.1
  done
  fail "replog serve ($name) printed no listening line within 30s"
}

start=$SECONDS
go build -o "$tmp/replog" ./cmd/replog

# The module's source: downloaded (or found in the cache) outside any
# module, so that this repository's go.mod and GOFLAGS play no part.
json=$(cd "$tmp" && GOFLAGS= go mod download -json "$franz") || fail "go mod download $franz: $json"
moddir=$(echo "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$moddir" ] && [ -d "$moddir/pkg/kgo" ] || fail "go mod download $franz gave no directory: $json"
cp -R "$moddir" "$tmp/franz-go"
chmod -R u+w "$tmp/franz-go"

serve plain
plain=$addr
# The SCRAM tests' node: one user, a password made up for this run.
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && echo "kgo:$password" >"$tmp/users")
serve scram -sasl-users "$tmp/users"
scram=$addr
echo "replog serve listening on $plain, and with SASL/SCRAM on $scram; running $franz pkg/kgo tests (KGO_TEST_RECORDS=$records)"

# -parallel 16: the tests mostly wait on timers and the network, not the
# CPU; at the default (GOMAXPROCS, 2 on a small CI machine) the suite ran
# twice as long.
status=0
tested=$SECONDS
(
  cd "$tmp/franz-go/pkg/kgo"
  KGO_SEEDS=$plain KGO_TEST_SCRAM_SEEDS=$scram KGO_TEST_SCRAM=kgo:$password:512 \
    KGO_TEST_RF=1 KGO_TEST_RECORDS=$records GOFLAGS=-mod=mod \
    go test -count=1 -v -parallel 16 -timeout 15m -run "$run" .
) >"$tmp/kgo.out" 2>&1 || status=$?

# Top-level results only: subtests are indented.
passed=$(grep -c '^--- PASS' "$tmp/kgo.out" || true)
failed=$(grep -c '^--- FAIL' "$tmp/kgo.out" || true)
skipped=$(grep -c '^--- SKIP' "$tmp/kgo.out" || true)
echo "kgo: $passed passed, $failed failed, $skipped skipped themselves"
skips=$(sed -n 's/^--- SKIP: \([^ ]*\).*/\1/p' "$tmp/kgo.out" | sort)
echo "  skipped themselves: $(echo $skips)"
echo "  slowest: $(sed -n 's/^--- [A-Z]*: \([^ ]*\) (\([0-9.]*\)s)$/\2s \1/p' "$tmp/kgo.out" | sort -rn | head -n 5 | tr '\n' ' ')"
echo "  go test took $((SECONDS - tested))s"
if [ "$status" != 0 ] || [ "$failed" != 0 ]; then
  # The tests' own messages ("    x_test.go:123: ..."), then the end of
  # the output (the clients' logs interleave with them).
  grep -E '^\s*--- FAIL|_test\.go:[0-9]+: ' "$tmp/kgo.out" | grep -Ev ': deleting (topic|group) ' | head -n 200 >&2 || true
  echo "--- go test output (last 60 lines):" >&2
  tail -n 60 "$tmp/kgo.out" >&2
  fail "franz-go's kgo tests failed (go test exit $status)"
fi
unexpected=$(echo "$skips" | grep -Ev "$selfskip" || true)
[ -z "$unexpected" ] || fail "tests skipped themselves for no reason given here: $(echo $unexpected)"

for i in "${!pids[@]}"; do
  kill -TERM "${pids[$i]}"
  status=0
  wait "${pids[$i]}" || status=$?
  [ "$status" = 0 ] || fail "replog serve (pid ${pids[$i]}) exited with status $status on SIGTERM"
done
pids=()
echo "ok: franz-go's kgo tests pass against replog serve ($((SECONDS - start))s)"
