#!/usr/bin/env bash
# A replicated stream on a three-node cluster on loopback (free ports, a temporary dir):
# `warren perf` publishing 16 B with confirms (1,000 in flight) for 10 s through the stream's
# leader (n1, its declaring node), then through a follower (n2), then 10 readers on n3 reading
# the whole stream from `first` (prefetch 1,000) from n3's copy.
#
#   benches/stream-cluster.sh        (WARREN_BIN: default target/release/warren, built if absent)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${WARREN_BIN:-$ROOT/target/release/warren}"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p warren)
TMP="$(mktemp -d "${TMPDIR:-/tmp}/warren-stream-cluster.XXXXXX")"
cd "$TMP"
fp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -a A H L
for i in 0 1 2; do A[$i]=$(fp); H[$i]=$(fp); L[$i]=$(fp); done
PEERS="n1@127.0.0.1:${L[0]},n2@127.0.0.1:${L[1]},n3@127.0.0.1:${L[2]}"
PIDS=()
for i in 0 1 2; do n=$((i+1))
  WARREN_CLUSTER_SECRET=c RUST_LOG=warn $BIN server --node-name n$n --amqp-listen 127.0.0.1:${A[$i]} --http-listen 127.0.0.1:${H[$i]} --cluster-listen 127.0.0.1:${L[$i]} --cluster-peers "$PEERS" --data-dir $TMP/n$n > $TMP/n$n.log 2>&1 &
  PIDS+=($!)
done
trap 'kill ${PIDS[@]}; wait; rm -rf "$TMP"' EXIT
for i in 0 1 2; do until curl -sf -u guest:guest http://127.0.0.1:${H[$i]}/api/nodes >/dev/null; do sleep 0.5; done; done
sleep 5
summ() { python3 -c 'import json,sys; j=json.load(sys.stdin); print(sys.argv[1], "confirmed", round(j["confirmed_per_s"]), "consumed", round(j["consumed_per_s"]), j.get("latency_us"))' "$1"; }
for via in 0 1; do
  $BIN perf --uri amqp://guest:guest@127.0.0.1:${A[$via]} -x 1 -y 0 -s 16 -c 1000 -f persistent -u perf-s --queue-args x-queue-type=stream -z 10 --json > out.json 2> err.txt || { tail -5 err.txt; }
  tail -1 out.json | summ "publish via n$((via+1))" || tail -5 err.txt
done
$BIN perf --uri amqp://guest:guest@127.0.0.1:${A[2]} -x 0 -y 10 -q 1000 -u perf-s -f persistent --queue-args x-queue-type=stream --consumer-args x-stream-offset=first -z 10 --json > out.json 2> err.txt || tail -5 err.txt
tail -1 out.json | summ "10 readers on n3" || tail -5 err.txt
curl -s -u guest:guest http://127.0.0.1:${H[0]}/api/queues/%2F/perf-s | python3 -c 'import json,sys; q=json.load(sys.stdin); print(q["messages"], q["leader"], q["members"])'
