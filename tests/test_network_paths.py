"""Calls between two machines for real (tests/netlab.py): two public hosts, two hosts behind
cone NATs with STUN, two behind symmetric NATs with TURN. Each a full call of two
``python -m peer`` processes (video both ways, chat both ways), and the path the peer
reports (``--stats``) is the one the network allows.

The three calls run at once in one lab (a module fixture starts them all): the wall time is
about that of one."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from conftest import Process
from netlab import PREFIX, Host, Netlab, check_tools, namespaces

PEER = ["--video", "testsrc", "--fps", "10", "--video-size", "160x120", "--audio", "none", "--no-window"]
TURN_USER, TURN_PASSWORD = "netlab", "not-a-real-secret-1"
CONNECTED_WITHIN = 30
"""Seconds a call in a lab may take to connect (about 1 to 3 s are usual; the machine is shared)."""


@dataclass
class Call:
    """Two peers in one room of the lab, and when they were started."""

    room: str
    peers: tuple[Process, Process]
    stats: tuple[Path, Path]
    started: float = field(default_factory=time.monotonic)

    @property
    def names(self) -> tuple[str, str]:
        return self.peers[0].name, self.peers[1].name

    def both(self):
        """(peer, its stats file, the other's name), for each side."""
        (a, b), (sa, sb) = self.peers, self.stats
        return ((a, sa, b.name), (b, sb, a.name))


def start_call(hosts: tuple[Host, Host], names: tuple[str, str], room: str, server: str, folder: Path,
               *flags: str, flags_b: Optional[tuple[str, ...]] = None) -> Call:
    """``python -m peer`` on each host, in ``room``; ``flags`` for both (``flags_b``, if
    given, for the second instead)."""
    stats = (folder / f"{names[0]}.jsonl", folder / f"{names[1]}.jsonl")
    peers = tuple(
        host.peer("--room", room, "--server", server, *PEER, "--stats", str(stat), *own, name=name)
        for host, name, stat, own in zip(hosts, names, stats, (flags, flags if flags_b is None else flags_b)))
    return Call(room, peers, stats)  # type: ignore[arg-type]


def connected(call: Call, times: int = 1, timeout: float = CONNECTED_WITHIN) -> float:
    """Wait for "connected to" on both sides (the ``times``-th); seconds since the call started."""
    for peer, _, other in call.both():
        peer.expect(f"^connected to {other};", timeout=timeout, times=times)
    return time.monotonic() - call.started


def stats_lines(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def reported_path(call: Call, timeout: float = 10) -> tuple[str, str]:
    """The path each side's newest ``--stats`` line reports (waiting for a known one)."""
    paths = []
    for peer, stats, _ in call.both():
        deadline = time.monotonic() + timeout
        while not (lines := [line for line in stats_lines(stats) if line["path"] != "unknown"]):
            assert time.monotonic() < deadline, f"{peer.name}: no --stats line with a known path:\n{peer.output}"
            time.sleep(0.2)
        paths.append(lines[-1]["path"])
    return paths[0], paths[1]


def chat_both_ways(call: Call, text: str = "hello") -> None:
    for peer, _, other in call.both():
        peer.send(f"{text} from {peer.name}")
    for peer, _, other in call.both():
        peer.expect(rf"^\[{other}\] {text} from {other}$", timeout=15)


def full_call(call: Call, path: str) -> float:
    """Connected, video both ways, chat both ways, and ``path`` reported by both; the
    seconds it took to connect."""
    took = connected(call)
    for peer, _, other in call.both():
        peer.expect(f"^video from {other} arrives$", timeout=15)
    chat_both_ways(call)
    assert reported_path(call) == (path, path), "\n\n".join(p.output for p in call.peers)
    for peer in call.peers:
        assert TURN_PASSWORD not in peer.output, "a TURN password in the output"
    return took


@dataclass
class Lab:
    lab: Netlab
    server: str
    turn: object
    calls: dict[str, Future]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One lab, three calls started at once: public, cone NATs with STUN, symmetric NATs with TURN.
    ``calls[case]`` is a future of (the call, the seconds it took to connect)."""
    check_tools()
    folder = tmp_path_factory.mktemp("paths")
    with Netlab() as network, ThreadPoolExecutor(3) as pool:
        server = network.signaling()
        turn = network.turn(user=TURN_USER, password=TURN_PASSWORD)
        relayed = ("--turn", turn.url, "--turn-user", TURN_USER, "--turn-password", TURN_PASSWORD)
        cases = {
            "direct": ((network.public_host("pa"), network.public_host("pb")), ()),
            "through NAT": ((network.nat_host("ca"), network.nat_host("cb")), ("--stun", turn.stun_url)),
            "relayed": ((network.nat_host("sa", "symmetric"), network.nat_host("sb", "symmetric")), relayed),
        }
        calls = {path: start_call(hosts, (f"{hosts[0].name}-peer", f"{hosts[1].name}-peer"), f"room-{hosts[0].name}",
                                  server, folder, *flags)
                 for path, (hosts, flags) in cases.items()}
        yield Lab(network, server, turn, {path: pool.submit(full_call, call, path) for path, call in calls.items()})


def check(lab: Lab, path: str) -> None:
    took = lab.calls[path].result(timeout=2 * CONNECTED_WITHIN)
    print(f"{path}: connected {took:.1f} s after the peers started")


def test_public_to_public_is_direct(lab):
    check(lab, "direct")


def test_cone_nats_with_stun_go_through_nat(lab):
    check(lab, "through NAT")


def test_symmetric_nats_with_turn_are_relayed(lab):
    check(lab, "relayed")


def test_the_lab_leaves_nothing_behind():
    """A lab deletes its namespaces when it ends, also when the test in it fails; and those of
    a run that died (its process gone) when the next lab starts."""
    check_tools()
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"{PREFIX}{gone.pid}.1-left"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    with pytest.raises(RuntimeError, match="a test that fails"):
        with Netlab() as lab:
            lab.nat_host("a", "symmetric").delay(10)
            made = [ns for ns in namespaces() if ns.startswith(lab.prefix)]
            assert stale not in namespaces()
            raise RuntimeError("a test that fails")
    assert len(made) == 3, made
    assert not [ns for ns in namespaces() if ns.startswith(lab.prefix)]
