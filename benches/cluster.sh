#!/usr/bin/env bash
# Warren's cluster against a single node on the same machine: a three-node cluster on loopback
# (free ports, a temporary dir), `warren perf` through it, and its idle cost.
#
#   benches/cluster.sh
#
#   single     1 -> 1, 16 B, auto-ack, all on n1 (a queue of n1's, clients on n1)
#   forwarded  the same with the queue homed on n2, the producer on n1, the consumer on n3
#   idle       IDLE_QUEUES queues spread over the three nodes, no message flowing: CPU used by
#              the three processes over IDLE_SECONDS, in % of one core, and their resident
#              memory per queue (after - before declaring; all of it, and the anonymous part)
#
# For each round both throughput scenarios run (in turn, alternating which goes first); the table
# shows medians of consumed msg/s and the forwarded/single ratio.
#
# Environment: DURATION=10 (seconds per run), ROUNDS=3, IDLE_QUEUES=1000, IDLE_SECONDS=30,
# IDLE_QUEUE_TYPE=classic (or quorum: each idle queue a Raft group on three nodes; its members go
# dormant after WARREN_QUORUM_DORMANT_AFTER ms idle, 30,000 by default: memory is measured again
# after IDLE_SECONDS), IDLE_SETTLE=5 (seconds between the last declare and the CPU window: longer
# than the dormancy to measure queues already dormant and asleep), IDLE_BATCH=0 and
# IDLE_BATCH_PAUSE=6 (declare the idle queues in batches of IDLE_BATCH, IDLE_BATCH_PAUSE seconds
# apart, so that fewer members are awake at once; 0: all in one go, eight declares at a time),
# ROUNDS=0 (the idle part only),
# WARREN_BIN (default: cargo build --release, then target/release/warren; also the load
# generator), KEEP_TMP=1 (keep logs). Everything it starts is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
IDLE_QUEUES="${IDLE_QUEUES:-1000}"
IDLE_SECONDS="${IDLE_SECONDS:-30}"
IDLE_SETTLE="${IDLE_SETTLE:-5}"
IDLE_QUEUE_TYPE="${IDLE_QUEUE_TYPE:-classic}"

log() { echo "cluster-bench: $*" >&2; }
die() { log "error: $*"; exit 2; }

if [ -z "${WARREN_BIN:-}" ]; then
  log "building warren (cargo build --release -p warren)"
  (cd "$ROOT" && cargo build --release -p warren) >&2
  WARREN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/warren"
fi
[ -x "$WARREN_BIN" ] || die "no warren binary at $WARREN_BIN"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/warren-cluster-bench.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -a AMQP HTTP LINK
for i in 0 1 2; do AMQP[$i]="$(free_port)"; HTTP[$i]="$(free_port)"; LINK[$i]="$(free_port)"; done
PEERS="n1@127.0.0.1:${LINK[0]},n2@127.0.0.1:${LINK[1]},n3@127.0.0.1:${LINK[2]}"
for i in 0 1 2; do
  n=$((i + 1))
  WARREN_CLUSTER_SECRET=bench-cookie RUST_LOG=warn "$WARREN_BIN" server --node-name "n$n" \
    --amqp-listen "127.0.0.1:${AMQP[$i]}" --http-listen "127.0.0.1:${HTTP[$i]}" \
    --cluster-listen "127.0.0.1:${LINK[$i]}" --cluster-peers "$PEERS" \
    --data-dir "$TMP/n$n" >"$TMP/n$n.log" 2>&1 &
  PIDS+=("$!")
done
uri() { echo "amqp://guest:guest@127.0.0.1:${AMQP[$1]}/%2F"; }
api() { # api NODE METHOD PATH [BODY]
  curl -sf -u guest:guest -X "$2" -H 'content-type: application/json' \
    ${4:+-d "$4"} "http://127.0.0.1:${HTTP[$1]}$3"
}
log "waiting for the cluster to form"
for _ in $(seq 1 300); do
  running="$(api 0 GET /api/nodes 2>/dev/null | python3 -c 'import json,sys; print(sum(n["running"] for n in json.load(sys.stdin)))' 2>/dev/null || echo 0)"
  [ "$running" = 3 ] && break
  sleep 0.2
done
[ "$running" = 3 ] || die "the cluster did not form (see $TMP/n*.log)"

# The queues: one homed on n1, one on n2 (declared there through the management API).
api 0 PUT /api/queues/%2F/bench-single '{"durable":false,"auto_delete":false}' >/dev/null
api 1 PUT /api/queues/%2F/bench-forwarded '{"durable":false,"auto_delete":false}' >/dev/null

run() { # run NAME CONSUMER_NODE PRODUCER_NODE QUEUE -> consumed msg/s
  # The control connection and the consumer use the first URI, the producer the second.
  "$WARREN_BIN" perf --uri "$(uri "$2")" --uri "$(uri "$3")" -u "$4" -s 16 -a -z "$DURATION" --json \
    >"$TMP/$1.out" 2>&1 || { cat "$TMP/$1.out" >&2; die "$1 failed"; }
  tail -n 1 "$TMP/$1.out" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["consumed_per_s"]))'
}
declare -a SINGLE FORWARDED
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    SINGLE+=("$(run "single-$r" 0 0 bench-single)"); FORWARDED+=("$(run "forwarded-$r" 2 0 bench-forwarded)")
  else
    FORWARDED+=("$(run "forwarded-$r" 2 0 bench-forwarded)"); SINGLE+=("$(run "single-$r" 0 0 bench-single)")
  fi
  log "round $r: single ${SINGLE[-1]}, forwarded ${FORWARDED[-1]} msg/s"
done

# The three processes' resident KiB: VmRSS (all of it), or RssAnon (without the pages of the
# binary and its libraries, which the first queue of a kind pages in once: about 2.4 MB of code
# per node for the first quorum queue).
rss_kib() { # [VmRSS|RssAnon]
  for p in "${PIDS[@]}"; do awk -v f="^${1:-VmRSS}:" '$0 ~ f {print $2}' "/proc/$p/status"; done | paste -sd+ | bc
}
rss_before="$(rss_kib)"
anon_before="$(rss_kib RssAnon)"
log "declaring $IDLE_QUEUES $IDLE_QUEUE_TYPE queues over the three nodes"
DECLARING=()
wait_declares() { # every declare under way must have succeeded
  local p
  for p in "${DECLARING[@]}"; do wait "$p" || die "a declare failed (see $TMP/n*.log)"; done
  DECLARING=()
}
for q in $(seq 1 "$IDLE_QUEUES"); do
  api $((q % 3)) PUT "/api/queues/%2F/idle-$q" \
    "{\"durable\":true,\"arguments\":{\"x-queue-type\":\"$IDLE_QUEUE_TYPE\"}}" >/dev/null &
  DECLARING+=("$!")
  if [ "${#DECLARING[@]}" = 8 ]; then wait_declares; fi
  if [ "${IDLE_BATCH:-0}" -gt 0 ] && [ $((q % IDLE_BATCH)) = 0 ] && [ "$q" -lt "$IDLE_QUEUES" ]; then
    wait_declares
    sleep "${IDLE_BATCH_PAUSE:-6}"
  fi
done
wait_declares
sleep "$IDLE_SETTLE"
rss_after="$(rss_kib)"
anon_after="$(rss_kib RssAnon)"
ticks() { for p in "${PIDS[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc; }
before="$(ticks)"
sleep "$IDLE_SECONDS"
after="$(ticks)"
rss_idle="$(rss_kib)"
hz="$(getconf CLK_TCK)"
idle_pct="$(python3 -c "print(round(100 * ($after - $before) / $hz / $IDLE_SECONDS, 2))")"

python3 - "$DURATION" "${SINGLE[*]}" "${FORWARDED[*]}" "$IDLE_QUEUES" "$IDLE_SECONDS" "$idle_pct" \
  "$IDLE_QUEUE_TYPE" "$rss_before" "$rss_after" "$rss_idle" "$anon_before" "$anon_after" <<'PY'
import statistics, sys
(duration, single, forwarded, queues, seconds, idle, kind, rss_before, rss_after, rss_idle,
 anon_before, anon_after) = sys.argv[1:]
single = [int(x) for x in single.split()]
forwarded = [int(x) for x in forwarded.split()]
if single and forwarded:
    s, f = statistics.median(single), statistics.median(forwarded)
    print(f"| scenario (1 -> 1, 16 B, auto-ack, {duration} s runs) | consumed msg/s (median) | rounds |")
    print("|---|---|---|")
    print(f"| single node (queue, producer, consumer on n1) | {s:,.0f} | {single} |")
    print(f"| forwarded (producer n1, queue n2, consumer n3) | {f:,.0f} | {forwarded} |")
    print(f"| forwarded / single | {f / s:.2f} | |")
    print()
print(f"idle: {queues} {kind} queues on 3 nodes, no traffic: {idle}% of one core over {seconds} s (3 processes together)")
per_queue = (int(rss_after) - int(rss_before)) / int(queues)
print(f"memory: {per_queue:.1f} KiB per {kind} queue (resident, the three processes together, after - before declaring)")
anon_per_queue = (int(anon_after) - int(anon_before)) / int(queues)
print(f"  of which anonymous: {anon_per_queue:.1f} KiB (the rest: code and libraries paged in once)")
per_queue_idle = (int(rss_idle) - int(rss_before)) / int(queues)
print(f"memory after {seconds} s idle: {per_queue_idle:.1f} KiB per {kind} queue (quorum members go dormant after --quorum-dormant-after)")
PY
