#!/usr/bin/env bash
# Warren against RabbitMQ: the same `warren perf` scenarios against each broker in turn, then a
# table of medians per scenario and broker with the Warren/RabbitMQ ratio.
#
#   benches/compare.sh
#
# Both brokers run privately on free loopback ports under a temporary dir: RabbitMQ from Debian's
# rabbitmq-server package (installed with apt-get if missing), Warren from this repository. For
# each round, for each scenario, each broker runs it (A B A B ...), the first broker changing
# from round to round (A B, then B A).
#
#   a  1 -> 1, 16 B, auto-ack                                    consumed msg/s
#   b  1 -> 1, 1 KiB, confirms (1000 in flight), manual ack, prefetch 1000   consumed msg/s
#   c  b with persistent messages on a durable queue             consumed msg/s
#   d  4 producers -> 4 queues -> 4 consumers, 16 B, auto-ack    consumed msg/s
#   e  fanout: 1 producer -> exchange -> 10 queues -> 10 consumers, 16 B, auto-ack
#                                                                deliveries msg/s
#   f  1 -> 1 at a fixed 10,000 msg/s, 1 KiB, auto-ack           end-to-end p50/p99 µs
#   g  1,000 connections each publishing 10 msg/s, 1 consumer    broker peak RSS MiB (on a
#      freshly restarted broker, so that memory kept from the floods of a-e does not count)
#   h  b on a priority queue (x-max-priority 10), priorities 0-9 in turn   consumed msg/s
#   i  b with a per-message expiration (60 s, nothing expires)   consumed msg/s
#   j  1 producer -> a stream (x-queue-type=stream), 16 B, confirms (1000 in flight), no
#      consumer                                                  confirmed msg/s
#   k  10 consumers each reading one stream from `first` (prefetch 1000), the stream filled by
#      a DURATION-long run of j first (it grows round by round)  delivered msg/s (all 10)
#
# Environment:
#   DURATION=10        seconds per run
#   ROUNDS=2           rounds (the table shows the median over rounds)
#   SCENARIOS="a b c d e f g h i j k"
#   EXTRA_URI="amqp://user:pass@host:port/vhost ..."  more brokers (already running), one column
#                      each; their RSS is not measured
#   WARREN_BIN         prebuilt warren binary (default: cargo build --release, then
#                      $CARGO_TARGET_DIR/release/warren); it is also the load generator
#   SKIP_RABBITMQ=1    Warren (and EXTRA_URI) only
#   FRESH_G=0          run g on the brokers as they are instead of restarting them first
#   KEEP_TMP=1         keep the temp dir (broker logs, each run's output)
#
# Everything it starts is stopped on exit, Ctrl-C included.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-2}"
SCENARIOS="${SCENARIOS:-a b c d e f g h i j k}"
EXTRA_URI="${EXTRA_URI:-}"
RMQ_LIB=/usr/lib/rabbitmq/bin

log() { echo "compare: $*" >&2; }
die() { log "error: $*"; exit 2; }

[[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DURATION must be a number of seconds"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
for s in $SCENARIOS; do
  case "$s" in a|b|c|d|e|f|g|h|i|j|k) ;; *) die "unknown scenario '$s' (a-k)" ;; esac
done
command -v python3 >/dev/null || die "python3 is required"

# 1,000 client connections plus as many on the broker side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- temp dir and cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/warren-compare.XXXXXX")"
WARREN_PID=""
RMQ_PID=""
RMQ_NODE=""
RMQ_PORT=""
RMQ_DIST_PORT=""
PERF_PID=""
SAMPLER_PID=""
EPMD_STARTED_BY_US=0

RMQ_ENV=()
rmq_env_args() {
  local base="$TMP/rabbitmq"
  RMQ_ENV=(
    -C "$base"
    HOME="$base/home"
    ERL_CRASH_DUMP="$base/erl_crash.dump"
    RABBITMQ_NODENAME="$RMQ_NODE"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$RMQ_PORT"
    RABBITMQ_DIST_PORT="$RMQ_DIST_PORT"
    RABBITMQ_MNESIA_BASE="$base/mnesia"
    RABBITMQ_LOG_BASE="$base/log"
    RABBITMQ_PID_FILE="$base/rabbitmq.pid"
    RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
    RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
  )
}

# stop_group PID: TERM the process group PID leads (each broker was started with setsid),
# then KILL it if it is still there after 10 s.
stop_group() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop in 10 s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_warren() {
  [ -n "$WARREN_PID" ] || return 0
  stop_group "$WARREN_PID"
  WARREN_PID=""
}

stop_rabbitmq() {
  [ -n "$RMQ_PID" ] || return 0
  env "${RMQ_ENV[@]}" timeout 60 "$RMQ_LIB/rabbitmqctl" -n "$RMQ_NODE" stop "$TMP/rabbitmq/rabbitmq.pid" \
    >>"$TMP/rabbitmq/stop.log" 2>&1 || true
  stop_group "$RMQ_PID"
  RMQ_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; fi
  if [ -n "$PERF_PID" ]; then kill -TERM "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; fi
  stop_warren
  stop_rabbitmq
  if [ "$EPMD_STARTED_BY_US" = 1 ] && ! epmd -names 2>/dev/null | grep -q '^name '; then
    epmd -kill >/dev/null 2>&1 || true
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# ---------------------------------------------------------------- helpers
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT TIMEOUT_S PID: until 127.0.0.1:PORT accepts connections (fails if PID exits).
wait_port() {
  local port="$1" deadline=$((SECONDS + $2)) pid="$3"
  while [ $SECONDS -lt $deadline ]; do
    if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$port" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { log "process $pid exited before listening on port $port"; return 1; }
    sleep 0.2
  done
  log "nothing listening on port $port after $2 s"
  return 1
}

show_log() {
  [ -n "$1" ] && [ -f "$1" ] || return 0
  log "last lines of $1:"
  tail -n 30 "$1" >&2 || true
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- brokers
if [ -n "${WARREN_BIN:-}" ]; then
  BIN="$WARREN_BIN"
else
  log "building warren (cargo build --release -p warren)"
  (cd "$ROOT" && cargo build --release -p warren) >&2
  BIN="$TARGET_DIR/release/warren"
fi
[ -x "$BIN" ] || die "warren binary not found or not executable: $BIN"

start_warren() {
  local amqp_port http_port
  amqp_port="$(free_port)"
  http_port="$(free_port)"
  while [ "$http_port" = "$amqp_port" ]; do http_port="$(free_port)"; done
  rm -rf "$TMP/warren-data"
  mkdir -p "$TMP/warren-data"
  log "starting Warren on amqp 127.0.0.1:$amqp_port"
  setsid "$BIN" server --amqp-listen "127.0.0.1:$amqp_port" --http-listen "127.0.0.1:$http_port" \
    --data-dir "$TMP/warren-data" </dev/null >"$TMP/warren.log" 2>&1 &
  WARREN_PID=$!
  wait_port "$amqp_port" 30 "$WARREN_PID" || { show_log "$TMP/warren.log"; exit 1; }
  WARREN_URI="amqp://guest:guest@127.0.0.1:$amqp_port/%2F"
}

start_rabbitmq() {
  if [ ! -x "$RMQ_LIB/rabbitmq-server" ]; then
    log "rabbitmq-server not installed; installing it with apt-get"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q >/dev/null 2>&1 || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server >&2
  fi
  [ -x "$RMQ_LIB/rabbitmq-server" ] || die "no $RMQ_LIB/rabbitmq-server after install"
  RMQ_PORT="$(free_port)"
  RMQ_DIST_PORT="$(free_port)"
  while [ "$RMQ_DIST_PORT" = "$RMQ_PORT" ]; do RMQ_DIST_PORT="$(free_port)"; done
  RMQ_NODE="perf-$$@localhost"
  local base="$TMP/rabbitmq"
  rm -rf "$base/mnesia"
  mkdir -p "$base/home" "$base/mnesia" "$base/log"
  chmod 700 "$base/home"
  echo '[].' >"$base/enabled_plugins"
  : >"$base/rabbitmq-env.conf"
  cat >"$base/rabbitmq.conf" <<'EOF'
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
EOF
  echo '[].' >"$base/advanced.config"
  if ! epmd -names >/dev/null 2>&1; then EPMD_STARTED_BY_US=1; fi
  rmq_env_args
  log "starting private RabbitMQ node $RMQ_NODE on amqp 127.0.0.1:$RMQ_PORT"
  # bash execs env, env execs setsid, setsid execs the server script: $! leads its own group.
  env "${RMQ_ENV[@]}" setsid "$RMQ_LIB/rabbitmq-server" </dev/null >"$base/startup.log" 2>&1 &
  RMQ_PID=$!
  if ! wait_port "$RMQ_PORT" 120 "$RMQ_PID"; then
    show_log "$base/startup.log"
    exit 1
  fi
  env "${RMQ_ENV[@]}" timeout 60 "$RMQ_LIB/rabbitmqctl" -n "$RMQ_NODE" await_startup --timeout 50 \
    >>"$base/await.log" 2>&1 || { show_log "$base/await.log"; die "RabbitMQ did not finish booting"; }
  RMQ_URI="amqp://guest:guest@127.0.0.1:$RMQ_PORT/%2F"
}

# The Erlang VM's pid (the server script's child), whose RSS is the broker's.
rabbitmq_vm_pid() {
  local pid=""
  [ -f "$TMP/rabbitmq/rabbitmq.pid" ] && pid="$(tr -dc '0-9' <"$TMP/rabbitmq/rabbitmq.pid")"
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    pid="$(pgrep -f -- "beam.*$RMQ_NODE" | head -n1 || true)"
  fi
  echo "$pid"
}

# ---------------------------------------------------------------- scenarios
scenario_args() {
  case "$1" in
    a) echo "-x 1 -y 1 -s 16 -a" ;;
    b) echo "-x 1 -y 1 -s 1024 -c 1000 -q 1000" ;;
    c) echo "-x 1 -y 1 -s 1024 -c 1000 -q 1000 -f persistent" ;;
    d) echo "-x 4 -y 4 --queues 4 -s 16 -a" ;;
    e) echo "-x 1 -y 10 -e perf-fanout -t fanout --queues 10 -s 16 -a" ;;
    f) echo "-x 1 -y 1 -s 1024 -r 10000 -a" ;;
    g) echo "-x 1000 -y 1 -r 10 -s 16 -a" ;;
    h) echo "-x 1 -y 1 -s 1024 -c 1000 -q 1000 --queue-args x-max-priority=10 --message-properties priority=0-9" ;;
    i) echo "-x 1 -y 1 -s 1024 -c 1000 -q 1000 --message-properties expiration=60000" ;;
    j) echo "-x 1 -y 0 -s 16 -c 1000 -f persistent --queue-args x-queue-type=stream" ;;
    k) echo "-x 0 -y 10 -q 1000 -u perf-stream-k -f persistent --queue-args x-queue-type=stream --consumer-args x-stream-offset=first" ;;
  esac
}

BROKERS=()      # column names
declare -A URI_OF PID_OF
RESULTS="$TMP/results.tsv"   # round, scenario, broker, json, peak RSS KiB, RSS before KiB
: >"$RESULTS"

# run_one ROUND SCENARIO BROKER
run_one() {
  local round="$1" s="$2" b="$3" uri="${URI_OF[$3]}" pid="${PID_OF[$3]:-}" out json peak=0 before=0 rc=0
  out="$TMP/run-$round-$s-$b.out"
  if [ -n "$pid" ]; then before="$(rss_kib "$pid")"; fi
  if [ "$s" = k ]; then
    # The stream k reads, filled (more) first.
    # shellcheck disable=SC2046
    RUST_BACKTRACE=0 timeout --kill-after=10 $((${DURATION%.*} + 120)) "$BIN" perf --uri "$uri" \
      -x 1 -y 0 -s 16 -c 1000 -u perf-stream-k -f persistent --queue-args x-queue-type=stream \
      -z "$DURATION" --json >"$out.fill" 2>&1 || log "round $round: filling the stream for k failed"
  fi
  # shellcheck disable=SC2046
  RUST_BACKTRACE=0 timeout --kill-after=10 $((${DURATION%.*} + 120)) "$BIN" perf --uri "$uri" $(scenario_args "$s") \
    -z "$DURATION" --json >"$out" 2>"$out.err" &
  PERF_PID=$!
  if [ -n "$pid" ]; then
    # Peak broker RSS while the run lasts.
    ( peak=0
      while kill -0 "$PERF_PID" 2>/dev/null; do
        r="$(rss_kib "$pid")"
        if [ "${r:-0}" -gt "$peak" ]; then peak="$r"; echo "$peak" >"$out.rss"; fi
        sleep 0.5
      done ) &
    SAMPLER_PID=$!
  fi
  wait "$PERF_PID" || rc=$?
  PERF_PID=""
  if [ -n "$SAMPLER_PID" ]; then wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""; fi
  if [ -f "$out.rss" ]; then peak="$(cat "$out.rss")"; fi
  json="$(tail -n 1 "$out")"
  case "$json" in
    \{*) ;;
    *) json="null"; log "round $round scenario $s on $b: perf exited with $rc, no summary"; tail -n 5 "$out.err" >&2 || true ;;
  esac
  [ "$rc" = 0 ] || { log "round $round scenario $s on $b: perf exited with $rc"; grep -v '^ ' "$out.err" | tail -n 5 >&2 || true; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$s" "$b" "$json" "$peak" "$before" >>"$RESULTS"
  python3 - "$s" "$b" "$json" "$peak" <<'EOF' >&2
import json, sys
s, b, j, peak = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if j == "null":
    sys.exit(0)
j = json.loads(j)
lat = j.get("latency_us") or {}
print(f"compare:   {s} {b:<10} published {j['published_per_s']:>10.0f}/s  confirmed {j['confirmed_per_s']:>10.0f}/s"
      f"  consumed {j['consumed_per_s']:>10.0f}/s  p50 {lat.get('p50', '-')} p99 {lat.get('p99', '-')} µs"
      + (f"  peak RSS {peak / 1024:.0f} MiB" if peak else ""))
EOF
}

# (re)start_broker NAME: a fresh broker process, with nothing left from earlier runs.
start_broker() {
  case "$1" in
    RabbitMQ) stop_rabbitmq; start_rabbitmq; URI_OF[RabbitMQ]="$RMQ_URI"; PID_OF[RabbitMQ]="$(rabbitmq_vm_pid)" ;;
    Warren) stop_warren; start_warren; URI_OF[Warren]="$WARREN_URI"; PID_OF[Warren]="$WARREN_PID" ;;
  esac
}

if [ "${SKIP_RABBITMQ:-0}" != 1 ]; then
  BROKERS+=(RabbitMQ)
  start_broker RabbitMQ
fi
BROKERS+=(Warren)
start_broker Warren
n=0
for uri in $EXTRA_URI; do
  n=$((n + 1))
  name="extra$n"
  BROKERS+=("$name"); URI_OF[$name]="$uri"
  log "$name = $uri"
done
for b in "${BROKERS[@]}"; do
  if [ -n "${PID_OF[$b]:-}" ]; then
    log "$b idle RSS $(( $(rss_kib "${PID_OF[$b]}") / 1024 )) MiB (pid ${PID_OF[$b]})"
  fi
done

for round in $(seq 1 "$ROUNDS"); do
  # The brokers take turns going first: with a fixed order, the broker that always ran first
  # measured 15-25% lower than when the same binary ran later in the round, so a fixed order
  # favours the later columns.
  n=${#BROKERS[@]}
  ORDER=()
  for ((k = 0; k < n; k++)); do ORDER+=("${BROKERS[$(( (k + round - 1) % n ))]}"); done
  for s in $SCENARIOS; do
    for b in "${ORDER[@]}"; do
      if [ "$s" = g ] && [ "${FRESH_G:-1}" = 1 ] && [ -n "${PID_OF[$b]:-}" ]; then
        # Memory is the point of g: measure it on a broker that has not run the floods before.
        log "restarting $b for scenario g"
        start_broker "$b"
        sleep 3
      fi
      log "round $round/$ROUNDS, scenario $s ($(scenario_args "$s")), $b"
      run_one "$round" "$s" "$b"
      sleep 2
    done
  done
done

# ---------------------------------------------------------------- table
python3 - "$RESULTS" "$DURATION" "$ROUNDS" "${BROKERS[@]}" <<'EOF'
import json, statistics, sys

path, duration, rounds, brokers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
runs = {}
for line in open(path):
    rnd, s, b, j, peak, before = line.rstrip("\n").split("\t")
    runs.setdefault((s, b), []).append((None if j == "null" else json.loads(j), int(peak), int(before)))

def consumed(j, *_):
    return j["consumed_per_s"]
def published(j, *_):
    return j["published_per_s"]
def confirmed(j, *_):
    return j["confirmed_per_s"]
def lat(q):
    return lambda j, *_: (j.get("latency_us") or {}).get(q)
def rss(_, peak, __):
    return peak / 1024 if peak else None
def rss_before(_, __, before):
    return before / 1024 if before else None

rows = [
    ("a", "1->1 16 B auto-ack", "consumed msg/s", consumed, "higher"),
    ("b", "1->1 1 KiB confirm+ack q1000", "consumed msg/s", consumed, "higher"),
    ("c", "b, persistent/durable", "consumed msg/s", consumed, "higher"),
    ("d", "4->4 queues->4, 16 B", "consumed msg/s", consumed, "higher"),
    ("e", "fanout 1->10 queues, 16 B", "published msg/s", published, "higher"),
    ("e", "", "delivered msg/s", consumed, "higher"),
    ("f", "10k msg/s 1 KiB latency", "p50 µs", lat("p50"), "lower"),
    ("f", "", "p99 µs", lat("p99"), "lower"),
    ("g", "1000 conns x 10 msg/s", "consumed msg/s", consumed, "higher"),
    ("g", "", "broker RSS before MiB", rss_before, "lower"),
    ("g", "", "peak broker RSS MiB", rss, "lower"),
    ("h", "b, priority queue, 10 levels", "consumed msg/s", consumed, "higher"),
    ("i", "b, per-message TTL", "consumed msg/s", consumed, "higher"),
    ("j", "1->stream 16 B, confirms", "confirmed msg/s", confirmed, "higher"),
    ("k", "10 stream readers from first", "delivered msg/s", consumed, "higher"),
]
present = {s for (s, _) in runs}
header = ["", "scenario", "metric"] + brokers
if "RabbitMQ" in brokers and "Warren" in brokers:
    header.append("Warren/RabbitMQ")
header.append("better")
table = [header]
for s, name, metric, f, better in rows:
    if s not in present:
        continue
    med = {}
    for b in brokers:
        vals = [f(j, peak, before) for (j, peak, before) in runs.get((s, b), []) if j is not None]
        vals = [v for v in vals if v is not None]
        med[b] = statistics.median(vals) if vals else None
    row = [s if name else "", name, metric]
    for b in brokers:
        v = med[b]
        row.append("err" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}"))
    if "RabbitMQ" in brokers and "Warren" in brokers:
        r, w = med["RabbitMQ"], med["Warren"]
        row.append(f"{w / r:.2f}x" if r and w is not None else "-")
    row.append(better)
    table.append(row)
widths = [max(len(r[i]) for r in table) for i in range(len(header))]
print()
print(f"medians over {rounds} round(s) of {duration} s per run")
for i, r in enumerate(table):
    cells = [c.ljust(widths[k]) if k < 3 else c.rjust(widths[k]) for k, c in enumerate(r)]
    print("  ".join(cells).rstrip())
    if i == 0:
        print("  ".join("-" * w for w in widths))
EOF
