"""A three-node Warren cluster of the suite's own, on free loopback ports, from run.sh's binary
(WARREN_BIN), for the duration of the suite."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, name, amqp, http, process, log):
        self.name, self.amqp, self.http, self.process, self.log = name, amqp, http, process, log

    @property
    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.amqp}/%2F"

    def nodes(self):
        """The cluster as this node's /api/nodes shows it: {name: running}."""
        import base64
        import json
        request = urllib.request.Request(f"http://127.0.0.1:{self.http}/api/nodes")
        token = base64.b64encode(b"guest:guest").decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5) as answer:
            return {n["name"]: n["running"] for n in json.load(answer)}


@pytest.fixture(scope="session")
def cluster():
    binary = os.environ.get("WARREN_BIN")
    if os.environ.get("COMPAT_BROKER") != "warren" or not binary:
        pytest.skip("needs a Warren binary (COMPAT_BROKER=warren)")
    base = tempfile.mkdtemp(prefix="warren-cluster-")
    names = ["n1", "n2", "n3"]
    link_ports = [free_port() for _ in names]
    peers = ",".join(f"{n}@127.0.0.1:{p}" for n, p in zip(names, link_ports))
    env = dict(os.environ, WARREN_CLUSTER_SECRET="compat-suite-cookie", RUST_LOG="warn")
    nodes = []
    try:
        for name, link in zip(names, link_ports):
            amqp, http = free_port(), free_port()
            log = open(os.path.join(base, f"{name}.log"), "wb")
            process = subprocess.Popen(
                [binary, "server", "--node-name", name,
                 "--amqp-listen", f"127.0.0.1:{amqp}", "--http-listen", f"127.0.0.1:{http}",
                 "--cluster-listen", f"127.0.0.1:{link}", "--cluster-peers", peers,
                 "--data-dir", os.path.join(base, name)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            nodes.append(Node(name, amqp, http, process, log))
        deadline = time.monotonic() + 60
        for node in nodes:
            while True:
                try:
                    if node.nodes() == {n: True for n in names}:
                        break
                except OSError:
                    pass
                assert node.process.poll() is None, f"{node.name} exited"
                assert time.monotonic() < deadline, f"{node.name} did not see the cluster form"
                time.sleep(0.2)
        yield nodes
    finally:
        for node in nodes:
            if node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
            node.log.close()
        shutil.rmtree(base, ignore_errors=True)
