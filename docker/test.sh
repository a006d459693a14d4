#!/usr/bin/env bash
# The image, end to end: build it, run a container on a private network, publish persistent
# messages with confirms from the host (pika), kill the container with SIGKILL, start it again
# from its volume, and read every confirmed message back; then stop it with SIGTERM and check it
# exits cleanly. Everything it creates (image tag, container, network, volume) is removed on exit.
#
#   docker/test.sh
#
# Needs a running Docker engine; not part of scripts/test.sh (CI) for that reason.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ID="warren-test-$$"
TAG="warren:$ID"

cleanup() {
  docker rm -f "$ID" >/dev/null 2>&1 || true
  docker network rm "$ID" >/dev/null 2>&1 || true
  docker volume rm "$ID" >/dev/null 2>&1 || true
  docker rmi "$TAG" >/dev/null 2>&1 || true
}
trap cleanup EXIT

venv="$ROOT/target/docker-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$(grep '^pika==' "$ROOT/compat-tests/requirements.txt")"
fi

"$HERE/build.sh" "$TAG" >/dev/null
docker network create "$ID" >/dev/null
docker run -d --name "$ID" --network "$ID" -v "$ID:/var/lib/warren" "$TAG" >/dev/null

address() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$ID"; }

"$venv/bin/python" "$HERE/smoke.py" "$(address)" publish

docker kill -s KILL "$ID" >/dev/null
docker start "$ID" >/dev/null

echo -n "after kill -9 and restart: "
"$venv/bin/python" "$HERE/smoke.py" "$(address)" check

docker stop -t 10 "$ID" >/dev/null
code="$(docker inspect -f '{{.State.ExitCode}}' "$ID")"
[ "$code" = 0 ] || { docker logs "$ID" | tail -20 >&2; echo "warren exited with $code on SIGTERM" >&2; exit 1; }
echo "SIGTERM: clean exit"
echo "docker: ok"
