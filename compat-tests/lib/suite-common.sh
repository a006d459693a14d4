# Helpers for external suites' hooks (compat-tests/suites/NAME/run-suite.sh); sourced, not run.
#
# run.sh runs a hook as `bash run-suite.sh` from the repo root, with:
#   AMQP_URL           the broker under test (amqp://user:pass@host:port/vhost)
#   REFERENCE_URL      the reference broker, if run.sh was given --reference (else unset)
#   COMPAT_BROKER      warren | rabbitmq | uri      (how --broker was given)
#   COMPAT_PYTHON      the venv's python (pytest and the pinned clients are installed in it)
#   COMPAT_JUNIT_XML   where the hook must leave its junit xml report
#   COMPAT_SUITE_DIR   compat-tests/suites/NAME (absolute)
#   COMPAT_SUITE_TMP   a scratch dir for this suite and run (removed with run.sh's temp dir)
#   COMPAT_CACHE       target/compat-cache: downloads and unpacked sdists, kept between runs
#   COMPAT_SKIP_FILE / COMPAT_XFAIL_FILE   lists applied by compat_plugin (see lib/compat_plugin.py)
#   WARREN_BIN         with COMPAT_BROKER=warren: the broker's binary (absolute), for a hook that
#                      needs a Warren of its own
#   COMPAT_RABBITMQCTL with COMPAT_BROKER=rabbitmq: rabbitmqctl bound to run.sh's private node
#   COMPAT_TLS_PORT, COMPAT_TLS_CERTS   when run.sh started the broker: its AMQPS port on 127.0.0.1
#                      and the dir of PEM certificates (ca_certificate, client_certificate,
#                      client_key, client_*_broken from an untrusted CA)
#   PYTHONPATH         includes compat-tests/lib, so `-p compat_plugin` loads
# The hook's exit code is read like pytest's (0 ok, 5 no tests collected, else failure); the
# suite's counts come from the junit xml.

: "${COMPAT_PYTHON:?run this through compat-tests/run.sh}" "${COMPAT_CACHE:?run this through compat-tests/run.sh}" "${COMPAT_SUITE_DIR:?}" "${COMPAT_JUNIT_XML:?}"

compat_log() { echo "compat-tests[$(basename "$COMPAT_SUITE_DIR")]: $*" >&2; }

# compat_pin PACKAGE: the version pinned for PACKAGE (`PACKAGE==X`) in the suite's requirements.txt.
compat_pin() {
  local pkg="$1" v
  v="$(sed -n "s/^[[:space:]]*$pkg[[:space:]]*==[[:space:]]*\([^[:space:];#]*\).*/\1/p" \
        "$COMPAT_SUITE_DIR/requirements.txt" | head -n1)"
  [ -n "$v" ] || { compat_log "no '$pkg==VERSION' pin in $COMPAT_SUITE_DIR/requirements.txt"; return 1; }
  echo "$v"
}

# compat_sdist PACKAGE VERSION: download PACKAGE's sdist from PyPI (pip download --no-binary) into
# $COMPAT_CACHE/downloads once, unpack it once under $COMPAT_CACHE/sdists, print the unpacked dir.
compat_sdist() {
  local pkg="$1" ver="$2" dl="$COMPAT_CACHE/downloads" dest="$COMPAT_CACHE/sdists"
  local dir="$dest/$pkg-$ver" archive
  if [ -f "$dir/.compat-unpacked" ]; then echo "$dir"; return 0; fi
  mkdir -p "$dl" "$dest"
  archive="$(ls "$dl/$pkg-$ver".tar.gz 2>/dev/null | head -n1 || true)"
  if [ -z "$archive" ]; then
    compat_log "downloading the $pkg==$ver sdist"
    "$COMPAT_PYTHON" -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
      "$pkg==$ver" -d "$dl" >&2 || { compat_log "pip download of the $pkg==$ver sdist failed"; return 1; }
    archive="$(ls "$dl/$pkg-$ver".tar.gz 2>/dev/null | head -n1 || true)"
    [ -n "$archive" ] || { compat_log "no $pkg-$ver.tar.gz in $dl after pip download"; return 1; }
  fi
  local tmp
  tmp="$(mktemp -d "$dest/.unpack.XXXXXX")"
  tar -xzf "$archive" -C "$tmp" || { rm -rf "$tmp"; compat_log "cannot unpack $archive"; return 1; }
  [ -d "$tmp/$pkg-$ver" ] || { rm -rf "$tmp"; compat_log "$archive has no top dir $pkg-$ver"; return 1; }
  touch "$tmp/$pkg-$ver/.compat-unpacked"
  rm -rf "$dir"
  mv "$tmp/$pkg-$ver" "$dir"
  rm -rf "$tmp"
  echo "$dir"
}

# compat_url_part FIELD: host | port | user | password | vhost of $AMQP_URL (decoded).
compat_url_part() {
  "$COMPAT_PYTHON" - "$AMQP_URL" "$1" <<'PY'
import sys
from urllib.parse import urlsplit, unquote
u = urlsplit(sys.argv[1])
field = sys.argv[2]
vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
print({"host": u.hostname or "localhost", "port": u.port or 5672,
       "user": unquote(u.username or "guest"), "password": unquote(u.password or "guest"),
       "vhost": vhost}[field])
PY
}

# compat_pytest ARGS...: pytest with the flags every suite gets (junit xml, the compat plugin, no
# cache dir written into the sdist).
compat_pytest() {
  "$COMPAT_PYTHON" -m pytest -p no:cacheprovider -p compat_plugin --junitxml "$COMPAT_JUNIT_XML" "$@"
}
