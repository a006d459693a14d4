#!/usr/bin/env bash
# A node restarted with many idle quorum queues: what its start costs.
#
#   benches/quorum-restart.sh
#
# Starts a three-node Warren cluster on this machine, declares QUEUES quorum queues over the
# three nodes (never used: born dormant), waits until every member of n2 sleeps, kills n2
# (SIGKILL) and starts it again with the same data, then samples its resident memory every
# 0.25 s for WATCH seconds: its peak and last resident set, the CPU it used, and how many of its
# members sleep at the end (`warren_quorum_members_asleep`).
#
# Environment: QUEUES=1000, WATCH=25, DORMANT_AFTER=3000 (ms, WARREN_QUORUM_DORMANT_AFTER),
# WARREN_BIN (default: cargo build --release, then target/release/warren), KEEP_TMP=1.
# Everything it starts is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
QUEUES="${QUEUES:-1000}"
WATCH="${WATCH:-25}"
DORMANT_AFTER="${DORMANT_AFTER:-3000}"
log() { echo "quorum-restart: $*" >&2; }
die() { log "error: $*"; exit 2; }
[[ "$QUEUES" =~ ^[1-9][0-9]*$ ]] || die "QUEUES must be a positive integer"
[[ "$WATCH" =~ ^[1-9][0-9]*$ ]] || die "WATCH must be a positive integer (seconds)"

if [ -z "${WARREN_BIN:-}" ]; then
  log "building warren (cargo build --release -p warren)"
  (cd "$ROOT" && cargo build --release -p warren) >&2
  WARREN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/warren"
fi
[ -x "$WARREN_BIN" ] || die "no warren binary at $WARREN_BIN"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/warren-quorum-restart.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -a AMQP HTTP LINK
for i in 0 1 2; do AMQP[$i]="$(free_port)"; HTTP[$i]="$(free_port)"; LINK[$i]="$(free_port)"; done
PEERS="n1@127.0.0.1:${LINK[0]},n2@127.0.0.1:${LINK[1]},n3@127.0.0.1:${LINK[2]}"
start_node() { # start_node INDEX (0-2): its pid in STARTED
  local n=$(($1 + 1))
  WARREN_CLUSTER_SECRET=bench-cookie RUST_LOG=warn WARREN_QUORUM_DORMANT_AFTER="$DORMANT_AFTER" \
    "$WARREN_BIN" server --node-name "n$n" --amqp-listen "127.0.0.1:${AMQP[$1]}" \
    --http-listen "127.0.0.1:${HTTP[$1]}" --cluster-listen "127.0.0.1:${LINK[$1]}" \
    --cluster-peers "$PEERS" --data-dir "$TMP/n$n" >>"$TMP/n$n.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}
api() { curl -sf -u guest:guest -X "$2" -H 'content-type: application/json' "http://127.0.0.1:${HTTP[$1]}$3" ${4:+-d "$4"}; }
running() { api 0 GET /api/nodes 2>/dev/null | python3 -c 'import json,sys; print(sum(n["running"] for n in json.load(sys.stdin)))' 2>/dev/null || echo 0; }
asleep() { api "$1" GET /metrics 2>/dev/null | awk '/^warren_quorum_members_asleep /{print $2}'; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || true; }

declare -a NODE_PID
for i in 0 1 2; do start_node "$i"; NODE_PID[$i]=$STARTED; done
for _ in $(seq 1 300); do [ "$(running)" = 3 ] && break; sleep 0.2; done
[ "$(running)" = 3 ] || die "the cluster did not form (see $TMP/n*.log)"

log "declaring $QUEUES quorum queues over the three nodes"
DECLARING=()
for q in $(seq 1 "$QUEUES"); do
  api $((q % 3)) PUT "/api/queues/%2F/idle-$q" '{"durable":true,"arguments":{"x-queue-type":"quorum"}}' >/dev/null &
  DECLARING+=("$!")
  if [ "${#DECLARING[@]}" = 8 ]; then
    for p in "${DECLARING[@]}"; do wait "$p" || die "a declare failed"; done
    DECLARING=()
  fi
done
for p in "${DECLARING[@]}"; do wait "$p" || die "a declare failed"; done
for _ in $(seq 1 240); do [ "$(asleep 1)" = "$QUEUES" ] && break; sleep 0.5; done
[ "$(asleep 1)" = "$QUEUES" ] || die "n2's members did not all fall asleep"
before="$(rss_kib "${NODE_PID[1]}")"

log "killing n2 (SIGKILL) and starting it again"
kill -9 "${NODE_PID[1]}"
wait "${NODE_PID[1]}" 2>/dev/null || true
start_node 1
peak=0
for _ in $(seq 1 $((WATCH * 4))); do
  r="$(rss_kib "$STARTED")"
  if [ -n "$r" ] && [ "$r" -gt "$peak" ]; then peak=$r; fi
  sleep 0.25
done
cpu="$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$STARTED/stat")"
printf 'n2 with %s idle quorum queues: resident %s KiB before; after its restart peak %s KiB, %s KiB after %s s, CPU %s s, members asleep %s\n' \
  "$QUEUES" "$before" "$peak" "$(rss_kib "$STARTED")" "$WATCH" "$cpu" "$(asleep 1)"
