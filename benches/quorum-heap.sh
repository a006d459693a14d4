#!/usr/bin/env bash
# Heap held by idle quorum queue members: three release nodes on loopback, n1 run under
# `heaptrack`; COUNTS quorum queues (each count a run of its own) declared through n1's
# management API and left idle; n1 then killed with SIGKILL, so that what heaptrack reports
# "leaked" is what was live at that moment. The difference between two counts, divided by the
# difference of the counts, is what one more idle member costs on a node, without what the
# process allocates once.
#
#   benches/quorum-heap.sh
#
# Environment: COUNTS="300 600", IDLE=25 (seconds idle after the last declare),
# WARREN_QUORUM_DORMANT_AFTER=3000 (ms: members dormant, then asleep, well within IDLE),
# WARREN_BIN (default: cargo build --release --no-default-features into target/heap, then its
# warren: heaptrack sees only the system allocator's calls, not jemalloc's), TOP=0 (also list what
# one more member costs at the TOP allocation sites, by their first frame in Warren's code: the
# first and last counts' runs compared), KEEP_TMP=1.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
COUNTS="${COUNTS:-300 600}"
IDLE="${IDLE:-25}"
TOP="${TOP:-0}"
export WARREN_QUORUM_DORMANT_AFTER="${WARREN_QUORUM_DORMANT_AFTER:-3000}"

log() { echo "quorum-heap: $*" >&2; }
die() { log "error: $*"; exit 2; }

command -v heaptrack >/dev/null && command -v heaptrack_print >/dev/null ||
  die "needs heaptrack and heaptrack_print (Debian: apt-get install heaptrack)"
if [ -z "${WARREN_BIN:-}" ]; then
  log "building warren with the system allocator (cargo build --release --no-default-features)"
  (cd "$ROOT" && cargo build --release -p warren --no-default-features --target-dir target/heap) >&2
  WARREN_BIN="$ROOT/target/heap/release/warren"
fi
[ -x "$WARREN_BIN" ] || die "no warren binary at $WARREN_BIN"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/warren-quorum-heap.XXXXXX")"
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run COUNT: prints the bytes n1 held when killed.
run() {
  local count="$1" dir="$TMP/run-$1"
  mkdir -p "$dir"
  local -a amqp http link
  for i in 0 1 2; do amqp[$i]="$(free_port)"; http[$i]="$(free_port)"; link[$i]="$(free_port)"; done
  local peers="n1@127.0.0.1:${link[0]},n2@127.0.0.1:${link[1]},n3@127.0.0.1:${link[2]}"
  for i in 0 1 2; do
    local n=$((i + 1)) wrap=()
    [ "$i" = 0 ] && wrap=(heaptrack -o "$dir/n1.heaptrack")
    WARREN_CLUSTER_SECRET=bench-cookie RUST_LOG=warn "${wrap[@]}" "$WARREN_BIN" server \
      --node-name "n$n" --amqp-listen "127.0.0.1:${amqp[$i]}" \
      --http-listen "127.0.0.1:${http[$i]}" --cluster-listen "127.0.0.1:${link[$i]}" \
      --cluster-peers "$peers" --data-dir "$dir/n$n" >"$dir/n$n.log" 2>&1 &
    PIDS+=("$!")
  done
  api() { curl -sf -u guest:guest -X "$1" -H 'content-type: application/json' \
    ${3:+-d "$3"} "http://127.0.0.1:${http[0]}$2"; }
  local running=0
  for _ in $(seq 1 600); do
    running="$(api GET /api/nodes 2>/dev/null | python3 -c 'import json,sys; print(sum(n["running"] for n in json.load(sys.stdin)))' 2>/dev/null || echo 0)"
    [ "$running" = 3 ] && break
    sleep 0.2
  done
  [ "$running" = 3 ] || die "the cluster did not form (see $dir/n*.log)"
  log "$count: declaring"
  for q in $(seq 1 "$count"); do
    api PUT "/api/queues/%2F/heap-$q" '{"durable":true,"arguments":{"x-queue-type":"quorum"}}' >/dev/null ||
      die "declare heap-$q failed"
  done
  log "$count: idle ${IDLE}s"
  sleep "$IDLE"
  # heaptrack's child is the broker: kill it, heaptrack writes its data and exits.
  local tracked
  tracked="$(pgrep -P "${PIDS[0]}" -f "$WARREN_BIN" || pgrep -f "heaptrack.*$dir/n1" | head -1)"
  kill -9 "$tracked" 2>/dev/null || true
  wait "${PIDS[0]}" 2>/dev/null || true
  stop_all
  local data
  data="$(ls "$dir"/n1.heaptrack*)"
  heaptrack_print --print-leaks 1 --merge-backtraces 0 -n 100000 -a 0 -p 0 -T 0 "$data" \
    >"$dir/leaks.txt" 2>/dev/null || true
  python3 - "$dir/leaks.txt" <<'EOF'
import re, sys
for line in open(sys.argv[1]):
    m = re.match(r'total memory leaked: ([\d.]+)([KMG]?)B?$', line.strip())
    if m:
        scale = {'': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9}[m.group(2)]
        print(int(float(m.group(1)) * scale))
        break
else:
    print(0)
EOF
}

declare -A LEAKED
for count in $COUNTS; do
  LEAKED[$count]="$(run "$count")"
  log "$count quorum queues: n1 held ${LEAKED[$count]} bytes"
done
set -- $COUNTS
echo "| queues | n1's heap when killed |"
echo "|---|---|"
for count in $COUNTS; do echo "| $count | ${LEAKED[$count]} B |"; done
if [ $# -ge 2 ]; then
  first="$1"; last="${!#}"
  echo
  echo "per idle member: $(( (LEAKED[$last] - LEAKED[$first]) / (last - first) )) B (from $first to $last)"
fi
if [ "$TOP" -gt 0 ] && [ $# -ge 2 ]; then
  first="$1"; last="${!#}"
  echo
  echo "Per idle member, by allocation site (its first frame in Warren's code; the $last-queue run"
  echo "less the $first-queue run, over $((last - first))), the largest $TOP:"
  python3 - "$TMP/run-$first/leaks.txt" "$TMP/run-$last/leaks.txt" "$((last - first))" "$TOP" <<'EOF'
import collections, re, sys

def sites(path):
    found = collections.Counter()
    block, size = [], 0
    def flush():
        if size:
            frame = next((f for f in block if 'warren' in f), block[-1] if block else '?')
            found[re.sub(r'::h[0-9a-f]{16}$', '', frame.strip())[:150]] += size
    for line in open(path):
        m = re.match(r'^([\d.]+)([KMG]?)B? leaked over \d+ calls from', line)
        if m:
            flush()
            size = float(m.group(1)) * {'': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9}[m.group(2)]
            block = []
        elif line.startswith('  ') and not line.startswith('    ') and size:
            block.append(line)
    flush()
    return found

before, after = sites(sys.argv[1]), sites(sys.argv[2])
per = int(sys.argv[3])
diff = {k: (after[k] - before[k]) / per for k in set(before) | set(after)}
for frame, size in sorted(diff.items(), key=lambda kv: -kv[1])[: int(sys.argv[4])]:
    print(f"{size:>8.0f} B  {frame}")
EOF
fi
