"""Several signaling nodes on one Redis, and nginx in front of them, for tests/test_nodes.py.

``Nodes(redis_url, 3)`` starts three ``python -m signaling --redis URL --node-name nodeK``
processes at once and waits until each answers /healthz; ``Nginx(ports)`` runs Debian's nginx
with the repository's ``deploy/nginx.conf`` (its node, listen and path lines rewritten, as its
header says) in a directory of its own on a free port. Everything is real and on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import signal
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from conftest import LOCAL, ROOT, Process, Server, free_port, require, wait_healthy

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NODE_FLAGS = ("--max-per-address", "10000", "--join-rate", "10000", "--join-burst", "10000")
"""Every client of a test comes from 127.0.0.1 (and behind nginx every client is nginx): the
per-address limits would count them all together (docs/deploy.md says the same for a balancer)."""


def health(url: str, timeout: float = 2) -> tuple[int, dict[str, Any]]:
    """GET ``url``/healthz: its HTTP status and its JSON, a 503 as much as a 200."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def until(check: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    """Call ``check()`` until it returns something true; that. AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {result!r})")
        time.sleep(every)


class Nodes:
    """Signaling nodes on one Redis, started in parallel; ``stop()`` ends those still running."""

    def __init__(self, redis_url: str, count: int, *flags: str) -> None:
        self.redis_url = redis_url
        self.nodes: list[Server] = []
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(self._start, f"node{k}", flags) for k in range(1, count + 1)]
        failures = [future.exception() for future in futures if future.exception() is not None]
        self.nodes = [future.result() for future in futures if future.exception() is None]
        if failures:
            self.stop()
            raise failures[0]  # type: ignore[misc]

    def _start(self, name: str, flags: tuple[str, ...]) -> Server:
        node = Server("--redis", self.redis_url, "--node-name", name, *NODE_FLAGS, *flags)
        node.name = name
        return node

    def __getitem__(self, index: int) -> Server:
        return self.nodes[index]

    def __iter__(self):
        return iter(self.nodes)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def healths(self) -> list[dict[str, Any]]:
        """Each running node's /healthz (HTTP status aside)."""
        return [health(node.url)[1] for node in self.nodes if node.proc.poll() is None]

    def connections(self) -> dict[str, int]:
        """The Socket.IO sessions each running node holds now, by node name: where clients are."""
        return {node.name: health(node.url)[1]["connections"] for node in self.nodes if node.proc.poll() is None}

    def kill(self, node: Server) -> None:
        """SIGKILL: the node vanishes with no goodbye, as a crashed machine's would."""
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(5)

    def stop(self) -> None:
        with ThreadPoolExecutor(max(len(self.nodes), 1)) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))

    def __enter__(self) -> "Nodes":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def nginx_conf(text: str, node_ports: list[int], port: int, directory: Path) -> str:
    """deploy/nginx.conf rewritten as its header says: the nodes, the listen address, and the
    places nginx writes, moved under ``directory``."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.rstrip().endswith("# node"):
            if not lines[-1].rstrip().endswith("# node"):  # the first of a group: put ours in its place
                lines += [re.sub(r"server \S+", f"server {LOCAL}:{node_port}", line) for node_port in node_ports]
            continue
        if line.rstrip().endswith("# listen"):
            line = re.sub(r"listen \S+;", f"listen {LOCAL}:{port};", line)
        lines.append(line.replace("/var/log/nginx/", f"{directory}/").replace("/var/lib/nginx/", f"{directory}/"))
    return "\n".join(lines) + "\n"


class Nginx:
    """nginx from deploy/nginx.conf in front of ``node_ports``, on a free port of 127.0.0.1."""

    def __init__(self, node_ports: list[int], port: Optional[int] = None) -> None:
        program = require("nginx")
        self._dir = tempfile.TemporaryDirectory(prefix="nginx-test-")
        directory = Path(self._dir.name)
        directory.chmod(0o755)  # run as root, nginx's workers (www-data) use the temp directories in it
        self.port = port or free_port()
        self.url = f"http://{LOCAL}:{self.port}"
        self.conf = directory / "nginx.conf"
        self.conf.write_text(nginx_conf(NGINX_CONF.read_text(), node_ports, self.port, directory))
        self.process = Process([program, "-p", str(directory), "-c", str(self.conf),
                                "-g", f"daemon off; pid {directory}/nginx.pid; error_log stderr;"], name="nginx")
        try:
            wait_healthy(self.url)
        except AssertionError:
            self.stop()
            raise AssertionError(f"nginx did not start; its output:\n{self.process.output}") from None

    @property
    def access_log(self) -> str:
        path = Path(self._dir.name) / "signaling.access.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM, grace=3)  # nginx's fast stop: websockets are not waited for
        self._dir.cleanup()

    def __enter__(self) -> "Nginx":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
