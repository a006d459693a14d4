#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs formatting and lint
# checks, the Rust tests (unit, property and integration) and the client-compatibility suites
# against a live Warren.
#   scripts/test.sh            everything CI runs
#   scripts/test.sh --no-lint  skip fmt/clippy
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

lint=1
for arg in "$@"; do
  case "$arg" in
    --no-lint) lint=0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

need_apt=()
command -v cargo >/dev/null || { echo "cargo is required (install Rust with rustup)" >&2; exit 2; }
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# jemalloc (the broker's allocator) is built from C with make.
command -v make >/dev/null || need_apt+=(make)
if [ "$(id -u)" = 0 ]; then # the fault test's namespaces and partitions
  command -v ip >/dev/null || need_apt+=(iproute2)
  command -v iptables >/dev/null || need_apt+=(iptables)
  # The web UI's browser tests (compat-tests/suites/web-ui; skipped where these are missing).
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

if [ "$lint" = 1 ]; then
  echo "== cargo fmt --check (at ${SECONDS} s)"
  cargo fmt --all -- --check
  echo "== cargo clippy (at ${SECONDS} s)"
  cargo clippy --workspace --all-targets -- -D warnings
fi

echo "== cargo test (at ${SECONDS} s)"
cargo test --workspace

# The suites and the fault test run the debug binary `cargo test` just built (they check
# behaviour, not speed): a release build would add minutes on CI's two cores.
warren_bin="${CARGO_TARGET_DIR:-target}/debug/warren"
[ -x "$warren_bin" ] || cargo build -p warren

echo "== compat-tests: real clients against a live Warren (at ${SECONDS} s)"
WARREN_BIN="$warren_bin" compat-tests/run.sh --broker warren

# Three nodes in network namespaces this test makes (no Docker): kill -9, pause (SIGSTOP) and a
# partition (iptables in a namespace) under confirmed publishers and acking consumers, then the
# total-queue check: nothing confirmed lost. Needs root for the namespaces; the long Docker runs
# (docker/faults.sh) stay outside CI.
echo "== fault test: docker/faults.sh --backend netns (at ${SECONDS} s)"
python3 -m unittest discover -s docker -p 'test_faults_checker.py'
if [ "$(id -u)" = 0 ]; then
  WARREN_BIN="$warren_bin" timeout -k 10 600 docker/faults.sh --backend netns --faults 3 \
    --kinds crash,pause,halves --fault-seconds 8-12 --gap-seconds 5-8 --rate 50 --drain-limit 120 \
    --no-plot --out target/faults/ci
else
  echo "skipped: needs root (network namespaces)"
fi
echo "== done in ${SECONDS} s"
