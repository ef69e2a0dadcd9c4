"""Real processes on 127.0.0.1: a signaling server, peers, an X server. Nothing is mocked."""

import cv2  # noqa: F401  -- before av: see FIELD-NOTES on OpenCV's import-order hang

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "127.0.0.1"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
]
# Peers in tests never reach a sound server of the machine (a developer's speakers and microphone):
# only the one a test starts with the `sound` fixture, whose env sets PULSE_SERVER again.
os.environ["PULSE_SERVER"] = "unix:/nonexistent/peer-tests-have-no-sound-server"
CONNECTED_WITHIN = 20
"""Seconds a call in a test may take to connect; about 2 s is usual."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return sock.getsockname()[1]


def missing(message: str) -> None:
    """Something a test needs is not installed: fail in CI (which must have it), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require(program: str) -> str:
    """The path of ``program``; see ``missing`` for when it is not installed."""
    path = shutil.which(program)
    if path is None:
        missing(f"{program} is not installed (.ci/run installs it)")
    return path


class Process:
    """A child process whose output lines are collected on a thread and can be awaited."""

    def __init__(self, args: list[str], env: Optional[dict] = None, name: str = "", *,
                 cwd: Optional[Path] = None, stdin: Any = subprocess.PIPE) -> None:
        self.name = name or args[2]
        self.args = args
        self.lines: list[str] = []
        self._new = queue.Queue()
        self._finished = threading.Event()
        self.proc = subprocess.Popen(
            args, cwd=cwd or ROOT, env=env or child_env(), stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._new.put(line)
        self._finished.set()
        self._new.put(None)

    def expect(self, pattern: str, timeout: float = 20, times: int = 1) -> re.Match:
        """Wait until ``times`` output lines (seen before or arriving) match ``pattern``;
        return the last of them."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            finished = self._finished.is_set()  # read first: lines are all in once it is set
            matches = [match for line in list(self.lines) if (match := regex.search(line))]
            if len(matches) >= times:
                return matches[times - 1]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or finished:
                break
            try:
                self._new.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                pass
        count = "" if times == 1 else f" {times} times"
        raise AssertionError(
            f"{self.name}: no line matching {pattern!r}{count} within {timeout} s; output:\n" + self.output)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def end_input(self) -> None:
        """Close the pipe that is the process's stdin: for a peer, the end of chat input, not a leave."""
        self.proc.stdin.close()

    def interrupt(self) -> None:
        """Ctrl-C: how a person (or a service manager's SIGINT) makes a peer leave."""
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout} s; output:\n{self.output}") from None

    def stop(self, signum: int = signal.SIGTERM, grace: float = 5) -> None:
        """Ask the process to end with ``signum``; kill it after ``grace`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def child_env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid``, in KiB: what the memory ceilings of the attack tests bound."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


class Server(Process):
    def __init__(self, *flags: str, env: Optional[dict] = None, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.url = f"http://{LOCAL}:{self.port}"
        super().__init__([sys.executable, "-m", "signaling", "--host", LOCAL, "--port", str(self.port), *flags],
                         env=env, name="signaling")
        wait_healthy(self.url)


def wait_healthy(url: str, timeout: float = 15) -> dict:
    import json
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no server answered at {url}") from None
            time.sleep(0.1)


class Relay:
    """A TCP relay in front of a server. ``cut()`` drops every connection through it, as a
    network blip would for the clients behind it alone; new connections pass again. ``hold()``
    also turns new connections away until ``release()``, as a network that stays down does:
    the clients behind it keep trying to reconnect."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server((LOCAL, 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://{LOCAL}:{self.port}"
        self._links: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            _shut(link)

    def hold(self) -> None:
        self._open.clear()
        self.cut()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                if not self._open.is_set():
                    client.close()
                    continue
                upstream = socket.create_connection((LOCAL, self.target_port))
            except OSError:
                return
            with self._lock:
                self._links += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        _shut(sink)


def _shut(link: socket.socket) -> None:
    try:
        link.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@pytest.fixture
def server():
    started = Server()
    yield started
    started.stop()


@pytest.fixture
def server_of_three():
    """Our server with rooms of three: a victim, a bystander and an attacker."""
    started = Server("--room-size", "3")
    yield started
    started.stop()


@pytest.fixture
def processes():
    """Start peers with ``processes.peer(...)``; all are stopped at the end of the test."""
    started: list[Process] = []

    class Starter:
        def peer(self, *flags: str, name: str, env: Optional[dict] = None, **options: Any) -> Process:
            """``options``: ``cwd``, ``stdin`` (a terminal's file descriptor, say) as for ``Process``."""
            process = Process([sys.executable, "-m", "peer", "--name", name, *flags], env=env, name=name, **options)
            started.append(process)
            return process

        def add(self, process: Process) -> Process:
            started.append(process)
            return process

    yield Starter()
    for process in started:
        process.stop()


def classic_relay(processes) -> str:
    """Start the classic relay of tests/classic.py (a tutorial's server: bare-string join,
    broadcast messages, nothing more); its URL."""
    port = free_port()
    relay = processes.add(Process([sys.executable, str(ROOT / "tests" / "classic.py"), str(port)],
                                  name="classic-relay"))
    relay.expect("ready")
    return f"http://{LOCAL}:{port}"


@pytest.fixture(params=["our-server", "classic-relay"])
def any_server(request, processes):
    """Our signaling server, then the classic relay: a test of the classic pattern runs on both."""
    if request.param == "our-server":
        server = processes.add(Server())
        return server.url
    return classic_relay(processes)


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium under Playwright, headless, with fake camera and microphone."""
    executable = require("chromium")
    if sync_playwright is None:
        missing("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        # launch() gives every browser a new, empty user-data-dir and deletes it afterwards.
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class Xvfb:
    """A virtual X display of ``size`` ("WxH"): ``display`` (":N") for DISPLAY, until ``stop()``."""

    def __init__(self, size: str = "1280x800") -> None:
        binary = require("Xvfb")
        number = next(n for n in range(91, 160) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                      and not Path(f"/tmp/.X{n}-lock").exists())
        self.display = f":{number}"
        self.proc = subprocess.Popen([binary, self.display, "-screen", "0", f"{size}x24", "-nolisten", "tcp"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                pytest.fail(f"Xvfb did not start on {self.display}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def xvfb():
    """A virtual X display: its name (":N") for DISPLAY."""
    started = Xvfb()
    yield started.display
    started.stop()


@pytest.fixture
def sound():
    """A PulseAudio server of this test's own, with a ``speaker`` and a ``mic`` null sink
    (tests/soundserver.py); its ``env`` points a peer at it."""
    from soundserver import SoundServer

    started = SoundServer(require("pulseaudio"))
    require("parec")
    yield started
    started.stop()


@pytest.fixture
def netlab():
    """The test network of tests/netlab.py (namespaces, NAT routers, coturn, bad links): a
    ``Netlab``, deleted with all it started at the end of the test. Needs root, iptables and
    turnserver (see ``missing``)."""
    from netlab import Netlab, check_tools

    check_tools()
    with Netlab() as lab:
        yield lab


@pytest.fixture
def redis_server():
    """A real redis-server of the test's own on 127.0.0.1 (``tests/redis_server.py``)."""
    from redis_server import RedisServer
    server = RedisServer()
    yield server
    server.close()
