#!/usr/bin/env bash
# Run Warren's client-compatibility suites (compat-tests/suites/*) against a broker.
#
#   compat-tests/run.sh [--broker warren|rabbitmq|amqp://URI] [--reference rabbitmq|amqp://URI]
#                       [--suite NAME]...
#
#   --broker warren    (default) build Warren (unless WARREN_BIN is set), start it on free
#                      loopback ports with a temporary data dir, stop it on exit.
#   --broker rabbitmq  start a private RabbitMQ node (installed with apt-get if missing) on free
#                      ports under a temporary dir, stop it on exit.
#   --broker amqp://…  use an already running broker at that URI, as is.
#   --reference …      a second broker, for suites that compare two (differential): rabbitmq
#                      (a private node, as above) or amqp://URI. Exported as REFERENCE_URL.
#   --suite NAME       run compat-tests/suites/NAME; repeatable. Default: every suite but the
#                      opt-in ones (a file OPT_IN in the suite's dir, its first line the reason).
#
# Environment: WARREN_BIN (prebuilt binary; skips cargo build), CARGO_TARGET_DIR,
# COMPAT_SUITE_TIMEOUT (seconds for one suite as a whole, default 600, or the first line of the
# suite's file TIMEOUT if it has one),
# COMPAT_KEEP_TMP=1 (keep the temp dir with broker logs and junit xml),
# COMPAT_KNOWN_FAILURES=0 (with --broker warren: ignore compat-tests/known-failures/).
#
# Prints one line per suite, `NAME: N passed, N failed, N skipped`, and exits non-zero if any
# suite had a failure or an error (or pytest itself failed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
VENV="$ROOT/target/compat-venv"
CACHE="$ROOT/target/compat-cache"
SUITE_TIMEOUT="${COMPAT_SUITE_TIMEOUT:-600}"

log() { echo "compat-tests: $*" >&2; }
die() { log "error: $*"; exit 2; }

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# ---------------------------------------------------------------- arguments
BROKER=warren
REFERENCE=""
SUITES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --broker) [ $# -ge 2 ] || die "--broker needs a value"; BROKER="$2"; shift 2 ;;
    --broker=*) BROKER="${1#--broker=}"; shift ;;
    --reference) [ $# -ge 2 ] || die "--reference needs a value"; REFERENCE="$2"; shift 2 ;;
    --reference=*) REFERENCE="${1#--reference=}"; shift ;;
    --suite) [ $# -ge 2 ] || die "--suite needs a value"; SUITES+=("$2"); shift 2 ;;
    --suite=*) SUITES+=("${1#--suite=}"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$BROKER" in
  warren|rabbitmq|amqp://*|amqps://*) ;;
  *) die "--broker must be warren, rabbitmq or an amqp:// URI (got '$BROKER')" ;;
esac
case "$REFERENCE" in
  ""|rabbitmq|amqp://*|amqps://*) ;;
  *) die "--reference must be rabbitmq or an amqp:// URI (got '$REFERENCE')" ;;
esac
if [ "$BROKER" = rabbitmq ] && [ "$REFERENCE" = rabbitmq ]; then
  die "--broker rabbitmq --reference rabbitmq would compare RabbitMQ with itself; give one as a URI"
fi
OPT_IN_SKIPPED=()     # opt-in suites left out of the default run, one summary line each
if [ ${#SUITES[@]} -eq 0 ]; then
  for d in "$HERE"/suites/*/; do
    [ -d "$d" ] || continue
    # A suite with a file OPT_IN (its first line: why) runs only when named with --suite.
    if [ -f "$d/OPT_IN" ]; then
      OPT_IN_SKIPPED+=("$(basename "$d"): not run, opt-in ($(head -n1 "$d/OPT_IN")); run it with --suite $(basename "$d")")
      log "${OPT_IN_SKIPPED[-1]}"
      continue
    fi
    SUITES+=("$(basename "$d")")
  done
fi
[ ${#SUITES[@]} -gt 0 ] || die "no suites under $HERE/suites"
for s in "${SUITES[@]}"; do
  [ -d "$HERE/suites/$s" ] || die "no such suite: $s (looked for $HERE/suites/$s)"
done

# ---------------------------------------------------------------- temp dir and cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/warren-compat.XXXXXX")"
SUITE_PID=""           # running suite (under timeout), if any
STARTED_PIDS=()        # brokers we started (each the leader of its own process group)
STARTED_KINDS=()       # warren | rabbitmq, one per pid
BROKER_LOG=""          # log of the broker under test, if we started it
REFERENCE_LOG=""       # log of the reference broker, if we started it
RMQ_NODE=""            # at most one private RabbitMQ node per run
RMQ_PORT=""
RMQ_DIST_PORT=""
EPMD_STARTED_BY_US=0
STARTED_URL=""         # set by start_warren / start_rabbitmq
STARTED_LOG=""

RMQ_LIB=/usr/lib/rabbitmq/bin

# rmq_env_args: fills RMQ_ENV with the `env` arguments for the private node. Everything of that
# node lives under $TMP/rabbitmq; /etc/rabbitmq is not read, and HOME points there too so the
# Erlang cookie is private to this run.
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

# stop_pid PID KIND: stop one broker we started.
stop_pid() {
  local pid="$1" kind="$2"
  if [ "$kind" = rabbitmq ]; then
    env "${RMQ_ENV[@]}" timeout 60 "$RMQ_LIB/rabbitmqctl" -n "$RMQ_NODE" stop "$TMP/rabbitmq/rabbitmq.pid" \
      >>"$TMP/rabbitmq/stop.log" 2>&1 || true
  fi
  if kill -0 "$pid" 2>/dev/null; then
    # The broker was started with setsid, so it leads its own process group: end that group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "broker (pid $pid) did not stop in 10 s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  if [ "$kind" = rabbitmq ] && [ "$EPMD_STARTED_BY_US" = 1 ]; then
    # Our node started epmd; stop it again if no other node has registered with it since.
    if ! epmd -names 2>/dev/null | grep -q '^name '; then epmd -kill >/dev/null 2>&1 || true; fi
  fi
}

stop_brokers() {
  local i
  for i in "${!STARTED_PIDS[@]}"; do
    stop_pid "${STARTED_PIDS[$i]}" "${STARTED_KINDS[$i]}"
  done
  STARTED_PIDS=()
  STARTED_KINDS=()
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$SUITE_PID" ]; then
    # The suite runs in its own process group (setsid): end the group, so that a hook's children
    # (pytest, CLI tools) go too.
    kill -TERM -- "-$SUITE_PID" 2>/dev/null || kill -TERM "$SUITE_PID" 2>/dev/null || true
    wait "$SUITE_PID" 2>/dev/null || true
  fi
  stop_brokers
  if [ "${COMPAT_KEEP_TMP:-0}" = 1 ]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# ---------------------------------------------------------------- helpers
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT TIMEOUT_S PID: succeed once 127.0.0.1:PORT accepts a TCP connection; fail early
# if the broker process PID is gone.
wait_port() {
  local port="$1" timeout="$2" pid="$3" deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$port" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker exited before accepting connections on port $port"
      return 1
    fi
    sleep 0.2
  done
  log "broker did not accept connections on port $port within ${timeout} s"
  return 1
}

show_log() {
  [ -n "$1" ] && [ -f "$1" ] || return 0
  log "last lines of $1:"
  tail -n 40 "$1" >&2 || true
}

# ---------------------------------------------------------------- Python venv
# The venv holds requirements.txt plus every suite's own requirements.txt (pins of the clients an
# external suite tests, e.g. kombu), resolved together so that conflicting pins fail loudly.
setup_venv() {
  local reqs=("$HERE/requirements.txt") f stamp="$VENV/.compat-requirements.sha256" want
  for f in "$HERE"/suites/*/requirements.txt; do [ -f "$f" ] && reqs+=("$f"); done
  want="$( { cat "${reqs[@]}"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "creating Python venv at $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  local args=()
  for f in "${reqs[@]}"; do args+=(-r "$f"); done
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${args[@]}"
  echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- TLS certificates
# make_certs: a CA, a server certificate for localhost/127.0.0.1 and a client certificate it
# signs, and a "broken" client certificate from another CA, all PEM under $TMP/certs with the
# names py-amqp's TLS tests expect (t/certs/*.pem). The brokers run.sh starts listen for TLS with
# them (verify_peer, fail_if_no_peer_cert), like RabbitMQ in py-amqp's own CI.
CERTS=""
make_certs() {
  CERTS="$TMP/certs"
  mkdir -p "$CERTS"
  command -v openssl >/dev/null || die "openssl is needed to make the TLS test certificates"
  local d="$CERTS" ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  {
    openssl req -x509 "${ec[@]}" -keyout "$d/ca_key.pem" -out "$d/ca_certificate.pem" -days 2 \
      -subj "/CN=warren-compat CA"
    openssl req -x509 "${ec[@]}" -keyout "$d/other_ca_key.pem" -out "$d/other_ca_certificate.pem" \
      -days 2 -subj "/CN=warren-compat other CA"
    # leaf NAME CN EXTENSIONS [CA-PREFIX]: a key and a certificate signed by that CA.
    leaf() {
      local ca="${4:-ca}"
      openssl req "${ec[@]}" -keyout "$d/$1_key.pem" -out "$d/$1.csr" -subj "/CN=$2"
      printf '%s\n' "$3" >"$d/$1.ext"
      openssl x509 -req -in "$d/$1.csr" -CA "$d/${ca}_certificate.pem" -CAkey "$d/${ca}_key.pem" \
        -CAcreateserial -days 2 -extfile "$d/$1.ext" -out "$d/$1_certificate.pem"
    }
    leaf server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
    leaf client client "extendedKeyUsage=clientAuth"
    leaf client_broken client "extendedKeyUsage=clientAuth" other_ca
    mv "$d/client_broken_key.pem" "$d/client_key_broken.pem"
    mv "$d/client_broken_certificate.pem" "$d/client_certificate_broken.pem"
  } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "making TLS certificates failed"; }
  chmod 644 "$d"/*.pem
}

# ---------------------------------------------------------------- brokers
# Each start_* function sets STARTED_URL and STARTED_LOG (and STARTED_TLS_PORT, the AMQPS port)
# and records the pid for cleanup.
start_warren() {
  local bin
  if [ -n "${WARREN_BIN:-}" ]; then
    bin="$WARREN_BIN"
  else
    log "building warren (cargo build --release -p warren)"
    (cd "$ROOT" && cargo build --release -p warren) >&2
    bin="$TARGET_DIR/release/warren"
  fi
  [ -x "$bin" ] || die "warren binary not found or not executable: $bin"
  # Suite hooks that need a Warren of their own (amqprs) start this binary.
  WARREN_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
  export WARREN_BIN
  local amqp_port http_port tls_port pid
  amqp_port="$(free_port)"
  http_port="$(free_port)"
  while [ "$http_port" = "$amqp_port" ]; do http_port="$(free_port)"; done
  tls_port="$(free_port)"
  while [ "$tls_port" = "$amqp_port" ] || [ "$tls_port" = "$http_port" ]; do tls_port="$(free_port)"; done
  mkdir -p "$TMP/warren-data"
  STARTED_LOG="$TMP/warren.log"
  log "starting $bin on amqp 127.0.0.1:$amqp_port, amqps 127.0.0.1:$tls_port, http 127.0.0.1:$http_port"
  setsid "$bin" server \
    --amqp-listen "127.0.0.1:$amqp_port" \
    --http-listen "127.0.0.1:$http_port" \
    --amqps-listen "127.0.0.1:$tls_port" \
    --tls-cert-file "$CERTS/server_certificate.pem" --tls-key-file "$CERTS/server_key.pem" \
    --tls-ca-file "$CERTS/ca_certificate.pem" --tls-verify-peer --tls-fail-if-no-peer-cert \
    --data-dir "$TMP/warren-data" \
    </dev/null >"$STARTED_LOG" 2>&1 &
  pid=$!
  STARTED_PIDS+=("$pid")
  STARTED_KINDS+=(warren)
  if ! wait_port "$amqp_port" 30 "$pid"; then show_log "$STARTED_LOG"; exit 1; fi
  STARTED_URL="amqp://guest:guest@127.0.0.1:$amqp_port/%2F"
  STARTED_TLS_PORT="$tls_port"
  STARTED_HTTP_URL="http://127.0.0.1:$http_port"
}

start_rabbitmq() {
  if [ ! -x "$RMQ_LIB/rabbitmq-server" ]; then
    log "rabbitmq-server not installed; installing it with apt-get"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q >/dev/null 2>&1 || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      rabbitmq-server >&2
    # The package starts a system node through its service scripts where it can; this run uses
    # its own private node and leaves any other node alone.
  fi
  [ -x "$RMQ_LIB/rabbitmq-server" ] || die "no $RMQ_LIB/rabbitmq-server after install"

  RMQ_PORT="$(free_port)"
  RMQ_DIST_PORT="$(free_port)"
  while [ "$RMQ_DIST_PORT" = "$RMQ_PORT" ]; do RMQ_DIST_PORT="$(free_port)"; done
  local tls_port http_port
  tls_port="$(free_port)"
  while [ "$tls_port" = "$RMQ_PORT" ] || [ "$tls_port" = "$RMQ_DIST_PORT" ]; do tls_port="$(free_port)"; done
  http_port="$(free_port)"
  while [ "$http_port" = "$RMQ_PORT" ] || [ "$http_port" = "$RMQ_DIST_PORT" ] || [ "$http_port" = "$tls_port" ]; do
    http_port="$(free_port)"
  done
  RMQ_NODE="warren-compat-$$@localhost"
  local base="$TMP/rabbitmq" pid
  mkdir -p "$base/home" "$base/mnesia" "$base/log"
  chmod 700 "$base/home"
  # The management plugin, on a free loopback port (compared with Warren's management API).
  echo '[rabbitmq_management].' >"$base/enabled_plugins"
  : >"$base/rabbitmq-env.conf"
  cat >"$base/rabbitmq.conf" <<CONF
loopback_users.guest = true
disk_free_limit.absolute = 10MB
log.console = false
log.file.level = info
listeners.ssl.default = $tls_port
ssl_options.cacertfile = $CERTS/ca_certificate.pem
ssl_options.certfile = $CERTS/server_certificate.pem
ssl_options.keyfile = $CERTS/server_key.pem
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
management.tcp.ip = 127.0.0.1
management.tcp.port = $http_port
# Queue counts in the management API are refreshed this often (ms; RabbitMQ's default is 5000).
collect_statistics_interval = 500
CONF
  echo '[].' >"$base/advanced.config"
  if ! epmd -names >/dev/null 2>&1; then EPMD_STARTED_BY_US=1; fi
  rmq_env_args

  STARTED_LOG="$base/startup.log"
  log "starting private RabbitMQ node $RMQ_NODE on amqp 127.0.0.1:$RMQ_PORT (dist port $RMQ_DIST_PORT)"
  # A simple command in the background: bash execs env, env execs setsid, and setsid (not being a
  # group leader) calls setsid() and execs the server script in place, so $! is the server's pid
  # and the leader of its own process group.
  env "${RMQ_ENV[@]}" setsid "$RMQ_LIB/rabbitmq-server" </dev/null >"$STARTED_LOG" 2>&1 &
  pid=$!
  STARTED_PIDS+=("$pid")
  STARTED_KINDS+=(rabbitmq)
  if ! wait_port "$RMQ_PORT" 120 "$pid"; then
    show_log "$STARTED_LOG"
    show_log "$(ls "$base"/log/*.log 2>/dev/null | head -n1)"
    exit 1
  fi
  # The listener opens late in boot; make sure boot has finished all the same.
  if ! env "${RMQ_ENV[@]}" timeout 60 "$RMQ_LIB/rabbitmqctl" -n "$RMQ_NODE" await_startup --timeout 50 \
      >>"$base/await.log" 2>&1; then
    show_log "$base/await.log"
    die "RabbitMQ node $RMQ_NODE did not finish booting"
  fi
  STARTED_URL="amqp://guest:guest@127.0.0.1:$RMQ_PORT/%2F"
  STARTED_TLS_PORT="$tls_port"
  STARTED_HTTP_URL="http://127.0.0.1:$http_port"
  # rabbitmqctl for this node, for suite hooks that must set it up as their tests expect (amqprs).
  {
    echo '#!/usr/bin/env bash'
    printf 'exec env'; printf ' %q' "${RMQ_ENV[@]}"; printf ' %q -n %q "$@"\n' "$RMQ_LIB/rabbitmqctl" "$RMQ_NODE"
  } >"$base/rabbitmqctl"
  chmod +x "$base/rabbitmqctl"
}

# ---------------------------------------------------------------- main
setup_venv
make_certs

STARTED_TLS_PORT=""
STARTED_HTTP_URL=""
case "$BROKER" in
  warren) start_warren; AMQP_URL="$STARTED_URL"; BROKER_LOG="$STARTED_LOG"; COMPAT_BROKER=warren ;;
  rabbitmq)
    start_rabbitmq; AMQP_URL="$STARTED_URL"; BROKER_LOG="$STARTED_LOG"; COMPAT_BROKER=rabbitmq
    export COMPAT_RABBITMQCTL="$TMP/rabbitmq/rabbitmqctl" ;;
  *) AMQP_URL="$BROKER"; COMPAT_BROKER=uri ;;
esac
export AMQP_URL COMPAT_BROKER
log "AMQP_URL=$AMQP_URL"
# The broker under test's management API, TLS port and certificates, when run.sh started it.
if [ -n "$STARTED_HTTP_URL" ]; then export COMPAT_HTTP_URL="$STARTED_HTTP_URL"; else unset COMPAT_HTTP_URL; fi
if [ -n "$STARTED_TLS_PORT" ]; then
  export COMPAT_TLS_PORT="$STARTED_TLS_PORT" COMPAT_TLS_CERTS="$CERTS"
  log "AMQPS on 127.0.0.1:$COMPAT_TLS_PORT (certificates in $CERTS)"
else
  unset COMPAT_TLS_PORT COMPAT_TLS_CERTS
fi
case "$REFERENCE" in
  "") unset REFERENCE_URL ;;
  rabbitmq)
    start_rabbitmq; REFERENCE_URL="$STARTED_URL"; REFERENCE_LOG="$STARTED_LOG"
    export REFERENCE_HTTP_URL="$STARTED_HTTP_URL" ;;
  *) REFERENCE_URL="$REFERENCE" ;;
esac
if [ -n "$REFERENCE" ]; then
  export REFERENCE_URL
  log "REFERENCE_URL=$REFERENCE_URL"
fi

export PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$HERE/lib${PYTHONPATH:+:$PYTHONPATH}"
export COMPAT_PYTHON="$VENV/bin/python"
export COMPAT_CACHE="$CACHE"
overall=0
summaries=()
for s in "${SUITES[@]}"; do
  xml="$TMP/junit-$s.xml"
  sdir="$HERE/suites/$s"
  export COMPAT_JUNIT_XML="$xml" COMPAT_SUITE_DIR="$sdir" COMPAT_SUITE_TMP="$TMP/suite-$s"
  mkdir -p "$COMPAT_SUITE_TMP"
  # Tests that cannot run here at all; and, against Warren, its known failures (strict xfail).
  unset COMPAT_SKIP_FILE COMPAT_XFAIL_FILE
  [ ! -f "$HERE/skips/$s.txt" ] || export COMPAT_SKIP_FILE="$HERE/skips/$s.txt"
  xfail_file="$HERE/known-failures/$s.txt"
  if [ "$COMPAT_BROKER" = warren ] && [ "${COMPAT_KNOWN_FAILURES:-1}" != 0 ] && [ -f "$xfail_file" ]; then
    export COMPAT_XFAIL_FILE="$xfail_file"
  fi
  # A suite that needs longer than the default has a file TIMEOUT (seconds, first line);
  # COMPAT_SUITE_TIMEOUT, when set, applies to every suite all the same.
  suite_timeout="$SUITE_TIMEOUT"
  if [ -z "${COMPAT_SUITE_TIMEOUT:-}" ] && [ -f "$sdir/TIMEOUT" ]; then
    suite_timeout="$(head -n1 "$sdir/TIMEOUT" | tr -d '[:space:]')"
  fi
  log "running suite $s"
  # In the background (in its own process group) and waited for, so that a signal to this script
  # runs its traps at once (cleanup ends the suite, then the broker) rather than after the suite.
  if [ -f "$sdir/run-suite.sh" ]; then
    # An external suite: its hook fetches what it tests and runs pytest (see lib/suite-common.sh).
    (cd "$ROOT" && exec setsid timeout --kill-after=10 "$suite_timeout" bash "$sdir/run-suite.sh") &
  else
    (cd "$ROOT" && exec setsid timeout --kill-after=10 "$suite_timeout" \
      "$VENV/bin/python" -m pytest -q -c "$HERE/pytest.ini" --rootdir "$HERE" \
        -p no:cacheprovider -p compat_plugin --junitxml "$xml" "compat-tests/suites/$s") &
  fi
  SUITE_PID=$!
  rc=0
  wait "$SUITE_PID" || rc=$?
  SUITE_PID=""
  [ "$rc" -ne 124 ] || log "suite $s: killed after ${suite_timeout} s (COMPAT_SUITE_TIMEOUT or the suite's TIMEOUT)"
  # junit xml -> "passed failed skipped xfailed"; failed counts failures and errors, skipped
  # includes expected failures (xfailed), which are also counted on their own.
  counts="$("$VENV/bin/python" - "$xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("-1 -1 -1 -1")
    sys.exit(0)
suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
tests = failed = skipped = xfailed = 0
for ts in suites:
    tests += int(ts.get("tests", 0))
    failed += int(ts.get("failures", 0)) + int(ts.get("errors", 0))
    skipped += int(ts.get("skipped", 0))
    for sk in ts.iter("skipped"):
        if sk.get("type") == "pytest.xfail":
            xfailed += 1
print(tests - failed - skipped, failed, skipped, xfailed)
PY
)"
  read -r passed failed skipped xfailed <<<"$counts"
  if [ "$passed" = -1 ]; then
    log "suite $s produced no junit report (exit code $rc)"
    passed=0 failed=1 skipped=0 xfailed=0
  fi
  # Exit code 5 (no tests collected) is not a failure by itself; anything else non-zero is.
  if [ "$failed" -gt 0 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; }; then
    overall=1
    [ "$failed" -gt 0 ] || { log "suite $s: exited with $rc"; failed=1; }
  fi
  [ "$xfailed" = 0 ] || log "suite $s: $xfailed of the skipped are known failures on Warren ($xfail_file)"
  summaries+=("$s: $passed passed, $failed failed, $skipped skipped")
done

if [ "$overall" -ne 0 ]; then
  show_log "$BROKER_LOG"
  show_log "$REFERENCE_LOG"
fi
echo
for line in "${summaries[@]}"; do echo "$line"; done
for line in ${OPT_IN_SKIPPED[@]+"${OPT_IN_SKIPPED[@]}"}; do echo "$line"; done
exit "$overall"
