# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# Warren's management over AMQP (src/management.rs), driven by pika as the README shows it: a
# request published to `amq.warren.management` with reply_to and correlation_id, answered with
# the management API's status and JSON. Warren's own feature (RabbitMQ has none), so the suite
# is skipped against any other broker.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

compat_dir="$(cd "$COMPAT_SUITE_DIR/../.." && pwd)"
cd "$compat_dir/.."
compat_pytest -q -c "$compat_dir/pytest.ini" --rootdir "$compat_dir" "$COMPAT_SUITE_DIR"
