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

"$venv/bin/python" - "$(address)" publish <<'PY'
import sys, time, pika
host, step = sys.argv[1], sys.argv[2]
deadline = time.time() + 30
while True:
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters(host, 5672))
        break
    except pika.exceptions.AMQPConnectionError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
ch = conn.channel()
ch.queue_declare("docker.smoke", durable=True)
ch.confirm_delivery()
for i in range(1000):
    ch.basic_publish("", "docker.smoke", str(i).encode(), pika.BasicProperties(delivery_mode=2))
conn.close()
print("published and confirmed 1000 persistent messages")
PY

docker kill -s KILL "$ID" >/dev/null
docker start "$ID" >/dev/null

"$venv/bin/python" - "$(address)" <<'PY'
import sys, time, pika
host = sys.argv[1]
deadline = time.time() + 30
while True:
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters(host, 5672))
        break
    except pika.exceptions.AMQPConnectionError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
ch = conn.channel()
seen = []
while True:
    method, props, body = ch.basic_get("docker.smoke", auto_ack=True)
    if method is None:
        break
    seen.append(int(body))
conn.close()
assert seen == list(range(1000)), f"after kill -9 and restart: {len(seen)} messages, first missing {sorted(set(range(1000)) - set(seen))[:5]}"
print("after kill -9 and restart: all 1000 back, in order")
PY

docker stop -t 10 "$ID" >/dev/null
code="$(docker inspect -f '{{.State.ExitCode}}' "$ID")"
[ "$code" = 0 ] || { docker logs "$ID" | tail -20 >&2; echo "warren exited with $code on SIGTERM" >&2; exit 1; }
echo "SIGTERM: clean exit"
echo "docker: ok"
