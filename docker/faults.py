"""Fault runner: a three-node Warren cluster under faults, checked as Jepsen's total-queue.

Run through docker/faults.sh (which makes the venv and the image). Publishers with confirms and
consumers with manual acks work through all three nodes, reconnecting on failure, while a
nemesis injects faults one at a time; then everything is healed, every queue drained, and the
history checked (docker/faults_checker.py). Two back ends:

* docker: three containers of the image on a private bridge network (crash, pause, partitions,
  slow node, slow link, disk full);
* netns: three warren processes in network namespaces joined by a bridge in a namespace of
  their own (crash, pause, partitions) -- no Docker, for CI.

Everything the run creates is removed at the end, failed or not. The report (report.txt,
history.json, throughput.png, the nodes' logs) goes to --out.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from base64 import b64encode
from collections import Counter, defaultdict

import pika
import pika.exceptions

import faults_checker as chk

LOG_LOCK = threading.Lock()
T0 = time.time()


def log(*a):
    with LOG_LOCK:
        print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


def sh(*cmd, check=True, quiet=False, timeout=60):
    """Runs a command; its output, or an exception with it when it fails and check is set."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    if not quiet and p.returncode != 0:
        log(f"(ignored) {' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


def free_subnet():
    """A 10.x.y.0/24 no interface or route of this host (nor any Docker network) uses."""
    used = []
    for line in sh("ip", "-4", "route", "show", "table", "all").splitlines() + sh("ip", "-4", "-o", "addr").split():
        for tok in line.split():
            try:
                used.append(ipaddress.ip_network(tok, strict=False))
            except ValueError:
                pass
    rng = random.Random()
    for _ in range(1000):
        net = ipaddress.ip_network(f"10.{rng.randint(100, 250)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.x.y.0/24")


class Node:
    def __init__(self, name, ip):
        self.name, self.ip = name, ip
        self.amqp_port, self.http_port = 5672, 15672


# ---------------------------------------------------------------------------------------------
# Back ends: make the cluster, inject and heal faults, clean up.


class Backend:
    kinds: list = []

    def __init__(self, args):
        self.args = args
        self.id = f"wf{os.getpid() % 100000}"
        self.net = free_subnet()
        hosts = list(self.net.hosts())
        self.gateway = str(hosts[0])
        self.nodes = [Node(f"n{i}", str(hosts[10 + i])) for i in (1, 2, 3)]
        self.peers = ",".join(f"{n.name}@{n.ip}:25672" for n in self.nodes)
        self.secret = f"faults-{self.id}-{random.getrandbits(32):x}"
        self.cut = []  # iptables rules in place: nodes whose tables need flushing

    # iptables inside a node's network namespace ---------------------------------------------
    def ns_exec(self, node, *cmd, check=True):
        raise NotImplementedError

    def drop(self, node, peer, inbound=True, outbound=True):
        if inbound:
            self.ns_exec(node, "iptables", "-w", "-A", "INPUT", "-s", peer.ip, "-j", "DROP")
        if outbound:
            self.ns_exec(node, "iptables", "-w", "-A", "OUTPUT", "-d", peer.ip, "-j", "DROP")
        self.cut.append(node)

    def flush(self):
        for n in set(self.cut):
            self.ns_exec(n, "iptables", "-w", "-F", check=False)
        self.cut = []

    # faults shared by both back ends: each returns (target description, heal function) --------
    def fault_halves(self, rng):
        """A random split into a minority of one and a majority of two (clients still reach all)."""
        lone = rng.choice(self.nodes)
        for other in self.nodes:
            if other is not lone:
                self.drop(lone, other)
                self.drop(other, lone)
        return f"{lone.name} | others", self.flush

    def fault_ring(self, rng):
        """Majority ring: each node hears only one peer (its predecessor), so each still sees a
        majority counting itself, but no two see the same one; on three nodes the ring is
        one-way."""
        order = self.nodes[:]
        rng.shuffle(order)
        for i, n in enumerate(order):
            self.drop(n, order[(i + 1) % 3], inbound=True, outbound=False)
        return "->".join(n.name for n in order), self.flush

    def fault_bridge(self, rng):
        """One node cut from one peer only (the third still talks to both)."""
        a, b = rng.sample(self.nodes, 2)
        self.drop(a, b)
        self.drop(b, a)
        return f"{a.name} x {b.name}", self.flush

    def logs(self, out):
        pass


class DockerBackend(Backend):
    kinds = ["crash", "pause", "isolate", "halves", "ring", "bridge", "slow-node", "slow-link", "disk-full"]

    def __init__(self, args):
        super().__init__(args)
        self.image = args.image
        self.disk = f"/tmp/{self.id}-disk"  # a small tmpfs: the data of the disk-full node (n3)
        self.ballast = None

    def ctr(self, n):
        return f"{self.id}-{n.name}"

    def pid(self, n):
        return sh("docker", "inspect", "-f", "{{.State.Pid}}", self.ctr(n)).strip()

    def ns_exec(self, node, *cmd, check=True):
        return sh("nsenter", "-t", self.pid(node), "-n", *cmd, check=check)

    def start(self):
        sh("docker", "network", "create", "--subnet", str(self.net), "--gateway", self.gateway,
           "--label", f"warren-faults={self.id}", self.id)
        os.makedirs(self.disk, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={self.args.disk_mb}m", "tmpfs", self.disk)
        for n in self.nodes:
            if n.name == "n3":
                data = ["--mount", f"type=bind,src={self.disk},dst=/var/lib/warren"]
            else:
                data = ["-v", f"{self.ctr(n)}:/var/lib/warren"]
            sh("docker", "run", "-d", "--name", self.ctr(n), "--hostname", n.name, "--label",
               f"warren-faults={self.id}", "--network", self.id, "--ip", n.ip, "--cpus", "2",
               "-e", f"WARREN_NODE_NAME={n.name}", "-e", "WARREN_CLUSTER_LISTEN=0.0.0.0:25672",
               "-e", f"WARREN_CLUSTER_PEERS={self.peers}", "-e", f"WARREN_CLUSTER_SECRET={self.secret}",
               "-e", "WARREN_DEFAULT_USER=guest", "-e", "WARREN_DEFAULT_PASS=guest",
               "-e", "WARREN_HEARTBEAT=10", *data, self.image)

    def fault_crash(self, rng):
        n = rng.choice(self.nodes)
        sh("docker", "kill", "-s", "KILL", self.ctr(n))
        return n.name, lambda: sh("docker", "start", self.ctr(n))

    def fault_pause(self, rng):
        n = rng.choice(self.nodes)
        sh("docker", "pause", self.ctr(n))
        return n.name, lambda: sh("docker", "unpause", self.ctr(n))

    def fault_isolate(self, rng):
        """The node off the network altogether (clients lose it too)."""
        n = rng.choice(self.nodes)
        sh("docker", "network", "disconnect", self.id, self.ctr(n))
        return n.name, lambda: sh("docker", "network", "connect", "--ip", n.ip, self.id, self.ctr(n))

    def fault_slow_node(self, rng):
        n = rng.choice(self.nodes)
        sh("docker", "update", "--cpus", "0.05", self.ctr(n))
        return n.name, lambda: sh("docker", "update", "--cpus", "2", self.ctr(n))

    def dev(self, n):
        """The node's interface on the network (eth0 at first; another name once `docker network
        connect` has put it back)."""
        for line in self.ns_exec(n, "ip", "-o", "-4", "addr", "show").splitlines():
            f = line.split()
            if f[3].split("/")[0] == n.ip:
                return f[1]
        raise RuntimeError(f"{n.name} has no interface with {n.ip}")

    def fault_slow_link(self, rng):
        """Everything the node sends through a 200 kbit/s token bucket (no netem here)."""
        n = rng.choice(self.nodes)
        dev = self.dev(n)
        self.ns_exec(n, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "200kbit",
                     "burst", "4kb", "latency", "500ms")
        return n.name, lambda: self.ns_exec(n, "tc", "qdisc", "del", "dev", dev, "root", check=False)

    def fault_disk_full(self, rng):
        """n3's data volume (a tmpfs) filled up to the last byte."""
        self.ballast = os.path.join(self.disk, "ballast")
        with open(self.ballast, "wb") as f:
            chunk = b"\0" * (1 << 20)
            try:
                while True:
                    f.write(chunk)
                    f.flush()
            except OSError:
                pass
        return "n3", self.free_disk_and_restart

    def free_disk_and_restart(self):
        """The disk freed; a node that stopped on its full disk (Warren stops a member whose Raft
        log cannot be written) is started again, as a supervisor would."""
        self.free_disk()
        n = next(n for n in self.nodes if n.name == "n3")
        st = sh("docker", "inspect", "-f", "{{.State.Status}}", self.ctr(n), check=False).strip()
        if st in ("exited", "dead"):
            log("n3 stopped on its full disk: starting it again")
            sh("docker", "start", self.ctr(n), check=False)

    def free_disk(self):
        if self.ballast and os.path.exists(self.ballast):
            os.unlink(self.ballast)
        self.ballast = None

    def heal_all(self):
        for n in self.nodes:
            c = self.ctr(n)
            st = sh("docker", "inspect", "-f", "{{.State.Status}}", c, check=False).strip()
            if st == "paused":
                sh("docker", "unpause", c, check=False)
            elif st in ("exited", "created", "dead"):
                sh("docker", "start", c, check=False)
            sh("docker", "update", "--cpus", "2", c, check=False, quiet=True)
            nets = sh("docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", c, check=False)
            if self.id not in nets:
                sh("docker", "network", "connect", "--ip", n.ip, self.id, c, check=False)
        self.free_disk()
        for n in self.nodes:
            try:
                self.ns_exec(n, "iptables", "-w", "-F", check=False)
                sh("nsenter", "-t", self.pid(n), "-n", "tc", "qdisc", "del", "dev", self.dev(n), "root",
                   check=False, quiet=True)
            except Exception as e:  # noqa: BLE001 - best effort
                log(f"heal {n.name}: {e}")
        self.cut = []

    def logs(self, out):
        for n in self.nodes:
            p = subprocess.run(["docker", "logs", self.ctr(n)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
            with open(os.path.join(out, f"{n.name}.log"), "wb") as f:
                f.write(p.stdout[-5_000_000:])

    def cleanup(self):
        for n in self.nodes:
            sh("docker", "unpause", self.ctr(n), check=False, quiet=True)
            sh("docker", "rm", "-f", "-v", self.ctr(n), check=False, quiet=True)
            sh("docker", "volume", "rm", self.ctr(n), check=False, quiet=True)
        sh("docker", "network", "rm", self.id, check=False, quiet=True)
        if self.args.remove_image:
            sh("docker", "rmi", self.image, check=False, quiet=True)
        sh("umount", self.disk, check=False, quiet=True)
        try:
            os.rmdir(self.disk)
        except OSError:
            pass


class NetnsBackend(Backend):
    """Three warren processes, each in a network namespace of its own with one veth into a bridge
    that lives in a fourth namespace (the hub), and one more veth from the hub to the host (this
    process's namespace), which reaches the nodes through it. Keeping the bridge out of the
    host's namespace keeps it out of the host's firewall (Docker's FORWARD policy is DROP)."""

    kinds = ["crash", "pause", "isolate", "halves", "ring", "bridge"]

    def __init__(self, args):
        super().__init__(args)
        self.bin = args.warren_bin
        self.hub = f"{self.id}-hub"
        self.dir = f"/tmp/{self.id}-data"
        self.procs = {}

    def ns(self, n):
        return f"{self.id}-{n.name}"

    def ns_exec(self, node, *cmd, check=True):
        return sh("ip", "netns", "exec", self.ns(node), *cmd, check=check)

    def start(self):
        plen = self.net.prefixlen
        sh("ip", "netns", "add", self.hub)
        self.created_hub = True
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        # host <-> hub
        sh("ip", "link", "add", f"{self.id}h", "type", "veth", "peer", "name", "host0", "netns", self.hub)
        sh("ip", "addr", "add", f"{self.gateway}/{plen}", "dev", f"{self.id}h")
        sh("ip", "link", "set", f"{self.id}h", "up")
        sh("ip", "-n", self.hub, "link", "set", "host0", "master", "br0", "up")
        for n in self.nodes:
            sh("ip", "netns", "add", self.ns(n))
            sh("ip", "-n", self.hub, "link", "add", f"to{n.name}", "type", "veth", "peer", "name", "eth0",
               "netns", self.ns(n))
            sh("ip", "-n", self.hub, "link", "set", f"to{n.name}", "master", "br0", "up")
            sh("ip", "-n", self.ns(n), "addr", "add", f"{n.ip}/{plen}", "dev", "eth0")
            sh("ip", "-n", self.ns(n), "link", "set", "eth0", "up")
            sh("ip", "-n", self.ns(n), "link", "set", "lo", "up")
            os.makedirs(os.path.join(self.dir, n.name), exist_ok=True)
            self.spawn(n)

    def spawn(self, n):
        env = dict(os.environ, WARREN_CLUSTER_SECRET=self.secret, WARREN_LOOPBACK_USERS="none",
                   WARREN_HEARTBEAT="10")
        logf = open(os.path.join(self.dir, f"{n.name}.log"), "ab")
        self.procs[n.name] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(n), self.bin, "server", "--node-name", n.name,
             "--amqp-listen", f"{n.ip}:5672", "--http-listen", f"{n.ip}:15672",
             "--cluster-listen", f"{n.ip}:25672", "--cluster-peers", self.peers,
             "--data-dir", os.path.join(self.dir, n.name)],
            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logf.close()

    def fault_crash(self, rng):
        n = rng.choice(self.nodes)
        p = self.procs[n.name]
        os.kill(p.pid, signal.SIGKILL)  # `ip netns exec` execs the binary: this pid is warren
        p.wait()
        return n.name, lambda: self.spawn(n)

    def fault_pause(self, rng):
        n = rng.choice(self.nodes)
        os.kill(self.procs[n.name].pid, signal.SIGSTOP)
        return n.name, lambda: os.kill(self.procs[n.name].pid, signal.SIGCONT)

    def fault_isolate(self, rng):
        """The node's link down: cut from its peers and its clients."""
        n = rng.choice(self.nodes)
        sh("ip", "-n", self.hub, "link", "set", f"to{n.name}", "down")
        return n.name, lambda: sh("ip", "-n", self.hub, "link", "set", f"to{n.name}", "up")

    def heal_all(self):
        for n in self.nodes:
            p = self.procs.get(n.name)
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
            elif p is not None:
                log(f"{n.name} had exited ({p.returncode}): restarting it")
                self.spawn(n)
            sh("ip", "-n", self.hub, "link", "set", f"to{n.name}", "up", check=False)
            self.ns_exec(n, "iptables", "-w", "-F", check=False)
        self.cut = []

    def logs(self, out):
        for n in self.nodes:
            src = os.path.join(self.dir, f"{n.name}.log")
            if os.path.exists(src):
                with open(src, "rb") as f, open(os.path.join(out, f"{n.name}.log"), "wb") as g:
                    g.write(f.read()[-5_000_000:])

    def cleanup(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        sh("ip", "link", "del", f"{self.id}h", check=False, quiet=True)
        for n in self.nodes:
            sh("ip", "netns", "del", self.ns(n), check=False, quiet=True)
        sh("ip", "netns", "del", self.hub, check=False, quiet=True)
        subprocess.run(["rm", "-rf", self.dir])


# ---------------------------------------------------------------------------------------------
# The workload.


def params(node, heartbeat=5):
    return pika.ConnectionParameters(
        host=node.ip, port=node.amqp_port, credentials=pika.PlainCredentials("guest", "guest"),
        heartbeat=heartbeat, blocked_connection_timeout=20, socket_timeout=5, stack_timeout=10,
        connection_attempts=1)


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.publishes = []
        self.deliveries = []
        self.ok = defaultdict(list)  # worker -> times of its successes

    def publish(self, p):
        with self.lock:
            self.publishes.append(p)
            if p.outcome == "ok":
                self.ok[p.publisher].append(time.time())

    def delivery(self, d):
        with self.lock:
            self.deliveries.append(d)
            if d.consumer != "drain":
                self.ok[d.consumer].append(d.t)


def body_of(msg_id, publisher, session, seq):
    return json.dumps({"id": msg_id, "p": publisher, "s": session, "n": seq}).encode()


class Worker(threading.Thread):
    def __init__(self, name, nodes, first, history, stop):
        super().__init__(name=name, daemon=True)
        self.nodes, self.next_node = nodes, first
        self.history, self.stop = history, stop
        self.conn = None
        self.busy_since = None
        self.session = 0
        self.errors = Counter()

    def connect(self):
        node = self.nodes[self.next_node % len(self.nodes)]
        self.next_node += 1  # the next reconnection tries the next node
        self.conn = pika.BlockingConnection(params(node))
        self.session += 1
        return self.conn

    def failed(self, e):
        self.errors[type(e).__name__] += 1
        c, self.conn = self.conn, None
        try:
            if c is not None and c.is_open:
                c.close()
        except Exception:  # noqa: BLE001 - the connection is gone anyway
            pass
        self.stop.wait(0.5)

    def kick(self):
        """Unblocks a worker stuck in a blocking call (a confirm that never comes): shut its
        socket down so pika raises in its thread."""
        try:
            self.conn._impl._transport._sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001 - nothing to kick
            pass


class Publisher(Worker):
    def __init__(self, name, nodes, first, history, stop, queues, rate):
        super().__init__(name, nodes, first, history, stop)
        self.queues, self.rate, self.seq = queues, rate, 0

    def run(self):
        period = 1.0 / self.rate if self.rate else 0
        while not self.stop.is_set():
            try:
                ch = self.connect().channel()
                ch.confirm_delivery()
            except Exception as e:  # noqa: BLE001 - any failure: try again, through another node
                self.failed(e)
                continue
            while not self.stop.is_set():
                self.seq += 1
                msg_id = f"{self.name}-{self.seq}"
                queue = self.queues[self.seq % len(self.queues)]
                t = time.time()
                self.busy_since = t
                outcome, err = "info", None
                try:
                    ch.basic_publish("", queue, body_of(msg_id, self.name, self.session, self.seq),
                                     pika.BasicProperties(delivery_mode=2, message_id=msg_id))
                    outcome = "ok"
                except pika.exceptions.NackError:
                    outcome = "nack"
                except Exception as e:  # noqa: BLE001 - indeterminate
                    err = e
                self.busy_since = None
                self.history.publish(chk.Publish(msg_id, queue, self.name, self.session, self.seq, outcome, t))
                if err is not None:
                    self.failed(err)
                    break
                if period:
                    self.stop.wait(max(0.0, t + period - time.time()))
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass


class Consumer(Worker):
    """One consumer on one queue (so its queue is a single-consumer queue, whose per-publisher
    order the checker checks), manual acks, prefetch 50."""

    def __init__(self, name, nodes, first, history, stop, queue):
        super().__init__(name, nodes, first, history, stop)
        self.queue = queue
        self.last = time.time()
        self.cancels = []

    def on_message(self, ch, method, props, body):
        now = time.time()
        self.last = now
        try:
            msg_id = json.loads(body)["id"]
        except Exception:  # noqa: BLE001 - a body we never wrote: unexpected
            msg_id = f"garbage:{body[:40]!r}"
        self.history.delivery(chk.Delivery(msg_id, self.queue, self.name, self.session,
                                           bool(method.redelivered), now))
        ch.basic_ack(method.delivery_tag)

    def run(self):
        while not self.stop.is_set():
            try:
                ch = self.connect().channel()
                ch.basic_qos(prefetch_count=50)
                ch.basic_consume(self.queue, self.on_message)
                while not self.stop.is_set():
                    self.conn.process_data_events(time_limit=0.5)
                    if not ch.consumer_tags:
                        # basic.cancel from the broker: a client subscribes again (as RabbitMQ's
                        # documentation on consumer cancel notifications says), on a new channel
                        self.errors["cancelled by the broker"] += 1
                        self.cancels.append(time.time())
                        log(f"{self.name}: consumer cancelled by the broker; subscribing again")
                        ch = self.conn.channel()
                        ch.basic_qos(prefetch_count=50)
                        self.session += 1
                        ch.basic_consume(self.queue, self.on_message)
            except Exception as e:  # noqa: BLE001
                self.failed(e)
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass


def watchdog(workers, stop, limit=30.0):
    while not stop.wait(1.0):
        for w in workers:
            b = w.busy_since
            if b is not None and time.time() - b > limit:
                log(f"{w.name}: no answer to a publish for {limit:.0f}s: dropping its connection")
                w.busy_since = None
                w.kick()


def http_get(node, path, timeout=5):
    req = urllib.request.Request(f"http://{node.ip}:{node.http_port}{path}")
    req.add_header("Authorization", "Basic " + b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def declare(nodes, queues, qtype, deadline):
    """Each queue declared through its own node (so classic queues' homes are spread)."""
    args = {"x-queue-type": "quorum"} if qtype == "quorum" else {}
    for node, q in zip(nodes, queues):
        while True:
            try:
                c = pika.BlockingConnection(params(node))
                c.channel().queue_declare(q, durable=True, arguments=args)
                c.close()
                break
            except Exception as e:  # noqa: BLE001
                if time.time() > deadline:
                    raise RuntimeError(f"declare {q} through {node.name}: {e!r}")
                time.sleep(0.5)


def probe(nodes, queues, history, deadline):
    """Until every node confirms a publish to every queue: the cluster serves. Seconds taken,
    or None at the deadline. The probe messages are in the history (publisher "probe")."""
    t0 = time.time()
    pending = [(n, q) for n in nodes for q in queues]
    seq = int(t0 * 1000) * 100
    while pending:
        n, q = pending[0]
        seq += 1
        msg_id = f"probe-{seq}"
        t = time.time()
        outcome = "info"
        try:
            c = pika.BlockingConnection(params(n))
            ch = c.channel()
            ch.confirm_delivery()
            ch.basic_publish("", q, body_of(msg_id, "probe", seq, seq),
                             pika.BasicProperties(delivery_mode=2, message_id=msg_id))
            outcome = "ok"
            c.close()
        except pika.exceptions.NackError:
            outcome = "nack"
        except Exception:  # noqa: BLE001
            pass
        history.publish(chk.Publish(msg_id, q, "probe", seq, seq, outcome, t))
        if outcome == "ok":
            pending.pop(0)
        elif time.time() > deadline:
            return None
        else:
            time.sleep(0.3)
    return time.time() - t0


def queue_depths(nodes, queues):
    """messages (ready + unacked) per queue, as any node's management API tells; None where no
    node answered."""
    out = {}
    for q in queues:
        out[q] = None
        for n in nodes:
            try:
                out[q] = http_get(n, f"/api/queues/%2F/{q}").get("messages")
                break
            except Exception:  # noqa: BLE001
                continue
    return out


def drain_sweep(nodes, queues, history):
    """basic.get until empty on every queue, through each node in turn: what the consumers left."""
    got = 0
    for q in queues:
        for n in nodes:
            try:
                c = pika.BlockingConnection(params(n))
                ch = c.channel()
                while True:
                    m, props, body = ch.basic_get(q, auto_ack=False)
                    if m is None:
                        break
                    try:
                        msg_id = json.loads(body)["id"]
                    except Exception:  # noqa: BLE001
                        msg_id = f"garbage:{body[:40]!r}"
                    history.delivery(chk.Delivery(msg_id, q, "drain", 0, bool(m.redelivered), time.time()))
                    ch.basic_ack(m.delivery_tag)
                    got += 1
                c.close()
                break
            except Exception as e:  # noqa: BLE001
                log(f"sweep {q} through {n.name}: {e!r}")
    return got


# ---------------------------------------------------------------------------------------------
# The report.


def plot(path, history, faults, t_start, t_end):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = int(t_end - t_start) + 1
    conf, bad, deq = [0] * span, [0] * span, [0] * span
    for p in history.publishes:
        i = int(p.t - t_start)
        if 0 <= i < span and p.publisher != "probe":
            if p.outcome == "ok":
                conf[i] += 1
            else:
                bad[i] += 1
    for d in history.deliveries:
        i = int(d.t - t_start)
        if 0 <= i < span:
            deq[i] += 1
    fig, ax = plt.subplots(figsize=(14, 4), dpi=70)
    xs = range(span)
    colors = {}
    palette = plt.get_cmap("tab10")
    for f in faults:
        c = colors.setdefault(f.kind, palette(len(colors) % 10))
        ax.axvspan(f.start - t_start, f.healed - t_start, color=c, alpha=0.25, lw=0)
    ax.plot(xs, conf, lw=0.7, color="tab:blue", label="confirmed publishes/s")
    ax.plot(xs, deq, lw=0.7, color="tab:green", label="deliveries/s")
    ax.plot(xs, bad, lw=0.7, color="tab:red", label="nacked or indeterminate/s")
    from matplotlib.patches import Patch

    handles = ax.get_legend_handles_labels()[0] + [Patch(color=c, alpha=0.35, label=k) for k, c in colors.items()]
    ax.legend(handles=handles, loc="upper left", fontsize=7, ncol=4)
    ax.set_xlabel("seconds")
    ax.set_ylabel("messages/s")
    ax.set_xlim(0, span)
    fig.tight_layout()
    fig.savefig(path)


def report(args, result, faults, recov, final_recovery, stats, workers, t_start, t_end, drained):
    lines = [
        f"warren fault run: backend={args.backend} queue-type={args.queue_type} faults={len(faults)} "
        f"seed={args.seed} duration={t_end - t_start:.0f}s",
        "",
        chk.summary(result),
        f"recovery       after the final heal every node served every queue in "
        f"{'%.1f s' % final_recovery if final_recovery is not None else 'NEVER (limit %d s)' % args.recovery_limit}",
        f"drained        {'yes' if drained else 'NO'}",
        "",
        "per fault kind (publishes attempted while a fault of that kind was active; recovery = "
        "seconds from the heal until every publisher and consumer succeeded again; late = faults "
        "after which some did not before the next fault began):",
        f"  {'kind':<12}{'faults':>7}{'attempted':>10}{'confirmed':>10}{'nacked':>8}{'indet.':>8}"
        f"{'lost':>6}{'recovery mean':>15}{'max':>7}{'late':>7}",
    ]
    by_kind = defaultdict(list)
    for f, r in zip(faults, recov):
        by_kind[f.kind].append(r)
    for kind in sorted(stats, key=lambda k: (k == "(no fault)", k)):
        c = stats[kind]
        rs = [r for r in by_kind.get(kind, []) if r is not None]
        late = sum(1 for r in by_kind.get(kind, []) if r is None)
        mean = f"{sum(rs) / len(rs):.1f}" if rs else "-"
        mx = f"{max(rs):.1f}" if rs else "-"
        lines.append(
            f"  {kind:<12}{c['faults']:>7}{c['attempted']:>10}{c['confirmed']:>10}{c['nacked']:>8}"
            f"{c['indeterminate']:>8}{c['lost']:>6}{mean:>15}{mx:>7}{late:>7}")
    lines += ["", "faults (start and heal in seconds from the start; recovery in seconds):"]
    for f, r in zip(faults, recov):
        lines.append(f"  {f.start - t_start:7.1f} {f.healed - t_start:7.1f}  {f.kind:<10} {f.target:<16} "
                     f"{'-' if r is None else '%.1f' % r}")
    lines += ["", "client errors (reconnections) per worker:"]
    for w in workers:
        lines.append(f"  {w.name}: sessions {w.session}, {dict(w.errors)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["docker", "netns"], default="docker")
    ap.add_argument("--faults", type=int, default=10, help="faults to inject (one at a time)")
    ap.add_argument("--duration", type=float, default=0, help="stop injecting after this many seconds (0: no limit)")
    ap.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
    ap.add_argument("--kinds", default="", help="comma-separated fault kinds (default: all the back end has)")
    ap.add_argument("--fault-seconds", default="10-30", help="how long each fault lasts, MIN-MAX")
    ap.add_argument("--gap-seconds", default="10-20", help="quiet time between faults, MIN-MAX")
    ap.add_argument("--rate", type=float, default=100, help="publishes per second per publisher (0: as fast as confirms come)")
    ap.add_argument("--recovery-limit", type=float, default=90, help="seconds the cluster may take to serve after the final heal")
    ap.add_argument("--drain-limit", type=float, default=300,
                    help="seconds the consumers may take to empty the queues once publishing stops")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--image", default="warren:dev")
    ap.add_argument("--remove-image", action="store_true", help="docker rmi the image at the end")
    ap.add_argument("--warren-bin", default=None)
    ap.add_argument("--disk-mb", type=int, default=256, help="size of the disk-full node's tmpfs")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    rng = random.Random(args.seed)
    out = args.out or os.path.join("target", "faults", time.strftime("%Y%m%d-%H%M%S") + f"-{args.queue_type}")
    os.makedirs(out, exist_ok=True)
    fmin, fmax = (float(x) for x in args.fault_seconds.split("-"))
    gmin, gmax = (float(x) for x in args.gap_seconds.split("-"))

    backend = (DockerBackend if args.backend == "docker" else NetnsBackend)(args)
    kinds = [k for k in args.kinds.split(",") if k] or backend.kinds
    for k in kinds:
        if k not in backend.kinds:
            sys.exit(f"fault kind {k} is not one the {args.backend} back end has: {backend.kinds}")

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    history = History()
    stop_pub, stop_con, stop_dog = threading.Event(), threading.Event(), threading.Event()
    faults = []
    failed_injections = []
    workers = []
    ok = False
    try:
        log(f"{args.backend}: nodes {[n.ip for n in backend.nodes]}, queue type {args.queue_type}, "
            f"seed {args.seed}, output {out}")
        backend.start()
        nodes = backend.nodes
        queues = [f"faults-{args.queue_type}-{i}" for i in (1, 2, 3)]
        deadline = time.time() + 180
        declare(nodes, queues, args.queue_type, deadline)
        t = probe(nodes, queues, history, deadline)
        if t is None:
            raise RuntimeError("the cluster never served every queue through every node")
        log(f"cluster up: every node serves every queue")

        pubs = [Publisher(f"p{i + 1}", nodes, i, history, stop_pub, queues, args.rate) for i in range(3)]
        cons = [Consumer(f"c{i + 1}", nodes, i + 1, history, stop_con, queues[i]) for i in range(3)]
        workers = pubs + cons
        for w in workers:
            w.start()
        threading.Thread(target=watchdog, args=(pubs, stop_dog), daemon=True).start()
        t_start = time.time()
        stop_pub.wait(gmin)
        order = []
        for i in range(args.faults):
            if args.duration and time.time() - t_start > args.duration:
                break
            if not order:
                order = kinds[:]
                rng.shuffle(order)
            kind = order.pop()
            start = time.time()
            try:
                target, heal = getattr(backend, "fault_" + kind.replace("-", "_"))(rng)
            except Exception as e:  # noqa: BLE001 - a fault the machine refused: noted, not fatal
                log(f"fault {i + 1}: {kind} could not be injected: {e}; healing everything")
                failed_injections.append(f"{kind}: {e}")
                backend.heal_all()
                stop_pub.wait(rng.uniform(gmin, gmax))
                continue
            log(f"fault {i + 1}/{args.faults}: {kind} {target}")
            stop_pub.wait(rng.uniform(fmin, fmax))
            try:
                heal()
            except Exception as e:  # noqa: BLE001 - the full heal below tries again
                log(f"heal of {kind} failed: {e}; healing everything")
                backend.heal_all()
            healed = time.time()
            faults.append(chk.Fault(kind, target, start, healed))
            log(f"healed {kind} {target}")
            stop_pub.wait(rng.uniform(gmin, gmax))

        log("healing everything")
        backend.heal_all()
        t_heal = time.time()
        final_recovery = probe(nodes, queues, history, t_heal + args.recovery_limit)
        log(f"after the heal the cluster served again in {final_recovery}")
        stop_pub.wait(5)
        stop_pub.set()
        for p in pubs:
            p.join(60)
        stop_dog.set()
        log("publishers stopped; draining")
        drained = False
        quiet_since = None
        drain_deadline = time.time() + args.drain_limit
        while time.time() < drain_deadline:
            depths = queue_depths(nodes, queues)
            idle = all(time.time() - c.last > 3 for c in cons)
            if all(v == 0 for v in depths.values()) and idle:
                quiet_since = quiet_since or time.time()
                if time.time() - quiet_since > 5:
                    drained = True
                    break
            else:
                quiet_since = None
            if int(time.time()) % 10 == 0:
                log(f"draining: messages per queue {depths}, consumers last got one "
                    f"{[round(time.time() - c.last, 1) for c in cons]} s ago; sessions "
                    f"{[(c.session, dict(c.errors)) for c in cons]}")
                for n in nodes:
                    try:
                        log(n.name, [(q["name"], q.get("leader"), q.get("online"), q.get("consumers"),
                                      q.get("messages_ready"), q.get("messages_unacknowledged"))
                                     for q in http_get(n, "/api/queues")])
                    except Exception as e:  # noqa: BLE001
                        log(n.name, repr(e))
            time.sleep(1)
        if not drained:
            log(f"queues not drained: {queue_depths(nodes, queues)}")
        stop_con.set()
        for c in cons:
            c.join(30)
        if not drained:  # what the consumers could not get: basic.get through every node
            swept = drain_sweep(nodes, queues, history)
            log(f"consumers stopped; the sweep found {swept} more")
        t_end = time.time()

        result = chk.check(history.publishes, history.deliveries)
        recov = chk.recovery_times(faults, {w.name: sorted(history.ok[w.name]) for w in workers}, until=t_heal)
        stats = chk.per_fault_kind(faults, [p for p in history.publishes if p.publisher != "probe"], result.lost)
        text = report(args, result, faults, recov, final_recovery, stats, workers, t_start, t_end, drained)
        if failed_injections:
            text += "\nfaults that could not be injected:\n" + "".join(f"  {x}\n" for x in failed_injections)
        with open(os.path.join(out, "report.txt"), "w") as f:
            f.write(text)
        print(text, flush=True)
        with open(os.path.join(out, "history.json"), "w") as f:
            json.dump({"publishes": [p.__dict__ for p in history.publishes],
                       "deliveries": [d.__dict__ for d in history.deliveries],
                       "faults": [f.__dict__ for f in faults]}, f)
        if not args.no_plot:
            try:
                plot(os.path.join(out, "throughput.png"), history, faults, t_start, t_end)
            except ImportError as e:
                log(f"no plot: {e}")
        ok = result.valid and result.ordered and drained and final_recovery is not None
        print(f"RESULT: {'PASS' if ok else 'FAIL'} (valid={result.valid} ordered={result.ordered} "
              f"drained={drained} recovered={final_recovery is not None}); report in {out}", flush=True)
    except KeyboardInterrupt as e:
        log(f"interrupted: {e}")
    except Exception as e:  # noqa: BLE001
        log(f"run failed: {e!r}")
    finally:
        stop_pub.set()
        stop_con.set()
        stop_dog.set()
        try:
            backend.heal_all()
        except Exception:  # noqa: BLE001
            pass
        try:
            backend.logs(out)
        except Exception as e:  # noqa: BLE001
            log(f"logs: {e}")
        backend.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
