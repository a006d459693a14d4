# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# rabbitmqadmin, RabbitMQ's command-line tool for its management HTTP API (one Python file,
# deps/rabbitmq_management/bin/rabbitmqadmin in rabbitmq-server), against the broker's HTTP
# listener (COMPAT_HTTP_URL). The tests are this directory's test_*.py, which run the tool through
# subprocess; this hook fetches the tool first.
#
# The tool comes from Debian's rabbitmq-server package at a pinned version (the copy its
# management plugin serves at /cli/rabbitmqadmin), fetched with `apt-get download` (nothing is
# installed) and unpacked once, its sha256 checked, cached under target/compat-cache/downloads.
# (Debian's package registry is reachable where this runs; GitHub may not be.)
# COMPAT_RABBITMQADMIN=PATH uses a copy of your own instead (any other copy than the pinned one is
# used with a warning).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

RABBITMQ_DEB_VERSION="3.10.8-1.1+deb12u1"
RABBITMQADMIN_SHA256="82c6f51ef1e665d4c434bca638e26638512a6b6dac6d2159a3b1f2bf4fda4906"
IN_PACKAGE="usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/plugins/rabbitmq_management-3.10.8/priv/www/cli/rabbitmqadmin"
cached="$COMPAT_CACHE/downloads/rabbitmqadmin-$RABBITMQ_DEB_VERSION"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -n "${COMPAT_RABBITMQADMIN:-}" ]; then
  tool="$COMPAT_RABBITMQADMIN"
  [ -f "$tool" ] || { compat_log "COMPAT_RABBITMQADMIN=$tool: no such file"; exit 1; }
  [ "$(sha_of "$tool")" = "$RABBITMQADMIN_SHA256" ] \
    || compat_log "warning: $tool is not rabbitmqadmin of rabbitmq-server $RABBITMQ_DEB_VERSION (sha256 differs); using it anyway"
else
  if [ ! -f "$cached" ] || [ "$(sha_of "$cached")" != "$RABBITMQADMIN_SHA256" ]; then
    compat_log "fetching rabbitmqadmin from Debian's rabbitmq-server $RABBITMQ_DEB_VERSION"
    mkdir -p "$(dirname "$cached")"
    work="$(mktemp -d "$cached.XXXXXX")"
    fetch() { (cd "$work" && apt-get download -q "rabbitmq-server=$RABBITMQ_DEB_VERSION" >/dev/null 2>&1); }
    if ! fetch; then
      # A fresh machine may not have the package lists yet.
      { [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 && fetch; } || {
        rm -rf "$work"
        compat_log "cannot download rabbitmq-server $RABBITMQ_DEB_VERSION with apt-get (set COMPAT_RABBITMQADMIN to a local copy)"
        exit 1
      }
    fi
    dpkg-deb -x "$work"/rabbitmq-server_*.deb "$work/x"
    if [ "$(sha_of "$work/x/$IN_PACKAGE")" != "$RABBITMQADMIN_SHA256" ]; then
      rm -rf "$work"
      compat_log "rabbitmqadmin of rabbitmq-server $RABBITMQ_DEB_VERSION: sha256 is not the pinned $RABBITMQADMIN_SHA256"
      exit 1
    fi
    mv "$work/x/$IN_PACKAGE" "$cached"
    rm -rf "$work"
  fi
  tool="$cached"
fi
export RABBITMQADMIN="$tool"

compat_dir="$(cd "$COMPAT_SUITE_DIR/../.." && pwd)"
cd "$compat_dir/.."
compat_pytest -q -c "$compat_dir/pytest.ini" --rootdir "$compat_dir" "$COMPAT_SUITE_DIR"
