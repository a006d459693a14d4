# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# aiormq's own test suite, tests/ in the aiormq sdist pinned in venv-requirements.txt, against the
# broker at AMQP_URL.
#
# How those tests find the broker: tests/conftest.py reads AMQP_URL (else it starts upstream's
# docker image) and takes only its host and port from it; it always logs in as guest/guest on
# vhost "/" and, for its TLS variants, connects to port 5671 of that host. Only that configuration
# is set here; the tests run unmodified from the unpacked sdist (pytest imports `aiormq` from the
# sdist itself, the same release the venv has). They need a venv of their own: aiormq 6.9 pins
# pamqp 3.3.0 and its tests need pytest<9 (aiomisc-pytest), where run.sh's venv has aio-pika 10
# (aiormq 7, pamqp 4) and pytest 9.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

version="$(compat_pin aiormq venv-requirements.txt)"
src="$(compat_sdist aiormq "$version")"
COMPAT_PYTEST_PYTHON="$(compat_venv venv-requirements.txt)"
export COMPAT_PYTEST_PYTHON

if [ "$(compat_url_part user)" != guest ] || [ "$(compat_url_part password)" != guest ] \
   || [ "$(compat_url_part vhost)" != / ]; then
  compat_log "warning: aiormq's tests always log in as guest/guest on vhost '/'; AMQP_URL's credentials and vhost are not used"
fi
export AMQP_URL
compat_log "aiormq $version tests from $src against $(compat_url_part host):$(compat_url_part port)"

cd "$src"
compat_pytest -c "$COMPAT_SUITE_DIR/pytest.ini" --rootdir "$src" tests
