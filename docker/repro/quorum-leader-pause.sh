#!/usr/bin/env bash
# A quorum queue stops serving for good after its leader is paused for 6 s (SIGSTOP, SIGCONT):
# every publish is nacked after 10 s, every basic.get/basic.consume answered 404 after 10 s,
# through every node, while the management API shows it with a leader and all members online.
#   docker/repro/quorum-leader-pause.sh        (SETTLE=15: wait 15 s after the declare first)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/cluster3.sh"
"$PY" -c "$PRELUDE"'
declare("pq")
c = conn(1); ch = c.channel(); ch.confirm_delivery()
for i in range(10): ch.basic_publish("", "pq", b"m%d" % i, pika.BasicProperties(delivery_mode=2))
c.close()
time.sleep(float(os.environ.get("SETTLE", "0")))
before = api("pq"); print("before:", before)
leader = before["leader"]
os.kill(pids[leader], signal.SIGSTOP); time.sleep(6); os.kill(pids[leader], signal.SIGCONT)
print(f"paused the leader {leader} for 6 s"); time.sleep(8); print("after 8 s:", api("pq"))
for i in (1, 2, 3):
    t = time.time()
    try:
        c = conn(i); ch = c.channel(); ch.confirm_delivery()
        ch.basic_publish("", "pq", b"x", pika.BasicProperties(delivery_mode=2))
        print(f"n{i} publish: confirmed in {time.time() - t:.1f}s")
    except Exception as e: print(f"n{i} publish: {e!r} after {time.time() - t:.1f}s")
    t = time.time()
    try:
        c = conn(i); m = c.channel().basic_get("pq", auto_ack=True)
        print(f"n{i} basic.get: {m[2]!r} in {time.time() - t:.1f}s")
    except Exception as e: print(f"n{i} basic.get: {e!r} after {time.time() - t:.1f}s")
time.sleep(30); print("30 s later:", api("pq"))
try: print("n2 basic.get:", conn(2).channel().basic_get("pq", auto_ack=True)[2])
except Exception as e: print("n2 basic.get:", repr(e))
' "$P" "${pids[@]}"
