# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# aio-pika's own test suite, tests/ in the aio-pika sdist pinned in venv-requirements.txt (the
# same release as run.sh's venv), against the broker at AMQP_URL.
#
# How those tests find the broker: only through Docker. tests/conftest.py refuses to start unless
# the Docker daemon at $DOCKER_HOST (default /var/run/docker.sock) accepts a connection, and its
# session fixture `rabbitmq_container` runs the image mosquito/aiormq-rabbitmq and connects to the
# host ports Docker reports for 5672/tcp (and 5671/tcp for the TLS tests), on 127.0.0.1, as
# guest/guest on vhost "/". There is no Docker here, so DOCKER_HOST names the Unix socket of
# fake_docker.py, which answers the Docker API calls of tests/docker_client.py: the session
# "container" is the broker under test (AMQP_URL's port), and the brokers that
# tests/test_robust_recovery.py kills, restarts and `rabbitmqctl stop_app`s are brokers of their
# own that fake_docker.py starts: a Warren ($WARREN_BIN) with --broker warren, a private RabbitMQ
# node with --broker rabbitmq; with a broker given as a URI, none unless
# COMPAT_AIO_PIKA_OWN_BROKER=rabbitmq|warren says which (else those tests are skipped,
# skips/aio-pika-upstream.no-own-broker.txt). Only that configuration is set; the tests run
# unmodified from the unpacked sdist (pytest imports `aio_pika` from the sdist itself, the same
# release as the venv's).
#
# A venv of its own (compat_venv): aiomisc-pytest's pytest plugin would otherwise load into every
# suite of run.sh's venv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

version="$(compat_pin aio-pika venv-requirements.txt)"
# The sdist is aio_pika-X.tar.gz, its top dir aio_pika-X (the normalised name; pip accepts both).
src="$(compat_sdist aio_pika "$version")"
COMPAT_PYTEST_PYTHON="$(compat_venv venv-requirements.txt)"
export COMPAT_PYTEST_PYTHON

host="$(compat_url_part host)"
case "$host" in
  127.0.0.1|localhost) ;;
  *) compat_log "aio-pika's tests connect to the broker on 127.0.0.1 (a local Docker's ports); AMQP_URL's host is $host"
     exit 1 ;;
esac
if [ "$(compat_url_part user)" != guest ] || [ "$(compat_url_part password)" != guest ] \
   || [ "$(compat_url_part vhost)" != / ]; then
  compat_log "warning: aio-pika's tests always log in as guest/guest on vhost '/'; AMQP_URL's credentials and vhost are not used"
fi

# The brokers of their own for tests/test_robust_recovery.py.
own="${COMPAT_AIO_PIKA_OWN_BROKER:-}"
if [ -z "$own" ]; then
  case "$COMPAT_BROKER" in warren|rabbitmq) own="$COMPAT_BROKER" ;; *) own=none ;; esac
fi
case "$own" in
  warren) [ -x "${WARREN_BIN:-}" ] || { compat_log "COMPAT_AIO_PIKA_OWN_BROKER=warren needs WARREN_BIN"; exit 1; } ;;
  rabbitmq) [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
      || { compat_log "COMPAT_AIO_PIKA_OWN_BROKER=rabbitmq needs /usr/lib/rabbitmq/bin/rabbitmq-server"; exit 1; } ;;
  none) ;;
  *) compat_log "COMPAT_AIO_PIKA_OWN_BROKER must be warren, rabbitmq or none (got '$own')"; exit 1 ;;
esac
skips="$COMPAT_SUITE_TMP/skips.txt"
cat "${COMPAT_SKIP_FILE:-/dev/null}" >"$skips"
if [ "$own" = none ]; then
  cat "$COMPAT_SUITE_DIR/../../skips/aio-pika-upstream.no-own-broker.txt" >>"$skips"
fi
export COMPAT_SKIP_FILE="$skips"

# The Docker API stand-in, stopped (with the brokers it started) when this hook exits.
sock="$COMPAT_SUITE_TMP/docker.sock"
"$COMPAT_PYTEST_PYTHON" "$COMPAT_SUITE_DIR/fake_docker.py" --socket "$sock" --amqp-url "$AMQP_URL" \
  --own-broker "$own" --workdir "$COMPAT_SUITE_TMP/containers" --tls-port "${COMPAT_TLS_PORT:-0}" \
  2>"$COMPAT_SUITE_TMP/fake-docker.log" &
docker_pid=$!
stop_docker() {
  kill -TERM "$docker_pid" 2>/dev/null || true
  wait "$docker_pid" 2>/dev/null || true
}
trap stop_docker EXIT
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { compat_log "fake_docker.py did not start:"; cat "$COMPAT_SUITE_TMP/fake-docker.log" >&2; exit 1; }
export DOCKER_HOST="unix://$sock"
compat_log "aio-pika $version tests from $src against 127.0.0.1:$(compat_url_part port) (own brokers: $own; Docker API log: $COMPAT_SUITE_TMP/fake-docker.log)"

cd "$src"
# run.sh passes no arguments; by hand, arguments replace `tests` (e.g. a test's node id, or -k).
[ $# -gt 0 ] || set -- tests
compat_pytest -c "$COMPAT_SUITE_DIR/pytest.ini" --rootdir "$src" "$@"
