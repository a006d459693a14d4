# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# the tests shipped in the `amqprs` crate (a Rust client with its own codec), built from the
# published .crate of the version in Warren's Cargo.lock (its checksum checked), run unmodified.
#
# How those tests find the broker: they connect to localhost:5672 as user/bitnami on vhost "/",
# and one logs in with RABBIT-CR-DEMO. That is amqprs's own test broker (its docker-compose.yml:
# RABBITMQ_USERNAME=user, RABBITMQ_PASSWORD=bitnami; rabbitmq_conf/custom.conf enables
# RABBIT-CR-DEMO). Both are hard-coded, so the tests run in a private network namespace
# (`unshare -n`) where localhost:5672 is, for
#   --broker warren    a Warren of the build under test, started here with that user and mechanism;
#   --broker rabbitmq  run.sh's private node, given the user and the mechanism here with rabbitmqctl
#                      (both undone at the end), reached through a relay over a Unix socket;
#   --broker URI       that broker through the same relay: it must have that user and mechanism.
# The crate's lib tests count too: most of its broker tests live in src/. Doc tests do not run
# (they need no broker). Tests behind the `tls` feature are not built: they need amqprs's
# certificates, which the crate does not ship.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

ROOT="$(pwd)"
# The [[package]] entry for amqprs in Cargo.lock: its version and checksum.
read -r version checksum < <(awk '
  /^\[\[package\]\]/ { name = ""; version = "" }
  /^name = / { gsub(/"/, "", $3); name = $3 }
  /^version = / { gsub(/"/, "", $3); version = $3 }
  /^checksum = / && name == "amqprs" { gsub(/"/, "", $3); print version, $3; exit }
' "$ROOT/Cargo.lock")
[ -n "${checksum:-}" ] || { compat_log "no amqprs package with a checksum in $ROOT/Cargo.lock"; exit 1; }

# ---------------------------------------------------------------- the crate
crate_file="amqprs-$version.crate"
dl="$COMPAT_CACHE/downloads"
src="$COMPAT_CACHE/crates/amqprs-$version"
mkdir -p "$dl" "$COMPAT_CACHE/crates"
if [ ! -f "$src/.compat-unpacked" ]; then
  if [ ! -f "$dl/$crate_file" ]; then
    cached="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate_file" 2>/dev/null | head -n1 || true)"
    if [ -n "$cached" ]; then
      cp "$cached" "$dl/$crate_file.part"
    else
      compat_log "downloading $crate_file from crates.io"
      "$COMPAT_PYTHON" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
        "https://static.crates.io/crates/amqprs/$crate_file" "$dl/$crate_file.part"
    fi
    echo "$checksum  $dl/$crate_file.part" | sha256sum -c --quiet - \
      || { compat_log "$crate_file does not match Cargo.lock's checksum"; exit 1; }
    mv "$dl/$crate_file.part" "$dl/$crate_file"
  fi
  rm -rf "$src" "$src.part"
  mkdir -p "$src.part"
  tar -xzf "$dl/$crate_file" -C "$src.part" --strip-components=1
  touch "$src.part/.compat-unpacked"
  mv "$src.part" "$src"
fi

# ---------------------------------------------------------------- build (outside the namespace)
export CARGO_TARGET_DIR="$COMPAT_CACHE/amqprs-target"
# Built once per clean checkout (CI's case), and only run: no debug info, no incremental state.
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
compat_log "building amqprs $version's tests (cargo test --no-run, its own Cargo.lock)"
binaries=()
while IFS= read -r line; do binaries+=("$line"); done < <(
  cd "$src" && cargo test --locked --lib --tests --no-run --message-format=json 2>"$COMPAT_SUITE_TMP/build.log" \
    | "$COMPAT_PYTHON" -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"]["test"]:
        target = msg["target"]
        name = "lib" if "lib" in target["kind"] else target["name"]
        print(name + "=" + msg["executable"])
')
if [ ${#binaries[@]} -eq 0 ]; then
  tail -n 40 "$COMPAT_SUITE_TMP/build.log" >&2
  compat_log "building amqprs's tests failed"
  exit 1
fi

# ---------------------------------------------------------------- the broker, as the tests expect it
command -v unshare >/dev/null || { compat_log "unshare (util-linux) is required"; exit 1; }
if ! command -v ip >/dev/null; then
  compat_log "installing iproute2 (ip) with apt-get"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q >/dev/null 2>&1 || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iproute2 >&2
fi
relay_pid=""
rabbitmq_restore=""    # Erlang expression that puts the node's auth_mechanisms back
cleanup_hook() {
  [ -z "$relay_pid" ] || kill "$relay_pid" 2>/dev/null || true
  if [ -n "$rabbitmq_restore" ]; then
    # Leave run.sh's node as it was, for the suites after this one.
    "$COMPAT_RABBITMQCTL" eval "$rabbitmq_restore" >/dev/null 2>&1 || true
    "$COMPAT_RABBITMQCTL" delete_user user >/dev/null 2>&1 || true
  fi
}
trap cleanup_hook EXIT
inner_mode=relay
socket="$COMPAT_SUITE_TMP/broker.sock"
case "$COMPAT_BROKER" in
  warren)
    inner_mode=warren
    [ -x "${WARREN_BIN:-}" ] || { compat_log "WARREN_BIN is not set by run.sh"; exit 1; } ;;
  rabbitmq)
    # The user, and RABBIT-CR-DEMO among the mechanisms: RabbitMQ reads auth_mechanisms for
    # each new connection, so setting it at run time is enough.
    [ -n "${COMPAT_RABBITMQCTL:-}" ] || { compat_log "COMPAT_RABBITMQCTL is not set by run.sh"; exit 1; }
    log="$COMPAT_SUITE_TMP/rabbitmqctl.log"
    saved="$("$COMPAT_RABBITMQCTL" eval 'application:get_env(rabbit, auth_mechanisms).' 2>>"$log")"
    case "$saved" in "{ok,"*) ;; *) compat_log "cannot read the node's auth_mechanisms: $saved"; exit 1 ;; esac
    rabbitmq_restore="{ok, M} = $saved, application:set_env(rabbit, auth_mechanisms, M)."
    "$COMPAT_RABBITMQCTL" eval \
      "application:set_env(rabbit, auth_mechanisms, ['PLAIN', 'AMQPLAIN', 'RABBIT-CR-DEMO'])." >>"$log" 2>&1 \
      || { cat "$log" >&2; exit 1; }
    "$COMPAT_RABBITMQCTL" add_user user bitnami >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    "$COMPAT_RABBITMQCTL" set_permissions -p / user '.*' '.*' '.*' >>"$log" 2>&1 || { cat "$log" >&2; exit 1; } ;;
  *)
    compat_log "the broker at $AMQP_URL must have the user user/bitnami and offer RABBIT-CR-DEMO" ;;
esac
if [ "$inner_mode" = relay ]; then
  "$COMPAT_PYTHON" "$ROOT/compat-tests/lib/tcp_relay.py" unix-to-tcp "$socket" \
    "$(compat_url_part host)" "$(compat_url_part port)" &
  relay_pid=$!
fi

compat_log "amqprs $version tests (${#binaries[@]} binaries) in a private network namespace against $COMPAT_BROKER"
skip_args=()
[ -z "${COMPAT_SKIP_FILE:-}" ] || skip_args+=(--skip-file "$COMPAT_SKIP_FILE")
[ -z "${COMPAT_XFAIL_FILE:-}" ] || skip_args+=(--xfail-file "$COMPAT_XFAIL_FILE")
export INNER_MODE="$inner_mode" SOCKET="$socket" ROOT
cd "$src"
unshare --net bash -s -- "${skip_args[@]}" "${binaries[@]}" <<'INNER'
set -euo pipefail
ip link set lo up
broker_pid=""
trap '[ -z "$broker_pid" ] || kill "$broker_pid" 2>/dev/null || true' EXIT
if [ "$INNER_MODE" = warren ]; then
  "$WARREN_BIN" server --amqp-listen 127.0.0.1:5672 --http-listen 127.0.0.1:15672 \
    --data-dir "$COMPAT_SUITE_TMP/warren-data" --default-user user --default-pass bitnami \
    --auth-mechanisms PLAIN,AMQPLAIN,RABBIT-CR-DEMO >"$COMPAT_SUITE_TMP/warren.log" 2>&1 &
else
  for _ in $(seq 1 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
  "$COMPAT_PYTHON" "$ROOT/compat-tests/lib/tcp_relay.py" tcp-to-unix 5672 "$SOCKET" &
fi
broker_pid=$!
for _ in $(seq 1 150); do
  "$COMPAT_PYTHON" -c 'import socket; socket.create_connection(("127.0.0.1", 5672), timeout=1).close()' 2>/dev/null && break
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "the broker in the namespace exited" >&2
    tail -n 20 "$COMPAT_SUITE_TMP/warren.log" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.2
done
"$COMPAT_PYTHON" "$ROOT/compat-tests/lib/libtest_suite.py" --junit "$COMPAT_JUNIT_XML" "$@"
INNER
