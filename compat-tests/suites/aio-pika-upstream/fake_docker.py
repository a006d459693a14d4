"""A stand-in for the Docker Engine API, for aio-pika's own tests (see run-suite.sh).

aio-pika's tests/conftest.py finds its broker only through Docker: pytest_configure refuses to
run unless $DOCKER_HOST (or /var/run/docker.sock) accepts a connection, and the session fixture
`rabbitmq_container` pulls and runs the image `mosquito/aiormq-rabbitmq` and reads the host ports
of 5672/tcp and 5671/tcp from `GET /containers/ID/json` (tests/docker_client.py, plain HTTP over
the Unix socket). This program answers exactly the calls tests/docker_client.py makes, on a Unix
socket that run-suite.sh names in DOCKER_HOST, so the tests run unmodified:

- A container asking for 5672/tcp *and* 5671/tcp (the session fixture `rabbitmq_container`) is
  the broker under test: 5672/tcp is AMQP_URL's port, 5671/tcp the broker's AMQPS port if run.sh
  knows one (COMPAT_TLS_PORT; the TLS tests are skipped all the same, see skips/).
- A container asking for 5672/tcp only (the fixture `recovery_broker` of
  tests/test_robust_recovery.py, which kills, restarts and `rabbitmqctl stop_app`s its broker) is
  a broker of its own, a fresh process on free loopback ports with its own data dir:
    --own-broker warren     $WARREN_BIN server; `kill` is SIGKILL, `stop` SIGTERM, `start` runs
                            it again on the same ports and data dir; `rabbitmqctl stop_app` is
                            emulated by SIGTERM (Warren closes every connection with 320
                            CONNECTION_FORCED and exits, as stop_app closes them with 320) and
                            `start_app` by starting it again and waiting for its AMQP port.
    --own-broker rabbitmq   a private RabbitMQ node from /usr/lib/rabbitmq/bin (as run.sh's
                            --broker rabbitmq), its name, ports, mnesia and logs its own;
                            `rabbitmqctl CMD` runs the real rabbitmqctl against it.
    --own-broker none       refused (HTTP 500); run-suite.sh skips those tests then.
  Own brokers run in this program's process group (run.sh ends the suite's group on a timeout)
  and are stopped when it exits.

Any other call is answered 404, and logged, so a new upstream call shows up in the log.

    fake_docker.py --socket PATH --amqp-url URL --own-broker KIND --workdir DIR [--tls-port N]
"""

import argparse
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

RMQ_LIB = "/usr/lib/rabbitmq/bin"
ARGS = None
LOCK = threading.RLock()
CONTAINERS = {}
EXECS = {}
EPMD_WAS_RUNNING = None


def log(msg):
    print(f"fake-docker: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if proc is not None and proc.poll() is not None:
                return False
            time.sleep(0.2)
    return False


class Container:
    def __init__(self, image, ports):
        self.id = uuid.uuid4().hex
        self.image = image
        self.ports = ports
        self.kind = "shared" if "5671/tcp" in ports else ARGS.own_broker
        self.proc = None
        self.host_ports = {}
        self.dir = os.path.join(ARGS.workdir, self.id[:12])
        if self.kind == "shared":
            u = urllib.parse.urlsplit(ARGS.amqp_url)
            self.host_ports["5672/tcp"] = u.port or 5672
            if ARGS.tls_port:
                self.host_ports["5671/tcp"] = ARGS.tls_port
        elif self.kind == "warren":
            self.host_ports["5672/tcp"] = free_port()
            self.http_port = free_port()
            os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        elif self.kind == "rabbitmq":
            self.host_ports["5672/tcp"] = free_port()
            self.dist_port = free_port()
            self.node = f"aio-pika-own-{self.id[:8]}@localhost"
            for d in ("home", "mnesia", "log"):
                os.makedirs(os.path.join(self.dir, d), exist_ok=True)
            os.chmod(os.path.join(self.dir, "home"), 0o700)
            with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
                f.write("loopback_users.guest = true\ndisk_free_limit.absolute = 10MB\n"
                        "log.console = false\nlog.file.level = info\n")
            with open(os.path.join(self.dir, "advanced.config"), "w") as f:
                f.write("[].\n")
            with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
                f.write("[].\n")
            open(os.path.join(self.dir, "rabbitmq-env.conf"), "w").close()
        else:
            raise RuntimeError(
                "fake docker: this run has no broker of its own to give a test (--own-broker none)")

    # ------------------------------------------------------------ processes
    def rmq_env(self):
        d = self.dir
        env = dict(os.environ)
        env.update(
            HOME=f"{d}/home", ERL_CRASH_DUMP=f"{d}/erl_crash.dump", RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.host_ports["5672/tcp"]),
            RABBITMQ_DIST_PORT=str(self.dist_port), RABBITMQ_MNESIA_BASE=f"{d}/mnesia",
            RABBITMQ_LOG_BASE=f"{d}/log", RABBITMQ_PID_FILE=f"{d}/rabbitmq.pid",
            RABBITMQ_CONFIG_FILE=f"{d}/rabbitmq.conf",
            RABBITMQ_ADVANCED_CONFIG_FILE=f"{d}/advanced.config",
            RABBITMQ_CONF_ENV_FILE=f"{d}/rabbitmq-env.conf",
            RABBITMQ_ENABLED_PLUGINS_FILE=f"{d}/enabled_plugins",
        )
        return env

    def running(self):
        return self.kind == "shared" or (self.proc is not None and self.proc.poll() is None)

    def start(self):
        if self.kind == "shared" or self.running():
            return
        logf = open(os.path.join(self.dir, "broker.log"), "ab")
        if self.kind == "warren":
            cmd = [ARGS.warren_bin, "server",
                   "--amqp-listen", f"127.0.0.1:{self.host_ports['5672/tcp']}",
                   "--http-listen", f"127.0.0.1:{self.http_port}",
                   "--data-dir", os.path.join(self.dir, "data")]
            env = None
        else:
            global EPMD_WAS_RUNNING
            if EPMD_WAS_RUNNING is None:
                EPMD_WAS_RUNNING = subprocess.run(["epmd", "-names"], capture_output=True).returncode == 0
            cmd = [f"{RMQ_LIB}/rabbitmq-server"]
            env = self.rmq_env()
        log(f"container {self.id[:12]}: starting {self.kind} on 127.0.0.1:{self.host_ports['5672/tcp']}")
        # rabbitmq-server is a script that runs the Erlang VM as its child: that node gets a
        # process group of its own, ended as a whole. Warren is one process, kept in this
        # program's group.
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=self.kind == "rabbitmq")
        logf.close()

    def signal_stop(self, sig, timeout):
        if self.kind == "shared" or not self.running():
            return
        log(f"container {self.id[:12]}: {signal.Signals(sig).name} to {self.kind} (pid {self.proc.pid})")
        if self.kind == "rabbitmq" and sig == signal.SIGTERM:
            self.rabbitmqctl(["stop", f"{self.dir}/rabbitmq.pid"], timeout)
        self.send(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.proc.wait()
        if self.kind == "rabbitmq":
            self.send(signal.SIGKILL)  # what is left of the node's group (the VM, if the script went first)

    def send(self, sig):
        try:
            if self.kind == "rabbitmq":
                os.killpg(self.proc.pid, sig)
            elif self.proc.poll() is None:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def rabbitmqctl(self, args, timeout=60):
        try:
            r = subprocess.run([f"{RMQ_LIB}/rabbitmqctl", "-n", self.node, *args],
                               env=self.rmq_env(), cwd=self.dir, capture_output=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"container {self.id[:12]}: rabbitmqctl {args} timed out")
            return 124
        if r.returncode != 0:
            log(f"container {self.id[:12]}: rabbitmqctl {args} exited {r.returncode}: "
                f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}")
        return r.returncode

    def exec(self, cmd):
        """Runs a container command (only `rabbitmqctl stop_app|start_app`); its exit code."""
        if self.kind == "shared":
            log(f"container {self.id[:12]}: refusing exec {cmd} on the broker under test")
            return 126
        if len(cmd) != 2 or cmd[0] != "rabbitmqctl":
            log(f"container {self.id[:12]}: unsupported exec {cmd}")
            return 127
        if self.kind == "rabbitmq":
            return self.rabbitmqctl([cmd[1]])
        if cmd[1] == "stop_app":
            self.signal_stop(signal.SIGTERM, 15)
            return 0
        if cmd[1] == "start_app":
            self.start()
            return 0 if wait_port(self.host_ports["5672/tcp"], 30, self.proc) else 1
        log(f"container {self.id[:12]}: no emulation of rabbitmqctl {cmd[1]} for Warren")
        return 127

    def remove(self):
        self.signal_stop(signal.SIGKILL, 10)

    def inspect(self):
        return {
            "Id": self.id,
            "Config": {"Image": self.image},
            "State": {"Running": self.running(), "Status": "running" if self.running() else "exited"},
            "NetworkSettings": {"Ports": {
                p: [{"HostIp": "127.0.0.1", "HostPort": str(self.host_ports[p])}]
                if p in self.host_ports else None
                for p in self.ports}},
        }


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def address_string(self):  # a Unix socket peer has no address
        return "unix"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client has read what it needed and gone (tests/docker_client.py)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else {}

    def container(self, cid):
        with LOCK:
            c = CONTAINERS.get(cid)
        if c is None:
            self.reply(404, {"message": f"No such container: {cid}"})
        return c

    def route(self, method):
        path = urllib.parse.urlsplit(self.path).path
        path = re.sub(r"^/v[0-9.]+/", "/", path)
        log(f"{method} {self.path}")
        if method == "GET" and path == "/_ping":
            return self.reply(200, "OK")
        if method == "POST" and path == "/images/create":
            return self.reply(200, {"status": "fake docker: nothing to pull"})
        if method == "POST" and path == "/containers/create":
            body = self.body()
            try:
                c = Container(body.get("Image", ""), list(body.get("ExposedPorts", {})))
            except RuntimeError as e:
                log(str(e))
                return self.reply(500, {"message": str(e)})
            with LOCK:
                CONTAINERS[c.id] = c
            log(f"container {c.id[:12]}: {c.kind} broker for {c.image} {c.ports}")
            return self.reply(201, {"Id": c.id, "Warnings": []})
        m = re.fullmatch(r"/containers/([0-9a-f]+)(/[a-z]+)?", path)
        if m:
            c = self.container(m.group(1))
            if c is None:
                return None
            action = m.group(2)
            if method == "GET" and action == "/json":
                return self.reply(200, c.inspect())
            if method == "POST" and action == "/start":
                c.start()
                return self.reply(204)
            if method == "POST" and action == "/kill":
                c.signal_stop(signal.SIGKILL, 10)
                return self.reply(204)
            if method == "POST" and action == "/stop":
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                c.signal_stop(signal.SIGTERM, int(q.get("t", ["10"])[0]))
                return self.reply(204)
            if method == "DELETE" and action is None:
                c.remove()
                with LOCK:
                    CONTAINERS.pop(c.id, None)
                return self.reply(204)
            if method == "POST" and action == "/exec":
                eid = uuid.uuid4().hex
                with LOCK:
                    EXECS[eid] = {"container": c, "cmd": self.body().get("Cmd", []),
                                  "Running": False, "ExitCode": None, "started": False}
                return self.reply(201, {"Id": eid})
        m = re.fullmatch(r"/exec/([0-9a-f]+)/(start|json)", path)
        if m:
            with LOCK:
                e = EXECS.get(m.group(1))
            if e is None:
                return self.reply(404, {"message": "No such exec instance"})
            if method == "POST" and m.group(2) == "start":
                self.body()

                def run():
                    code = e["container"].exec(e["cmd"])
                    with LOCK:
                        e["ExitCode"], e["Running"] = code, False
                    log(f"exec {e['cmd']}: exit code {code}")

                with LOCK:
                    e["Running"], e["started"] = True, True
                threading.Thread(target=run, daemon=True).start()
                return self.reply(200)
            if method == "GET" and m.group(2) == "json":
                with LOCK:
                    return self.reply(200, {"ID": m.group(1), "Running": e["Running"],
                                            "ExitCode": e["ExitCode"]})
        log(f"unsupported call: {method} {self.path}")
        return self.reply(404, {"message": f"fake docker: unsupported {method} {path}"})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def shutdown(*_):
    with LOCK:
        containers = list(CONTAINERS.values())
        CONTAINERS.clear()
    for c in containers:
        try:
            c.remove()
        except Exception as e:  # noqa: BLE001 - stop the others all the same
            log(f"container {c.id[:12]}: stopping failed: {e}")
    if EPMD_WAS_RUNNING is False:
        # A node of ours started epmd; stop it again if no node uses it any more.
        names = subprocess.run(["epmd", "-names"], capture_output=True, text=True).stdout
        if not re.search(r"^name ", names, re.M):
            subprocess.run(["epmd", "-kill"], capture_output=True)
    try:
        os.unlink(ARGS.socket)
    except OSError:
        pass
    os._exit(0)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--amqp-url", required=True)
    p.add_argument("--own-broker", choices=["warren", "rabbitmq", "none"], required=True)
    p.add_argument("--warren-bin", default=os.environ.get("WARREN_BIN", ""))
    p.add_argument("--workdir", required=True)
    p.add_argument("--tls-port", type=int, default=0)
    ARGS = p.parse_args()
    if ARGS.own_broker == "warren" and not os.access(ARGS.warren_bin, os.X_OK):
        p.error("--own-broker warren needs WARREN_BIN")
    os.makedirs(ARGS.workdir, exist_ok=True)
    try:
        os.unlink(ARGS.socket)
    except OSError:
        pass
    server = Server(ARGS.socket, Handler)
    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log(f"listening on {ARGS.socket}; own brokers: {ARGS.own_broker}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Exit with the hook that started this (run-suite.sh also stops it on exit, with SIGTERM).
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    log("the hook is gone; stopping")
    shutdown()


if __name__ == "__main__":
    main()
