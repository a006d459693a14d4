# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# py-amqp's own integration tests, t/integration in the `amqp` sdist pinned in requirements.txt,
# against the broker at AMQP_URL.
#
# How those tests find the broker: t/integration/test_rmq.py connects to
# $RABBITMQ_HOST:$RABBITMQ_5672_TCP (default localhost:5672) as guest/guest on vhost "/", and for
# its TLS variants to $RABBITMQ_5671_TCP with certificates under t/certs (not in the sdist).
# t/integration/test_integration.py talks to a mocked transport and needs no broker. Only that
# configuration is set here; the tests run unmodified from the unpacked sdist. The certificates are
# the ones run.sh made for the brokers it starts (COMPAT_TLS_CERTS), copied to t/certs under the
# names the tests use; the "broken" client certificate is signed by a CA the broker does not trust.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

version="$(compat_pin amqp)"
src="$(compat_sdist amqp "$version")"

export RABBITMQ_HOST="$(compat_url_part host)"
export RABBITMQ_5672_TCP="$(compat_url_part port)"
if [ "$(compat_url_part user)" != guest ] || [ "$(compat_url_part password)" != guest ] \
   || [ "$(compat_url_part vhost)" != / ]; then
  compat_log "warning: py-amqp's tests always log in as guest/guest on vhost '/'; AMQP_URL's credentials and vhost are not used"
fi
if [ -n "${COMPAT_TLS_PORT:-}" ]; then
  export RABBITMQ_5671_TCP="$COMPAT_TLS_PORT"
  mkdir -p "$src/t/certs"
  for f in ca_certificate client_certificate client_key client_certificate_broken client_key_broken; do
    cp "$COMPAT_TLS_CERTS/$f.pem" "$src/t/certs/$f.pem"
  done
  compat_log "TLS tests against 127.0.0.1:$RABBITMQ_5671_TCP"
else
  # No TLS listener known (a broker given as a URI): its TLS tests are skipped, with the reason.
  cat "$COMPAT_SKIP_FILE" "$(dirname "$COMPAT_SKIP_FILE")/py-amqp.no-tls.txt" >"$COMPAT_SUITE_TMP/skips.txt"
  export COMPAT_SKIP_FILE="$COMPAT_SUITE_TMP/skips.txt"
fi
compat_log "py-amqp $version tests from $src against $RABBITMQ_HOST:$RABBITMQ_5672_TCP"

cd "$src"
compat_pytest -c "$COMPAT_SUITE_DIR/pytest.ini" --rootdir "$src" t/integration
