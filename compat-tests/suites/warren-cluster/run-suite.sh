# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# pika, an independent client, through a three-node Warren cluster that the suite starts itself
# (conftest.py) from run.sh's binary: a queue homed on one node, published to and consumed from
# the others. Needs a Warren binary, so the suite is skipped against any other broker.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

compat_dir="$(cd "$COMPAT_SUITE_DIR/../.." && pwd)"
cd "$compat_dir/.."
compat_pytest -q -c "$compat_dir/pytest.ini" --rootdir "$compat_dir" "$COMPAT_SUITE_DIR"
