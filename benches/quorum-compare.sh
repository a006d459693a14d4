#!/usr/bin/env bash
# Warren's quorum queues on a three-node cluster against RabbitMQ 3.10's on a three-node cluster,
# both on this machine, with the same `warren perf` workload (issue 15's "Numbers"):
#
#   benches/quorum-compare.sh
#
# Workload: 1 producer, 1 consumer, one quorum queue (x-queue-type=quorum, durable), 1 KiB
# persistent messages, publisher confirms with at most 1,000 unconfirmed, manual acks with
# prefetch 1,000 (a multiple ack every 500), DURATION seconds per run. Each run has a queue of
# its own: declared through node 1 before the run, its leader looked up (Warren: the management
# API's `leader`; RabbitMQ: `rabbitmqctl list_queues name leader`), the clients placed by it,
# the queue deleted after the run.
#
#   split       consumer on the leader's node, producer on another node; unlimited rate
#   local       producer and consumer on the leader's node; unlimited rate
#   apart       producer and consumer each on a node that is not the leader's; unlimited rate
#   split-5k    split at a fixed 5,000 msg/s (-r 5000): end-to-end latency
#   local-5k    local at a fixed 5,000 msg/s
#
# Each round runs every scenario on both brokers, the broker going first alternating from
# scenario to scenario and round to round; the table shows medians over ROUNDS and the
# Warren/RabbitMQ ratios against the targets (throughput >= 3x, p99 at 5k msg/s <= 1/2). The
# 1-minute load average (`uptime`) is recorded before each run: the machine is shared.
#
# Environment: DURATION=10, ROUNDS=3, SCENARIOS="split local apart split-5k local-5k", RATE=5000,
# WARREN_BIN (default: cargo build --release, then target/release/warren; also the load
# generator), RMQ_PORT_BASE (benches/rabbitmq-cluster.sh's, default 27100), SKIP_RABBITMQ=1 /
# SKIP_WARREN=1, KEEP_TMP=1 (keep logs and each run's output). Everything it starts is stopped
# on exit, Ctrl-C included.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
SCENARIOS="${SCENARIOS:-split local apart split-5k local-5k}"
RATE="${RATE:-5000}"

log() { echo "quorum-compare: $*" >&2; }
die() { log "error: $*"; exit 2; }

[[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DURATION must be a number of seconds"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
for s in $SCENARIOS; do
  case "$s" in split|local|apart|split-5k|local-5k) ;; *) die "unknown scenario '$s'" ;; esac
done

if [ -z "${WARREN_BIN:-}" ]; then
  log "building warren (cargo build --release -p warren)"
  (cd "$ROOT" && cargo build --release -p warren) >&2
  WARREN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/warren"
fi
[ -x "$WARREN_BIN" ] || die "no warren binary at $WARREN_BIN"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/warren-quorum-compare.XXXXXX")"
export RMQ_CLUSTER_DIR="$TMP/rabbitmq"
WARREN_PIDS=()
RMQ_STARTED=0
PERF_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$PERF_PID" ]; then kill -TERM "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; fi
  for p in "${WARREN_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${WARREN_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$RMQ_STARTED" = 1 ]; then "$HERE/rabbitmq-cluster.sh" stop || true; fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BROKERS=()
declare -A URI         # "broker,node" (node 1-3) -> that node's AMQP URI
declare -A BROKER_PIDS # broker -> the three server processes (for CPU time)
WARREN_HTTP1=""

# ---------------------------------------------------------------- Warren: as benches/cluster.sh
start_warren() {
  local -a amqp http link
  local i n running=0
  for i in 0 1 2; do amqp[$i]="$(free_port)"; http[$i]="$(free_port)"; link[$i]="$(free_port)"; done
  local peers="n1@127.0.0.1:${link[0]},n2@127.0.0.1:${link[1]},n3@127.0.0.1:${link[2]}"
  for i in 0 1 2; do
    n=$((i + 1))
    WARREN_CLUSTER_SECRET=bench-cookie RUST_LOG=warn "$WARREN_BIN" server --node-name "n$n" \
      --amqp-listen "127.0.0.1:${amqp[$i]}" --http-listen "127.0.0.1:${http[$i]}" \
      --cluster-listen "127.0.0.1:${link[$i]}" --cluster-peers "$peers" \
      --data-dir "$TMP/warren/n$n" >"$TMP/warren-n$n.log" 2>&1 &
    WARREN_PIDS+=("$!")
  done
  log "waiting for the Warren cluster to form"
  for _ in $(seq 1 300); do
    running="$(curl -sf -u guest:guest "http://127.0.0.1:${http[0]}/api/nodes" 2>/dev/null |
      python3 -c 'import json,sys; print(sum(n["running"] for n in json.load(sys.stdin)))' 2>/dev/null || echo 0)"
    [ "$running" = 3 ] && break
    sleep 0.2
  done
  [ "$running" = 3 ] || die "the Warren cluster did not form (see $TMP/warren-n*.log)"
  WARREN_HTTP1="${http[0]}"
  BROKERS+=(Warren)
  for i in 1 2 3; do URI[Warren,$i]="amqp://guest:guest@127.0.0.1:${amqp[$((i - 1))]}/%2F"; done
  BROKER_PIDS[Warren]="${WARREN_PIDS[*]}"
}

# ---------------------------------------------------------------- RabbitMQ: benches/rabbitmq-cluster.sh
start_rabbitmq() {
  local out i
  RMQ_STARTED=1
  out="$("$HERE/rabbitmq-cluster.sh" start)"
  BROKERS+=(RabbitMQ)
  for i in 1 2 3; do URI[RabbitMQ,$i]="$(echo "$out" | awk -v n="$i" 'NR == n {print $2}')"; done
  local pids=""
  for i in 1 2 3; do pids="$pids $(tr -dc '0-9' <"$RMQ_CLUSTER_DIR/wrb$i/rabbitmq.pid")"; done
  BROKER_PIDS[RabbitMQ]="${pids# }"
}

[ "${SKIP_WARREN:-0}" = 1 ] || start_warren
[ "${SKIP_RABBITMQ:-0}" = 1 ] || start_rabbitmq
[ "${#BROKERS[@]}" -gt 0 ] || die "nothing to compare (SKIP_WARREN and SKIP_RABBITMQ)"

# CPU seconds (user + system) used so far by a broker's three processes.
cpu_s() {
  local hz total=0 p t
  hz="$(getconf CLK_TCK)"
  for p in ${BROKER_PIDS[$1]}; do
    t="$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)"
    total=$((total + t))
  done
  python3 -c "print($total / $hz)"
}

QUEUE_FLAGS="--queue-args x-queue-type=quorum -f persistent"

# ---------------------------------------------------------------- the queue of a run
# The queue is declared before the run (through node 1, by a consumer-only `warren perf` that
# keeps it), its leader looked up, and the run's clients placed by where the leader is; the
# queue is deleted after the run.

# declare_queue BROKER NAME
declare_queue() {
  # shellcheck disable=SC2086
  "$WARREN_BIN" perf --uri "${URI[$1,1]}" -u "$2" $QUEUE_FLAGS -x 0 -y 1 -z 0.2 >"$TMP/declare-$2.out" 2>&1 \
    || { cat "$TMP/declare-$2.out" >&2; die "declaring $2 on $1 failed"; }
}

# leader_of BROKER NAME: the index (1-3) of the node leading the queue NAME.
leader_of() {
  local leader="" _
  for _ in $(seq 1 100); do
    case "$1" in
      Warren)
        leader="$(curl -sf -u guest:guest "http://127.0.0.1:$WARREN_HTTP1/api/queues/%2F/$2" |
          python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader") or "")' || true)"
        leader="${leader#n}" ;;
      RabbitMQ)
        leader="$("$HERE/rabbitmq-cluster.sh" ctl 1 list_queues -q name leader 2>/dev/null |
          awk -v q="$2" '$1 == q {print $2}' || true)"
        leader="${leader#wrb}"; leader="${leader%@*}" ;;
    esac
    case "$leader" in 1|2|3) echo "$leader"; return 0 ;; esac
    sleep 0.1
  done
  die "no leader for queue $2 on $1"
}

delete_queue() { # delete_queue BROKER NAME (a failure is logged; the run goes on)
  local code
  case "$1" in
    Warren)
      code="$(curl -s -o "$TMP/delete-$2.out" -w '%{http_code}' -u guest:guest -X DELETE \
        "http://127.0.0.1:$WARREN_HTTP1/api/queues/%2F/$2" || true)"
      case "$code" in 2??) ;; *) log "deleting $2 on Warren: HTTP $code $(head -c 300 "$TMP/delete-$2.out")" ;; esac ;;
    RabbitMQ)
      "$HERE/rabbitmq-cluster.sh" ctl 1 delete_queue "$2" >"$TMP/delete-$2.out" 2>&1 ||
        log "deleting $2 on RabbitMQ failed: $(tail -n 3 "$TMP/delete-$2.out")" ;;
  esac
}

# perf_uris SCENARIO BROKER LEADER: --uri flags (the first the consumer's, the second the
# producer's) placing the clients of a scenario relative to the queue's leader.
perf_uris() {
  local l="$3" f1=$(( $3 % 3 + 1 )) f2=$(( ($3 + 1) % 3 + 1 ))
  case "$1" in
    split*) echo "--uri ${URI[$2,$l]} --uri ${URI[$2,$f1]}" ;;  # consumer on the leader
    local*) echo "--uri ${URI[$2,$l]}" ;;
    apart) echo "--uri ${URI[$2,$f1]} --uri ${URI[$2,$f2]}" ;;   # neither on the leader
  esac
}

perf_args() { # perf_args SCENARIO: the workload's flags for a scenario
  echo "-x 1 -y 1 $QUEUE_FLAGS -c 1000 -q 1000 -s 1024 -z $DURATION --json"
  case "$1" in *-5k) echo "-r $RATE" ;; esac
}

RESULTS="$TMP/results.tsv" # round, scenario, broker, load, broker CPU s, leader, json
: >"$RESULTS"
run_one() { # run_one ROUND SCENARIO BROKER
  local out="$TMP/run-$1-$2-$3" q="qc-$1-$2-$3" load cpu0 cpu1 json rc=0 leader
  declare_queue "$3" "$q"
  leader="$(leader_of "$3" "$q")"
  sleep 1
  load="$(cut -d' ' -f1 /proc/loadavg)"
  cpu0="$(cpu_s "$3")"
  # shellcheck disable=SC2046
  RUST_BACKTRACE=0 timeout --kill-after=10 $((${DURATION%.*} + 120)) "$WARREN_BIN" perf \
    $(perf_uris "$2" "$3" "$leader") -u "$q" $(perf_args "$2") >"$out.out" 2>"$out.err" &
  PERF_PID=$!
  wait "$PERF_PID" || rc=$?
  PERF_PID=""
  cpu1="$(cpu_s "$3")"
  delete_queue "$3" "$q"
  json="$(tail -n 1 "$out.out")"
  case "$json" in \{*) ;; *) json=null ;; esac
  [ "$rc" = 0 ] && [ "$json" != null ] || { log "round $1 $2 on $3: perf exited with $rc"; tail -n 5 "$out.err" >&2 || true; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$load" \
    "$(python3 -c "print(round($cpu1 - $cpu0, 2))")" "$leader" "$json" >>"$RESULTS"
  python3 - "$2" "$3" "$load" "$leader" "$json" <<'EOF' >&2
import json, sys
s, b, load, leader, j = sys.argv[1:]
if j == "null":
    sys.exit(0)
j = json.loads(j)
lat = j.get("latency_us") or {}
print(f"quorum-compare:   {s:<9} {b:<8} load {load:>5}  leader node {leader}  published {j['published_per_s']:>8.0f}/s"
      f"  confirmed {j['confirmed_per_s']:>8.0f}/s  consumed {j['consumed_per_s']:>8.0f}/s"
      f"  p50 {lat.get('p50', '-')} p99 {lat.get('p99', '-')} µs")
EOF
}

# Warm-up, not recorded: one short split run per broker.
for b in "${BROKERS[@]}"; do
  log "warm-up on $b"
  DURATION=3 run_one 0 split "$b"
done
: >"$RESULTS"

log "workload: $(perf_args split-5k | tr '\n' ' ')"
k=0
for round in $(seq 1 "$ROUNDS"); do
  for s in $SCENARIOS; do
    k=$((k + 1))
    n=${#BROKERS[@]}
    for ((j = 0; j < n; j++)); do
      b="${BROKERS[$(( (j + k + round) % n ))]}"
      log "round $round/$ROUNDS, $s, $b"
      run_one "$round" "$s" "$b"
      sleep 2
    done
  done
done

python3 - "$RESULTS" "$DURATION" "$ROUNDS" "$RATE" "${BROKERS[@]}" <<'EOF'
import json, statistics, sys

path, duration, rounds, rate, brokers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
runs = {}
for line in open(path):
    rnd, s, b, load, cpu, leader, j = line.rstrip("\n").split("\t")
    runs.setdefault((s, b), []).append((None if j == "null" else json.loads(j), float(load), float(cpu)))

def med(s, b, f):
    vals = [f(j, cpu) for (j, _, cpu) in runs.get((s, b), []) if j is not None]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

consumed = lambda j, cpu: j["consumed_per_s"]
confirmed = lambda j, cpu: j["confirmed_per_s"]
lat = lambda q: (lambda j, cpu: (j.get("latency_us") or {}).get(q))
# Broker CPU per 1,000 messages consumed (the three processes together).
cpu_per_k = lambda j, cpu: cpu / max(1, j["consumed"]) * 1e6

rows = [
    ("split", "consumed msg/s", consumed, "higher", 3.0),
    ("split", "confirmed msg/s", confirmed, "higher", None),
    ("split", "broker CPU ms / 1k msgs", cpu_per_k, "lower", None),
    ("local", "consumed msg/s", consumed, "higher", 3.0),
    ("local", "confirmed msg/s", confirmed, "higher", None),
    ("local", "broker CPU ms / 1k msgs", cpu_per_k, "lower", None),
    ("apart", "consumed msg/s", consumed, "higher", 3.0),
    ("apart", "confirmed msg/s", confirmed, "higher", None),
    ("apart", "broker CPU ms / 1k msgs", cpu_per_k, "lower", None),
    ("split-5k", "consumed msg/s", consumed, "higher", None),
    ("split-5k", "p50 µs", lat("p50"), "lower", None),
    ("split-5k", "p99 µs", lat("p99"), "lower", 0.5),
    ("local-5k", "consumed msg/s", consumed, "higher", None),
    ("local-5k", "p50 µs", lat("p50"), "lower", None),
    ("local-5k", "p99 µs", lat("p99"), "lower", 0.5),
]
present = {s for (s, _) in runs}
both = "Warren" in brokers and "RabbitMQ" in brokers
print()
print(f"medians over {rounds} round(s) of {duration} s per run; 1 -> 1, quorum queue, 1 KiB persistent, "
      f"confirms (1,000 in flight), manual ack (prefetch 1,000); *-5k at -r {rate}")
print()
head = ["scenario", "metric"] + brokers + (["Warren/RabbitMQ", "target", "met"] if both else [])
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
fmt = lambda v: "err" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}")
for s, metric, f, better, target in rows:
    if s not in present:
        continue
    m = {b: med(s, b, f) for b in brokers}
    row = [s, metric] + [fmt(m[b]) for b in brokers]
    if both:
        w, r = m["Warren"], m["RabbitMQ"]
        ratio = w / r if (w is not None and r) else None
        row.append("-" if ratio is None else f"{ratio:.2f}x")
        if target is None:
            row += ["", ""]
        elif better == "higher":
            row += [f">= {target:g}x", "-" if ratio is None else ("yes" if ratio >= target else "no")]
        else:
            row += [f"<= {target:g}x", "-" if ratio is None else ("yes" if ratio <= target else "no")]
    print("| " + " | ".join(row) + " |")
print()
print("each run (round, scenario, broker, 1-min load before it, leader's node, consumed msg/s, p50/p99 µs):")
for line in open(path):
    rnd, s, b, load, cpu, leader, j = line.rstrip("\n").split("\t")
    if j == "null":
        print(f"  {rnd} {s:<9} {b:<8} load {load:>5}  failed")
        continue
    j = json.loads(j)
    l = j.get("latency_us") or {}
    print(f"  {rnd} {s:<9} {b:<8} load {load:>5}  leader {leader}  consumed {j['consumed_per_s']:>8.0f}/s  "
          f"p50 {l.get('p50', '-')} p99 {l.get('p99', '-')} µs  broker CPU {cpu} s")
EOF
