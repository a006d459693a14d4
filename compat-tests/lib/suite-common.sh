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

# compat_pin PACKAGE [FILE]: the version pinned for PACKAGE (`PACKAGE==X`) in FILE (default: the
# suite's requirements.txt; a file name is relative to the suite's dir).
compat_pin() {
  local pkg="$1" file="${2:-requirements.txt}" v
  case "$file" in /*) ;; *) file="$COMPAT_SUITE_DIR/$file" ;; esac
  v="$(sed -n "s/^[[:space:]]*$pkg[[:space:]]*==[[:space:]]*\([^[:space:];#]*\).*/\1/p" \
        "$file" | head -n1)"
  [ -n "$v" ] || { compat_log "no '$pkg==VERSION' pin in $file"; return 1; }
  echo "$v"
}

# compat_venv FILE: a Python venv of the suite's own, for a client whose pins cannot share run.sh's
# venv (e.g. aiormq 6.9 pins pamqp 3, where aio-pika 10 needs aiormq 7 and pamqp 4). FILE (relative
# to the suite's dir) lists the pins; it must not be named requirements.txt, which run.sh installs
# into its venv. The venv is target/compat-venv-NAME, rebuilt only when FILE or the Python version
# changes (a stamp as run.sh's). Prints the venv's python.
compat_venv() {
  local file="$COMPAT_SUITE_DIR/$1" name venv stamp want
  name="$(basename "$COMPAT_SUITE_DIR")"
  venv="$(dirname "$COMPAT_CACHE")/compat-venv-$name"
  stamp="$venv/.compat-requirements.sha256"
  [ -f "$file" ] || { compat_log "no $file"; return 1; }
  want="$( { cat "$file"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    compat_log "creating Python venv at $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$file" >&2 \
      || { compat_log "pip install -r $file failed"; return 1; }
    echo "$want" >"$stamp"
  fi
  echo "$venv/bin/python"
}

# compat_sdist PACKAGE VERSION: download PACKAGE's sdist from PyPI (pip download --no-binary) into
# $COMPAT_CACHE/downloads once, unpack it once under $COMPAT_CACHE/sdists, print the unpacked dir.
# `--no-binary PACKAGE`, not `:all:`: pip prepares the sdist's metadata, and its build backend may
# come as a wheel (aiormq's uv_build would otherwise be compiled from source, in minutes).
compat_sdist() {
  local pkg="$1" ver="$2" dl="$COMPAT_CACHE/downloads" dest="$COMPAT_CACHE/sdists"
  local dir="$dest/$pkg-$ver" archive
  if [ -f "$dir/.compat-unpacked" ]; then echo "$dir"; return 0; fi
  mkdir -p "$dl" "$dest"
  archive="$(ls "$dl/$pkg-$ver".tar.gz 2>/dev/null | head -n1 || true)"
  if [ -z "$archive" ]; then
    compat_log "downloading the $pkg==$ver sdist"
    "$COMPAT_PYTHON" -m pip download -q --disable-pip-version-check --no-binary "$pkg" --no-deps \
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
# cache dir written into the sdist), from run.sh's venv or, if set, COMPAT_PYTEST_PYTHON's
# (a suite's own venv, from compat_venv).
compat_pytest() {
  "${COMPAT_PYTEST_PYTHON:-$COMPAT_PYTHON}" -m pytest -p no:cacheprovider -p compat_plugin --junitxml "$COMPAT_JUNIT_XML" "$@"
}
