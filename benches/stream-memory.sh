#!/usr/bin/env bash
# Memory while a large stream is read from its start (issue 17: RSS within 100 MB over a 10 GB
# stream). Starts Warren privately, fills one stream with 1 KiB messages until it holds GB
# gigabytes on disk, then reads all of it from `first` with one consumer (prefetch 1000) while a
# publisher goes on at 1,000 msg/s, sampling the broker's RSS every second.
#
#   benches/stream-memory.sh
#
# Environment: GB=10, WARREN_BIN (default: cargo build --release, then target/release/warren;
# also the load generator), KEEP_TMP=1 (keep the data dir and logs). Needs GB gigabytes free
# under TMPDIR. Everything it starts is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
GB="${GB:-10}"
log() { echo "stream-memory: $*" >&2; }
die() { log "error: $*"; exit 2; }
[[ "$GB" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "GB must be a number"

if [ -z "${WARREN_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p warren) >&2
  WARREN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/warren"
fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/warren-stream-memory.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"; HTTP="$(free_port)"
"$WARREN_BIN" server --amqp-listen "127.0.0.1:$PORT" --http-listen "127.0.0.1:$HTTP" \
  --data-dir "$TMP/data" >"$TMP/warren.log" 2>&1 &
BROKER=$!
PIDS+=("$BROKER")
URI="amqp://guest:guest@127.0.0.1:$PORT/%2F"
for _ in $(seq 100); do
  curl -fs -u guest:guest "http://127.0.0.1:$HTTP/api/overview" >/dev/null 2>&1 && break
  sleep 0.1
done
STREAM=big-stream
ARGS=(-u "$STREAM" -f persistent --queue-args x-queue-type=stream -s 1024)
bytes_on_disk() {
  curl -fs -u guest:guest "http://127.0.0.1:$HTTP/api/queues/%2F/$STREAM" |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("disk_bytes", 0))' 2>/dev/null || echo 0
}
rss_mib() { echo $(( $(awk '/VmRSS/ {print $2}' "/proc/$BROKER/status") / 1024 )); }

want=$(python3 -c "print(int($GB * 1024**3))")
log "filling $STREAM to $GB GB"
"$WARREN_BIN" perf --uri "$URI" "${ARGS[@]}" -x 2 -y 0 -c 1000 >"$TMP/fill.out" 2>&1 &
FILL=$!
PIDS+=("$FILL")
start=$(date +%s)
while [ "$(bytes_on_disk)" -lt "$want" ]; do
  sleep 0.5
  kill -0 "$FILL" 2>/dev/null || die "the filling publisher stopped: $(tail -n 3 "$TMP/fill.out")"
done
kill "$FILL" 2>/dev/null || true
wait "$FILL" 2>/dev/null || true
filled=$(bytes_on_disk)
messages=$(curl -fs -u guest:guest "http://127.0.0.1:$HTTP/api/queues/%2F/$STREAM" | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"])')
log "filled $((filled >> 20)) MiB, $messages messages in $(( $(date +%s) - start )) s; RSS $(rss_mib) MiB"

# One reader from the start (until it has read them all), a publisher at 1,000 msg/s beside it.
"$WARREN_BIN" perf --uri "$URI" "${ARGS[@]}" -x 1 -y 0 -r 1000 -c 100 >"$TMP/beside.out" 2>&1 &
PIDS+=("$!")
"$WARREN_BIN" perf --uri "$URI" "${ARGS[@]}" -x 0 -y 1 -q 1000 --consumer-args x-stream-offset=first \
  >"$TMP/read.out" 2>&1 &
READER=$!
PIDS+=("$READER")
start=$(date +%s)
peak=0; samples=()
while kill -0 "$READER" 2>/dev/null; do
  r=$(rss_mib); samples+=("$r"); [ "$r" -gt "$peak" ] && peak=$r
  consumed=$( (grep -o 'consumed *[0-9]*' "$TMP/read.out" || true) | awk '{s+=$2} END {print s+0}')
  if [ "$consumed" -ge "$messages" ]; then break; fi
  sleep 1
done
secs=$(( $(date +%s) - start ))
log "read $consumed messages ($(( consumed * 1024 >> 20 )) MiB of bodies) in $secs s"
echo "stream of $((filled >> 20)) MiB read from the start: broker RSS peak $peak MiB; samples (MiB, one a second): ${samples[*]}"
