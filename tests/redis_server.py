"""A real ``redis-server`` for the tests: on 127.0.0.1, a free port, no disk, its own directory.

``RedisServer()`` starts one and waits until it answers; ``stop()`` takes it away (SIGKILL: an
outage, not a goodbye), ``start()`` brings it back on the same port, empty, as a Redis without
persistence restarted by its supervisor would be. ``close()`` at the end of a test.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from typing import Optional

from conftest import LOCAL, free_port, require

STARTED_WITHIN = 10.0


class RedisServer:
    def __init__(self, port: Optional[int] = None) -> None:
        self.program = require("redis-server")
        self.port = port or free_port()
        self.url = f"redis://{LOCAL}:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="redis-test-")
        self._process: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        """Run it (again, empty) and wait until it answers PING."""
        assert self._process is None, "already running"
        self._process = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", LOCAL, "--save", "", "--appendonly", "no",
             "--dir", self._dir.name, "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTED_WITHIN
        while not self.ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill it: its clients see the connection drop, as in a crash."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def ping(self) -> bool:
        """Whether it answers (a plain RESP PING over TCP)."""
        try:
            with socket.create_connection((LOCAL, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        """One command (inline form, words without spaces); its raw reply, for looking into the state."""
        with socket.create_connection((LOCAL, self.port), timeout=2) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            time.sleep(0.05)
            return sock.recv(65536)
