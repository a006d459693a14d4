#!/usr/bin/env bash
# A private three-node RabbitMQ cluster on this machine, for comparisons with Warren's cluster
# (benches/quorum-compare.sh uses it).
#
#   benches/rabbitmq-cluster.sh start    start wrb1, wrb2, wrb3 (@localhost), join them into one
#                                        cluster, wait until all three run; prints one AMQP URI
#                                        per node on stdout, as "NODE URI"
#   benches/rabbitmq-cluster.sh stop     stop the three nodes and their epmd, remove the state dir
#   benches/rabbitmq-cluster.sh status   the cluster's status (rabbitmqctl cluster_status)
#   benches/rabbitmq-cluster.sh ctl N ARGS...      rabbitmqctl ARGS on node N (1-3)
#   benches/rabbitmq-cluster.sh queues N ARGS...   rabbitmq-queues ARGS on node N (1-3)
#
# Everything is its own: node names wrb1..3@localhost, ports from RMQ_PORT_BASE (default 27100):
# AMQP BASE+1..3, Erlang distribution BASE+11..13, its own epmd on BASE+20, the CLI tools'
# distribution ports BASE+30..49, and config, data, logs and the Erlang cookie (a HOME of its
# own) in RMQ_CLUSTER_DIR (default ${TMPDIR:-/tmp}/warren-rabbitmq-cluster). Nothing of a
# RabbitMQ running elsewhere on this machine (5672/15672/25672, epmd on 4369, /var/lib/rabbitmq)
# is used or touched. RabbitMQ is Debian's rabbitmq-server package (3.10.x on Debian 12),
# installed with apt-get if missing. If `start` fails half-way, what it started is stopped.
#
# Environment: RMQ_PORT_BASE=27100, RMQ_CLUSTER_DIR, RMQ_SCHEDULER_BIND_TYPE=u (the Erlang VMs'
# scheduler binding: three VMs share the machine's cores, so unbound rather than RabbitMQ's
# default "db", which pins each VM's schedulers to the same cores).
set -euo pipefail

RMQ_LIB=/usr/lib/rabbitmq/bin
BASE="${RMQ_PORT_BASE:-27100}"
DIR="${RMQ_CLUSTER_DIR:-${TMPDIR:-/tmp}/warren-rabbitmq-cluster}"
EPMD_PORT=$((BASE + 20))
NODES=(wrb1@localhost wrb2@localhost wrb3@localhost)

log() { echo "rabbitmq-cluster: $*" >&2; }
die() { log "error: $*"; exit 2; }

[[ "$BASE" =~ ^[0-9]+$ ]] && [ "$BASE" -ge 1024 ] && [ "$BASE" -le 65480 ] \
  || die "RMQ_PORT_BASE must be a port number between 1024 and 65480"

amqp_port() { echo $((BASE + $1)); }        # node index 1-3
dist_port() { echo $((BASE + 10 + $1)); }

# node_env I: NODE_ENV, the environment of node I's server and of every CLI call aimed at it.
NODE_ENV=()
node_env() {
  local i="$1" d="$DIR/wrb$1"
  NODE_ENV=(
    HOME="$DIR/home"
    ERL_EPMD_PORT="$EPMD_PORT"
    ERL_EPMD_ADDRESS=127.0.0.1
    ERL_CRASH_DUMP="$d/erl_crash.dump"
    RABBITMQ_NODENAME="${NODES[$((i - 1))]}"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$(amqp_port "$i")"
    RABBITMQ_DIST_PORT="$(dist_port "$i")"
    RABBITMQ_CTL_DIST_PORT_MIN=$((BASE + 30))
    RABBITMQ_CTL_DIST_PORT_MAX=$((BASE + 49))
    RABBITMQ_MNESIA_BASE="$d/mnesia"
    RABBITMQ_LOG_BASE="$d/log"
    RABBITMQ_PID_FILE="$d/rabbitmq.pid"
    RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
    RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
    RABBITMQ_SCHEDULER_BIND_TYPE="${RMQ_SCHEDULER_BIND_TYPE:-u}"
  )
}

# ctl I TOOL ARGS...: a RabbitMQ CLI tool (rabbitmqctl, rabbitmq-queues, ...) against node I,
# given at most CTL_TIMEOUT seconds (default 300).
ctl() {
  local i="$1" tool="$2"
  shift 2
  node_env "$i"
  env "${NODE_ENV[@]}" timeout "${CTL_TIMEOUT:-300}" "$RMQ_LIB/$tool" -n "${NODES[$((i - 1))]}" "$@"
}

# port_in_use PORT: something listens on it (SO_REUSEADDR as the servers set it, so that the
# TIME-WAIT connections of a cluster stopped just before do not count).
port_in_use() {
  python3 -c 'import socket,sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$1"
}

install_rabbitmq() {
  [ -x "$RMQ_LIB/rabbitmq-server" ] && return 0
  log "rabbitmq-server not installed; installing Debian's package with apt-get"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null 2>&1 || true
  # Debian's policy-rc.d (in containers) keeps the package's own service from starting.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    rabbitmq-server >&2
  [ -x "$RMQ_LIB/rabbitmq-server" ] || die "no $RMQ_LIB/rabbitmq-server after install"
}

do_stop() {
  [ -d "$DIR" ] || return 0
  local i pid
  for i in 3 2 1; do
    [ -f "$DIR/wrb$i/server.pid" ] || continue
    pid="$(cat "$DIR/wrb$i/server.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping ${NODES[$((i - 1))]}"
      CTL_TIMEOUT=60 ctl "$i" rabbitmqctl stop "$DIR/wrb$i/rabbitmq.pid" >>"$DIR/wrb$i/stop.log" 2>&1 || true
      # The server script execs the VM in a process group of its own (setsid): whatever is
      # left of it (the VM, its port programs) goes with the group.
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        log "${NODES[$((i - 1))]} (pid $pid) did not stop; killing its process group"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    kill -TERM -- "-$pid" 2>/dev/null || true   # leftovers of the group (inet_gethost, ...)
  done
  # Only the epmd on this cluster's own port: another RabbitMQ's epmd (4369) stays.
  ERL_EPMD_PORT="$EPMD_PORT" epmd -kill >/dev/null 2>&1 || true
  rm -rf "$DIR"
}

do_start() {
  install_rabbitmq
  if [ -d "$DIR" ]; then
    log "$DIR exists (a cluster left running?); stopping what is there first"
    do_stop
  fi
  local i p
  for p in $(amqp_port 1) $(amqp_port 2) $(amqp_port 3) $(dist_port 1) $(dist_port 2) \
    $(dist_port 3) "$EPMD_PORT"; do
    port_in_use "$p" && die "port $p is in use (set RMQ_PORT_BASE to another base)"
  done
  mkdir -p "$DIR/home"
  chmod 700 "$DIR/home"
  # One cookie for the three nodes and the CLI tools (all with HOME=$DIR/home).
  python3 -c 'import secrets; print(secrets.token_hex(16).upper(), end="")' >"$DIR/home/.erlang.cookie"
  chmod 400 "$DIR/home/.erlang.cookie"
  echo '[].' >"$DIR/enabled_plugins"
  : >"$DIR/rabbitmq-env.conf"
  echo '[].' >"$DIR/advanced.config"
  cat >"$DIR/rabbitmq.conf" <<'EOF'
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
EOF
  trap 'rc=$?; if [ $rc != 0 ]; then log "start failed; stopping what was started"; do_stop; fi' EXIT
  for i in 1 2 3; do
    mkdir -p "$DIR/wrb$i/mnesia" "$DIR/wrb$i/log"
    log "starting ${NODES[$((i - 1))]} (amqp 127.0.0.1:$(amqp_port "$i"), dist $(dist_port "$i"), epmd $EPMD_PORT)"
    # env execs setsid, setsid execs the server script, which execs the VM: $! is the VM and
    # leads its own process group.
    node_env "$i"
    env "${NODE_ENV[@]}" setsid "$RMQ_LIB/rabbitmq-server" </dev/null >"$DIR/wrb$i/startup.log" 2>&1 &
    echo $! >"$DIR/wrb$i/server.pid"
  done
  for i in 1 2 3; do
    # `wait PIDFILE` waits for the pid file, then for the node to have booted.
    if ! ctl "$i" rabbitmqctl wait --timeout 180 "$DIR/wrb$i/rabbitmq.pid" >>"$DIR/wrb$i/await.log" 2>&1; then
      tail -n 30 "$DIR/wrb$i/startup.log" "$DIR/wrb$i/await.log" >&2 || true
      die "${NODES[$((i - 1))]} did not boot"
    fi
  done
  for i in 2 3; do
    log "joining ${NODES[$((i - 1))]} to ${NODES[0]}"
    { ctl "$i" rabbitmqctl stop_app &&
      ctl "$i" rabbitmqctl join_cluster "${NODES[0]}" &&
      ctl "$i" rabbitmqctl start_app &&
      ctl "$i" rabbitmqctl await_startup --timeout 120; } >>"$DIR/wrb$i/join.log" 2>&1 \
      || { tail -n 30 "$DIR/wrb$i/join.log" >&2; die "${NODES[$((i - 1))]} did not join"; }
  done
  local running
  running="$(ctl 1 rabbitmqctl cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))' || echo 0)"
  [ "$running" = 3 ] || die "the cluster has $running running node(s), not 3"
  trap - EXIT
  log "cluster of 3 running (state in $DIR; stop with: $0 stop)"
  for i in 1 2 3; do
    echo "${NODES[$((i - 1))]} amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/%2F"
  done
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  status) ctl 1 rabbitmqctl cluster_status ;;
  ctl) shift; [ $# -ge 1 ] || die "usage: $0 ctl NODE(1-3) ARGS..."; i="$1"; shift; ctl "$i" rabbitmqctl "$@" ;;
  queues) shift; [ $# -ge 1 ] || die "usage: $0 queues NODE(1-3) ARGS..."; i="$1"; shift; ctl "$i" rabbitmq-queues "$@" ;;
  *) echo "usage: $0 start|stop|status|ctl N ARGS...|queues N ARGS..." >&2; exit 2 ;;
esac
