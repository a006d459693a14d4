# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# kombu's own integration tests for its py-amqp transport (pyamqp://),
# t/integration/test_py_amqp.py in the kombu sdist pinned in requirements.txt, against the broker
# at AMQP_URL. The sdist's other t/integration files test other transports (redis, mongodb, sqs,
# kafka, pgmq) and are not run.
#
# How those tests find the broker: pyamqp://$RABBITMQ_HOST:$RABBITMQ_5672_TCP (default
# localhost:5672), i.e. kombu's defaults guest/guest on vhost "/". A few use
# pyamqp://localhost:12345 on purpose, as a port where nothing listens (failover and retry tests).
# Only that configuration is set here; the tests run unmodified from the unpacked sdist.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

version="$(compat_pin kombu)"
src="$(compat_sdist kombu "$version")"

export RABBITMQ_HOST="$(compat_url_part host)"
export RABBITMQ_5672_TCP="$(compat_url_part port)"
if [ "$(compat_url_part user)" != guest ] || [ "$(compat_url_part password)" != guest ] \
   || [ "$(compat_url_part vhost)" != / ]; then
  compat_log "warning: kombu's tests always log in as guest/guest on vhost '/'; AMQP_URL's credentials and vhost are not used"
fi
compat_log "kombu $version tests (py-amqp transport) from $src against $RABBITMQ_HOST:$RABBITMQ_5672_TCP"

cd "$src"
compat_pytest -c "$COMPAT_SUITE_DIR/pytest.ini" --rootdir "$src" t/integration/test_py_amqp.py
