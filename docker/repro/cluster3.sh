# Sourced by the reproductions here: three local warren nodes (ports ${P}0I cluster, ${P}1I AMQP,
# ${P}2I HTTP; P=BASE, default 473), waited for, stopped and reported at exit.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN=${WARREN_BIN:-$ROOT/target/release/warren}  # cargo build --release
PY=${PY:-$ROOT/target/faults-venv/bin/python}     # made by docker/faults.sh (pika)
D=$(mktemp -d /tmp/warren-repro.XXXX)
P=${BASE:-473}
pids=()
for I in 1 2 3; do
  RUST_LOG=${RUST_LOG:-warn} WARREN_CLUSTER_SECRET=q "$BIN" server --node-name n$I --amqp-listen 127.0.0.1:${P}1$I \
    --http-listen 127.0.0.1:${P}2$I --cluster-listen 127.0.0.1:${P}0$I \
    --cluster-peers n1@127.0.0.1:${P}01,n2@127.0.0.1:${P}02,n3@127.0.0.1:${P}03 \
    --data-dir $D/n$I >$D/n$I.log 2>&1 &
  pids+=($!)
done
trap 'kill -CONT ${pids[@]} 2>/dev/null; kill ${pids[@]} 2>/dev/null; wait; rm -rf $D/n1 $D/n2 $D/n3; echo "logs in $D"' EXIT
for I in 1 2 3; do until (exec 3<>/dev/tcp/127.0.0.1/${P}1$I) 2>/dev/null; do sleep 0.2; done; done
PRELUDE='
import base64, json, os, signal, sys, time, urllib.request
import pika
P = sys.argv[1]; pids = dict(zip(("n1", "n2", "n3"), map(int, sys.argv[2:])))
def conn(i, hb=5): return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", int(f"{P}1{i}"), heartbeat=hb))
def declare(q):
    t = time.time()
    while True:  # the first declare waits for the cluster to form
        try:
            c = conn(1); c.channel().queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"}); c.close(); return
        except pika.exceptions.AMQPError:
            if time.time() - t > 60: raise
            time.sleep(0.5)
def api(q):
    r = urllib.request.Request(f"http://127.0.0.1:{P}21/api/queues/%2F/{q}")
    r.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    d = json.loads(urllib.request.urlopen(r, timeout=5).read())
    return {k: d.get(k) for k in ("leader", "online", "messages")}
'
