#!/usr/bin/env bash
# The image, end to end: build it, run a container on a private network, publish persistent
# messages with confirms from the host (pika), kill the container with SIGKILL, start it again
# from its volume, and read every confirmed message back; then stop it with SIGTERM and check it
# exits cleanly. Then the three-node cluster of docker/docker-compose.yml (its own project name,
# host ports and subnet chosen at run time): a quorum and a classic queue used through every node
# from the host. Everything it creates (image tag, containers, networks, volumes) is removed on
# exit.
#
#   docker/test.sh
#
# Needs a running Docker engine; not part of scripts/test.sh (CI) for that reason.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ID="warren-test-$$"
TAG="warren:$ID"

compose() {
  WARREN_IMAGE="$TAG" docker-compose -p "$ID" -f "$HERE/docker-compose.yml" "$@"
}
cleanup() {
  compose down -v -t 5 >/dev/null 2>&1 || true
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

# The compose cluster, on ports and a subnet nothing else here uses.
read -r -a ports < <("$venv/bin/python" -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
in_use="$(ip -4 route show table all; docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' $(docker network ls -q))"
for _ in 1 2 3 4 5 6 7 8; do
  prefix="10.$((RANDOM % 150 + 100)).$((RANDOM % 256))"
  grep -q "$prefix\." <<<"$in_use" || break
done
export WARREN_SUBNET_PREFIX="$prefix" WARREN_CLUSTER_SECRET="test-$ID"
export WARREN1_AMQP_PORT="${ports[0]}" WARREN2_AMQP_PORT="${ports[1]}" WARREN3_AMQP_PORT="${ports[2]}"
export WARREN1_HTTP_PORT="${ports[3]}" WARREN2_HTTP_PORT="${ports[4]}" WARREN3_HTTP_PORT="${ports[5]}"
compose up -d >/dev/null 2>&1 || { compose up -d; exit 1; }
"$venv/bin/python" "$HERE/cluster_smoke.py" 127.0.0.1 "${ports[0]},${ports[1]},${ports[2]}" "${ports[3]}" ||
  { compose logs --tail 30 >&2; exit 1; }
echo "docker: ok"
