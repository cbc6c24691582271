#!/usr/bin/env bash
# kcat (librdkafka's command-line client, Debian package kcat) against
# "replog serve": produces lines, plain and then with an idempotent,
# compressed producer, consumes them back from the beginning and compares;
# then the same over SASL/SCRAM against a serve with -sasl-users.
# Issue 12 asks that librdkafka's kcat produce and consume; .ci/run calls
# this script when kcat is installed. Needs go and kcat on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null; then
  echo "kcat.sh: kcat not found (Debian package kcat)" >&2
  exit 1
fi

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "kcat.sh: $*" >&2
  echo "--- replog serve stderr (last 40 lines):" >&2
  tail -n 40 "$tmp/serve.err" >&2 || true
  exit 1
}

go build -o "$tmp/replog" ./cmd/replog

# start_serve DIR ARGS... runs "replog serve -dir $tmp/DIR ARGS" on a free
# loopback port (port 0: the kernel picks one, and the "listening" line
# says which) and sets pid and addr once it listens.
start_serve() {
  local dir=$1
  shift
  "$tmp/replog" serve -dir "$tmp/$dir" -kafka 127.0.0.1:0 "$@" >"$tmp/serve.out" 2>"$tmp/serve.err" &
  pid=$!
  addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/.*listening.* on \([0-9.]*:[0-9]*\).*/\1/p' "$tmp/serve.out")
    [ -n "$addr" ] && return
    kill -0 "$pid" 2>/dev/null || fail "replog serve $* exited before listening"
    sleep 0.1
  done
  fail "replog serve $* printed no listening line within 30s"
}

# stop_serve stops the serve start_serve started, which must exit 0.
stop_serve() {
  kill -TERM "$pid"
  local status=0
  wait "$pid" || status=$?
  pid=""
  [ "$status" = 0 ] || fail "replog serve exited with status $status on SIGTERM"
}

start_serve data
echo "replog serve listening on $addr"

topic=kcat-lines
# Keyed lines ("key:value"); serve creates the topic (one partition) on
# first use, so the order of the lines is kept.
for i in $(seq 1 200); do echo "key-$((i % 7)):line $i"; done >"$tmp/first.txt"
for i in $(seq 201 300); do echo "key-$((i % 7)):line $i"; done >"$tmp/second.txt"

timeout 60 kcat -P -b "$addr" -t "$topic" -K: <"$tmp/first.txt" ||
  fail "kcat -P failed"
timeout 60 kcat -P -b "$addr" -t "$topic" -K: -z lz4 -X enable.idempotence=true <"$tmp/second.txt" ||
  fail "kcat -P (idempotent, lz4) failed"

timeout 60 kcat -C -b "$addr" -t "$topic" -e -o beginning -q -f '%k:%s\n' >"$tmp/got.txt" ||
  fail "kcat -C failed"

cat "$tmp/first.txt" "$tmp/second.txt" >"$tmp/want.txt"
if ! diff -u "$tmp/want.txt" "$tmp/got.txt" >"$tmp/diff.txt"; then
  head -n 40 "$tmp/diff.txt" >&2
  fail "kcat consumed other lines than it produced"
fi
echo "kcat produced and consumed $(wc -l <"$tmp/want.txt") lines"

stop_serve
echo "ok: kcat produces and consumes through replog serve"

# SASL/SCRAM: librdkafka's client nonce is not what RFC 5802 describes
# (Kafka accepts it, and so must replog). A second serve with -sasl-users;
# kcat produces with SCRAM-SHA-256, consumes with SCRAM-SHA-512, and a
# wrong password is refused.
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
echo "kcat-user:$password" >"$tmp/users"
chmod 600 "$tmp/users"
start_serve sasl-data -sasl-users "$tmp/users"
scram() { # mechanism password, then kcat's own arguments
  local mech=$1 pass=$2
  shift 2
  timeout 60 kcat -b "$addr" -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms="$mech" \
    -X sasl.username=kcat-user -X sasl.password="$pass" "$@"
}
scram SCRAM-SHA-256 "$password" -P -t "$topic" -K: <"$tmp/first.txt" ||
  fail "kcat -P with SCRAM-SHA-256 failed"
scram SCRAM-SHA-512 "$password" -C -t "$topic" -e -o beginning -q -f '%k:%s\n' >"$tmp/got-sasl.txt" ||
  fail "kcat -C with SCRAM-SHA-512 failed"
diff -u "$tmp/first.txt" "$tmp/got-sasl.txt" >&2 || fail "kcat over SCRAM consumed other lines than it produced"
if scram SCRAM-SHA-256 "not-$password" -L -m 10 >/dev/null 2>"$tmp/wrong.err"; then
  fail "kcat with a wrong password was let in"
fi
grep -q "Authentication failed" "$tmp/wrong.err" ||
  fail "kcat with a wrong password failed, but not on authentication: $(tail -n 2 "$tmp/wrong.err")"
stop_serve
echo "ok: kcat authenticates with SCRAM-SHA-256 and -512; a wrong password is refused"
