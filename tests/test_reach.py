"""Which network path a call takes, and the answer when there is none (peer.reach, peer.events.NoPath):
unit tests of the verdict and its wording, without sockets; the path a call on 127.0.0.1 reports,
through the CLI's connected line and the API's ``Connected`` event. Calls between hosts that
cannot reach each other are in tests/test_network_no_path.py."""

import asyncio
import signal

import pytest

import peer
from conftest import LOCAL
from peer.cli import parse_args
from peer.events import NoPath
from peer.reach import NO_PATH_AFTER, IceChecks, candidate_types, verdict

BEHIND_NATS = ("host", "srflx")


def checks(pairs: int = 4, succeeded: int = 0, started: bool = True,
           ours: tuple[str, ...] = BEHIND_NATS, theirs: tuple[str, ...] = BEHIND_NATS) -> IceChecks:
    return IceChecks(started=started, pairs=pairs, succeeded=succeeded, ours=ours, theirs=theirs)


def test_checks_with_no_answer_for_long_enough_are_no_path():
    assert verdict(checks(), NO_PATH_AFTER) == NoPath(BEHIND_NATS, BEHIND_NATS, 4)
    assert verdict(checks(), NO_PATH_AFTER - 0.1) is None


def test_a_path_found_or_checks_not_begun_are_not_no_path():
    assert verdict(checks(succeeded=1), 60) is None
    assert verdict(checks(started=False), 60) is None
    assert verdict(None, 60) is None


def test_every_pair_failed_is_not_yet_no_path():
    """A browser's host candidate that answers from another address fails our only pair at
    once, and its own check arrives a moment later and succeeds (``peer.ice_checks``): only
    ``NO_PATH_AFTER`` seconds with no answer are no path."""
    assert verdict(checks(pairs=1), 0) is None


def test_no_pair_yet_is_waited_for():
    """A browser trickles its candidates after its description: none yet is not none at all."""
    assert verdict(checks(pairs=0, theirs=()), 0) is None
    assert verdict(checks(pairs=0, theirs=()), NO_PATH_AFTER) == NoPath(BEHIND_NATS, (), 0)


def test_patience_is_the_callers():
    """The call asks with less patience when the connection goes anyway (watchdog, new offer)."""
    assert verdict(checks(), 2.5, patience=2.5) is not None


def test_candidate_types_are_listed_once_host_first_relay_last():
    assert candidate_types(["relay", "host", "srflx", "host", "prflx"]) == ("host", "srflx", "prflx", "relay")
    assert candidate_types([]) == ()


def test_two_nats_without_relay_are_told_to_use_turn():
    text = NoPath(BEHIND_NATS, BEHIND_NATS, 4).message("bob")
    assert text == ("could not reach bob: no network path (you are both behind NATs that need a TURN server; "
                    "see --turn); 4 candidate pairs tried (ours: host, STUN; theirs: host, STUN)")


def test_no_stun_on_a_side_still_points_to_turn():
    """Without STUN nobody knows a NAT is there: something is in the way, which TURN gets through."""
    text = NoPath(("host",), ("host",), 1).message("bob")
    assert text == ("could not reach bob: no network path (a NAT or firewall is in the way, which a TURN server "
                    "gets through; see --turn); 1 candidate pair tried (ours: host; theirs: host)")


@pytest.mark.parametrize("ours, theirs, whose", [
    (("host", "relay"), ("host", "srflx"), "our"),
    (("host", "srflx"), ("relay",), "their"),
    (("relay",), ("host", "relay"), "the"),
])
def test_a_relay_that_carried_nothing_is_the_turn_servers_doing(ours, theirs, whose):
    no_path = NoPath(ours, theirs, 3)
    assert no_path.hint == f"{whose} TURN relay did not carry it; check the TURN server"
    assert "TURN relay" in no_path.tried and "see --turn" not in no_path.message("bob")


def test_retries_are_the_users_choice():
    assert parse_args(["--room", "r"]).retries == peer.MAX_TRIES == 3
    assert parse_args(["--room", "r", "--retries", "0"]).retries == 0
    for wrong in ("-1", "two", "1.5"):
        with pytest.raises(SystemExit):
            parse_args(["--room", "r", "--retries", wrong])
    with pytest.raises(ValueError, match="retries"):
        peer.join("r", retries=-1)


def test_events_built_as_before_still_work():
    """The new fields have defaults: events made with the old fields, and matched by position."""
    bob = peer.Member("b1", "bob")
    assert peer.Connected(bob, "12345").path == "unknown"
    assert peer.Retrying(bob, "no answer for 2 s", 1).no_path is None
    assert peer.CallEnded(bob, "left").no_path is None
    match peer.Connected(bob, "12345", "relayed"):
        case peer.Connected(member, code, path):
            assert (member, code, path) == (bob, "12345", "relayed")


async def test_a_call_on_this_machine_is_direct_in_the_connected_line_and_event(server, processes):
    alice = processes.peer("--room", "paths", "--server", server.url, "--video", "testsrc", "--fps", "10",
                           "--video-size", "160x120", "--audio", "none", "--no-window", "--ice-host", LOCAL,
                           name="alice")
    async with peer.join("paths", server=server.url, name="bot", ice_hosts=[LOCAL]) as room:
        connected = await room.wait_for(peer.Connected, timeout=20)
        assert connected.member.name == "alice" and connected.path == "direct"
        line = await asyncio.to_thread(alice.expect, r"^connected to bot; verification code (\d{5}(?: \d{5}){4}) "
                                                     r"\(.+\); path: (.+)$", 20)
        assert line.group(1) == connected.verification_code and line.group(2) == "direct"


def test_the_statistics_overlay_names_the_path():
    figures = {name: None for name in peer.CallStats.__dataclass_fields__}
    stats = peer.CallStats(**{**figures, "member": peer.Member("b1", "bob"), "time": 0.0, "path": "relayed",
                              "codec": "VP8"})
    assert stats.lines()[-1] == "VP8, path: relayed"
    assert stats.as_dict()["path"] == "relayed" and stats.summary().endswith(", relayed")


def test_a_call_that_never_connected_is_not_called_lost(server, processes):
    """The other side never answers (frozen before the call began): no ICE check ran, so not
    "no network path" either; the line says the call could not be made, and the try."""
    bob = processes.peer("--room", "never", "--server", server.url, "--video", "none", "--audio", "none",
                         "--no-window", "--ice-host", LOCAL, name="bob")
    bob.expect("waiting for someone to join room never")
    bob.proc.send_signal(signal.SIGSTOP)
    try:
        alice = processes.peer("--room", "never", "--server", server.url, "--video", "none", "--audio", "none",
                               "--no-window", "--ice-host", LOCAL, "--retries", "1", name="alice")
        alice.expect(r"^could not connect to bob \(not connected after 10 s\); calling again \(try 1 of 1\)$", 20)
        assert " lost " not in alice.output and "no network path" not in alice.output, alice.output
    finally:
        bob.proc.send_signal(signal.SIGCONT)


def test_no_path_on_a_call_that_had_one_says_it_is_gone():
    """Not the NATs' doing then: the network between the two went down or changed."""
    no_path = NoPath(BEHIND_NATS, BEHIND_NATS, 2, lost=True)
    assert no_path.hint == "the path the call had is gone: the network between you is down or changed"
