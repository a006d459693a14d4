#!/usr/bin/env bash
# Fault tests: a three-node Warren cluster under faults (crash, pause, partitions, slow node,
# slow link, disk full), publishers with confirms and consumers with manual acks through every
# node, then heal, drain, and check that no confirmed message was lost (Jepsen's total-queue).
#
#   docker/faults.sh [--faults N] [--duration S] [--queue-type quorum|classic]
#                    [--backend docker|netns] [--kinds crash,pause,...] [--out DIR] [...]
#
# --backend docker (the default) builds the image (docker/build.sh; WARREN_BIN skips cargo) and
# runs the nodes as containers; --backend netns runs three warren processes in network
# namespaces (no Docker; what CI runs: scripts/test.sh). Both need root. `docker/faults.py --help`
# lists every option. The report (report.txt, throughput.png, history.json, the nodes' logs) goes
# to --out (default target/faults/<time>-<queue type>/). Exit status 0 iff the run was valid:
# nothing confirmed lost, nothing unexpected, duplicates marked redelivered, per-channel order
# kept, the queues drained and the cluster serving again after the heal.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

backend=docker
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --backend) j=$((i + 1)); backend="${!j}" ;;
    --backend=*) backend="${!i#--backend=}" ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "faults.sh needs root (network namespaces, iptables, tmpfs)" >&2; exit 2; }

# pika pinned as the compatibility suites pin it; matplotlib (the plot) only for Docker runs, so
# the CI run installs nothing more than pika.
venv="$ROOT/target/faults-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import pika' 2>/dev/null ||
  "$venv/bin/pip" install -q --disable-pip-version-check "$(grep '^pika==' "$ROOT/compat-tests/requirements.txt")"
if [ "$backend" = docker ]; then
  "$venv/bin/python" -c 'import matplotlib' 2>/dev/null ||
    "$venv/bin/pip" install -q --disable-pip-version-check "$(grep '^matplotlib==' "$HERE/faults-requirements.txt")"
fi

extra=()
case "$backend" in
  docker)
    tag="warren:faults-$$"
    "$HERE/build.sh" "$tag" >/dev/null
    extra+=(--image "$tag" --remove-image)
    ;;
  netns)
    bin="${WARREN_BIN:-}"
    if [ -z "$bin" ]; then
      cargo build --release -p warren >&2
      bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/warren"
    fi
    extra+=(--warren-bin "$bin")
    ;;
esac

# exec: a signal (timeout, ^C) reaches the runner itself, which cleans up what it made.
exec "$venv/bin/python" "$HERE/faults.py" "${extra[@]}" "$@"
