#!/usr/bin/env bash
# Builds the `warren` image (default tag warren:dev) from this checkout:
#
#   docker/build.sh [TAG]
#
# cargo build --release, then a root file system holding the binary, the shared libraries `ldd`
# lists for it (glibc's loader, libc, libm, libgcc_s) and a minimal /etc, then `docker build`
# FROM scratch. WARREN_BIN (a prebuilt binary) skips the cargo build.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TAG="${1:-warren:dev}"

bin="${WARREN_BIN:-}"
if [ -z "$bin" ]; then
  (cd "$ROOT" && cargo build --release -p warren) >&2
  bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/warren"
fi
[ -x "$bin" ] || { echo "no warren binary at $bin" >&2; exit 2; }

ctx="$(mktemp -d "${TMPDIR:-/tmp}/warren-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/var/lib/warren" "$rootfs/tmp"
# Debug info stays with the build, not in the image (68 MB -> about 10 MB).
strip --strip-debug -o "$rootfs/usr/local/bin/warren" "$bin"
chmod 755 "$rootfs/usr/local/bin/warren"
# The libraries the binary links, at the paths the loader looks for them.
ldd "$bin" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
echo 'root:x:0:0:root:/:/usr/local/bin/warren' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
cp "$HERE/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$TAG" "$ctx" >"$ctx/build.log" 2>&1 || { cat "$ctx/build.log" >&2; exit 1; }
echo "$TAG"
