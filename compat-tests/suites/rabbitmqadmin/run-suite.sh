# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# rabbitmqadmin, RabbitMQ's command-line tool for its management HTTP API (one Python file,
# deps/rabbitmq_management/bin/rabbitmqadmin in rabbitmq-server), against the broker's HTTP
# listener (COMPAT_HTTP_URL). The tests are this directory's test_*.py, which run the tool through
# subprocess; this hook fetches the tool first.
#
# The tool comes from GitHub at a pinned tag, its sha256 checked, cached under
# target/compat-cache/downloads (fetched once). COMPAT_RABBITMQADMIN=PATH uses a copy of your own
# instead (e.g. where GitHub cannot be reached; the one in rabbitmq-server's repo at that tag has
# the same sha256 and is accepted without notice, any other is used with a warning).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

RABBITMQADMIN_TAG="v3.10.8"
RABBITMQADMIN_SHA256="2f8aa83733c9f47376e5f452d796eae2ea4c9e6fa62acd869350ad78c7ee91a5"
url="https://raw.githubusercontent.com/rabbitmq/rabbitmq-server/$RABBITMQADMIN_TAG/deps/rabbitmq_management/bin/rabbitmqadmin"
cached="$COMPAT_CACHE/downloads/rabbitmqadmin-$RABBITMQADMIN_TAG"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -n "${COMPAT_RABBITMQADMIN:-}" ]; then
  tool="$COMPAT_RABBITMQADMIN"
  [ -f "$tool" ] || { compat_log "COMPAT_RABBITMQADMIN=$tool: no such file"; exit 1; }
  [ "$(sha_of "$tool")" = "$RABBITMQADMIN_SHA256" ] \
    || compat_log "warning: $tool is not rabbitmqadmin $RABBITMQADMIN_TAG (sha256 differs); using it anyway"
else
  if [ ! -f "$cached" ] || [ "$(sha_of "$cached")" != "$RABBITMQADMIN_SHA256" ]; then
    compat_log "downloading rabbitmqadmin $RABBITMQADMIN_TAG from GitHub"
    mkdir -p "$(dirname "$cached")"
    tmp="$(mktemp "$cached.XXXXXX")"
    if ! curl -fsSL --max-time 60 -o "$tmp" "$url"; then
      rm -f "$tmp"
      compat_log "cannot download $url (set COMPAT_RABBITMQADMIN to a local copy)"
      exit 1
    fi
    if [ "$(sha_of "$tmp")" != "$RABBITMQADMIN_SHA256" ]; then
      rm -f "$tmp"
      compat_log "$url: sha256 is not the pinned $RABBITMQADMIN_SHA256"
      exit 1
    fi
    mv "$tmp" "$cached"
  fi
  tool="$cached"
fi
export RABBITMQADMIN="$tool"

compat_dir="$(cd "$COMPAT_SUITE_DIR/../.." && pwd)"
cd "$compat_dir/.."
compat_pytest -q -c "$compat_dir/pytest.ini" --rootdir "$compat_dir" "$COMPAT_SUITE_DIR"
