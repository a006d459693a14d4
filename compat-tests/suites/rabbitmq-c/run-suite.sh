# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# rabbitmq-c's command-line tools (Debian's amqp-tools) against the broker at AMQP_URL. The tests
# are this directory's test_*.py (pytest calling the tools through subprocess); this hook only
# makes sure the tools are installed first (apt-get; CI runs as root), then runs pytest as run.sh
# does for an ordinary suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

tools=(amqp-declare-queue amqp-publish amqp-consume amqp-get amqp-delete-queue)
missing=0
for t in "${tools[@]}"; do command -v "$t" >/dev/null || missing=1; done
if [ "$missing" = 1 ]; then
  compat_log "rabbitmq-c's CLI tools are missing; installing Debian's amqp-tools with apt-get"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null 2>&1 || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends amqp-tools >&2 \
    || compat_log "apt-get install amqp-tools failed"
fi
compat_log "amqp-tools $(dpkg-query -W -f='${Version}' amqp-tools 2>/dev/null || echo '(not from dpkg)')"

compat_dir="$(cd "$COMPAT_SUITE_DIR/../.." && pwd)"
cd "$compat_dir/.."
compat_pytest -q -c "$compat_dir/pytest.ini" --rootdir "$compat_dir" "$COMPAT_SUITE_DIR"
