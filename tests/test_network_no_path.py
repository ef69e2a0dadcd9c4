"""Two hosts that cannot reach each other (tests/netlab.py): each behind its own symmetric NAT,
with STUN and no TURN, and two more whose TURN relay carries nothing. Each side says within
10 s of joining that there is no network path, what was tried and what would help, counts its
tries as ``--retries`` says, and ends the call; never "lost", since nothing was connected.
And two public hosts in a call when one stops taking UDP: the silence is said within seconds,
the call is lost after ``peer.LOST_AFTER`` seconds of it, and its new connection finds no path,
which is said as the path it had being gone.

The cases run at once in one lab (about 35 s in all)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Process
from netlab import Host, Netlab, check_tools
from peer import LOST_AFTER

PEER = ["--video", "testsrc", "--fps", "10", "--video-size", "160x120", "--audio", "none", "--no-window",
        "--retries", "1"]
TURN_USER, TURN_PASSWORD = "netlab", "not-a-real-secret-2"
SAID_WITHIN = 10
"""Seconds from joining to the "no network path" line (the issue's bound)."""
STARTED_WITHIN = 30
"""Seconds a peer may take to start and join on a shared machine."""
RELAY_PORTS = "49152:65535"
"""coturn's relay ports (its default range): what a relay sends leaves from one of them."""
BOTH_BEHIND_NATS = (r"could not reach {other}: no network path \(you are both behind NATs that need a TURN server; "
                    r"see --turn\); \d+ candidate pairs? tried \(ours: host, STUN; theirs: host, STUN\)")
RELAY_CARRIED_NOTHING = (r"could not reach {other}: no network path \(the TURN relay did not carry it; check the TURN "
                         r"server\); \d+ candidate pairs? tried \(ours: [^;]*TURN relay; theirs: [^)]*TURN relay\)")


def joined_at(peer: Process) -> float:
    peer.expect(r"^joined room ", timeout=STARTED_WITHIN)
    return time.monotonic()


def no_path_said(pair: tuple[Process, Process], said: str) -> list[float]:
    """Each side's seconds from the later join (when the call can begin) to the no-path line
    with its try, then the call ended with the same words. Watched from the start (the lines
    carry no times)."""
    with ThreadPoolExecutor(2) as pool:
        start = max(pool.map(joined_at, pair))
    took = []
    for peer, other in zip(pair, reversed(pair)):
        line = said.format(other=other.name)
        print(peer.expect(rf"^{line}; calling again \(try 1 of 1\)$", timeout=SAID_WITHIN + 5).group(0))
        took.append(time.monotonic() - start)
    for peer, other in zip(pair, reversed(pair)):
        peer.expect(rf"^{said.format(other=other.name)}; call ended \(gave up after 1 new connection: "
                    r"no network path\)$", timeout=SAID_WITHIN + 5)
        assert " lost " not in peer.output and "Traceback" not in peer.output, peer.output
        assert TURN_PASSWORD not in peer.output
    return took


def path_gone(pair: tuple[Process, Process], cut: Host) -> None:
    """Connected, video flowing both ways, then ``cut`` takes no UDP any more (signaling, over
    TCP, goes on): a path dead one way. The cut side hears nothing: it says so within seconds,
    and after ``LOST_AFTER`` seconds of it the path is lost on both sides (the other side still
    hears our media: it is told by the connection closing), and the new connection finds no path."""
    for peer, other in zip(pair, reversed(pair)):
        peer.expect(rf"^connected to {other.name}; .*; path: direct$", timeout=STARTED_WITHIN)
        peer.expect(rf"^video from {other.name} arrives$", timeout=STARTED_WITHIN)
    cut.run(["iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP"])
    pair[0].expect(rf"^connection to {pair[1].name} interrupted \(no answer for 2 s\)", 5)
    for peer, other in zip(pair, reversed(pair)):
        peer.expect(rf"^connection to {other.name} lost \(.+\); calling again \(try 1 of 1\)$", LOST_AFTER + 10)
    for peer, other in zip(pair, reversed(pair)):
        peer.expect(rf"^could not reach {other.name}: no network path \(the path the call had is gone: the network "
                    r"between you is down or changed\); .*; call ended \(gave up after 1 new connection: "
                    r"no network path\)$", timeout=SAID_WITHIN + 5)


def start(hosts: tuple[Host, Host], room: str, server: str, *flags: str) -> tuple[Process, Process]:
    return tuple(host.peer("--room", room, "--server", server, *PEER, *flags, name=f"{host.name}-peer")
                 for host in hosts)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def lab():
    """Both cases at once: ``lab[case]`` is a future of each side's seconds to the no-path line."""
    check_tools()
    with Netlab() as network, ThreadPoolExecutor(3) as pool:
        server = network.signaling()
        turn = network.turn(user=TURN_USER, password=TURN_PASSWORD)
        # The relay takes allocations but nothing it relays leaves the server (peers, or another relay).
        network.server_host().run(["iptables", "-A", "OUTPUT", "-p", "udp", "--sport", RELAY_PORTS, "-j", "DROP"])
        relayed = ("--turn", turn.url, "--turn-user", TURN_USER, "--turn-password", TURN_PASSWORD)
        nats = start((network.nat_host("na", "symmetric"), network.nat_host("nb", "symmetric")), "no-turn",
                     server, "--stun", turn.stun_url)
        dead_relay = start((network.nat_host("ra", "symmetric"), network.nat_host("rb", "symmetric")), "dead-relay",
                           server, "--stun", turn.stun_url, *relayed)
        public = (network.public_host("pa"), network.public_host("pb"))
        gone = start(public, "gone", server)
        yield {"nats": pool.submit(no_path_said, nats, BOTH_BEHIND_NATS),
               "relay": pool.submit(no_path_said, dead_relay, RELAY_CARRIED_NOTHING),
               "gone": pool.submit(path_gone, gone, public[0])}


def check(lab, case: str) -> None:
    took = lab[case].result(timeout=STARTED_WITHIN + 4 * SAID_WITHIN)
    print(f"{case}: no path said {took[0]:.1f} s and {took[1]:.1f} s after joining")
    assert max(took) < SAID_WITHIN, took


def test_two_symmetric_nats_without_turn_are_told_within_10_s(lab):
    check(lab, "nats")


def test_a_turn_relay_that_carries_nothing_is_named(lab):
    check(lab, "relay")


def test_a_call_whose_path_went_says_it_is_gone(lab):
    lab["gone"].result(timeout=STARTED_WITHIN + LOST_AFTER + 4 * SAID_WITHIN)
