"""Calls over bad links (tests/netlab.py), as ``python -m peer`` users have them:

- a lossy, slow link (5 % of the packets lost each way, 100 ms added to what the peer sends,
  as ``tc netem delay 100ms`` on its interface would): chat lines and a 5 MB file arrive
  complete and in order, and the video keeps playing;
- a 10 s outage of one peer's link: both sides say within seconds that the other is silent, and
  when the link returns the call simply continues (the same connection: no new one, no new
  "connected to" line), back within seconds;
- a 60 s outage of one peer's link, on a call relayed by TURN (both behind symmetric NATs):
  both sides notice within seconds, and they are back in a call within 10 s of the link's return.

The three calls run at once in one lab (a module fixture starts them): the wall time is about
that of the longest, the 60 s outage.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from netlab import Host, Netlab, check_tools
from test_network_paths import TURN_PASSWORD, TURN_USER, Call, chat_both_ways, connected, start_call, stats_lines

LOSS, DELAY_MS = 0.05, 100
FILE_SIZE = 5_000_000
CHAT_LINES = 50
SHORT_OUTAGE, LONG_OUTAGE = 10, 60
NOTICED_WITHIN = 10
"""Seconds after a link goes down by which both sides must have said the other is silent."""
BACK_WITHIN = 10
"""Seconds after the link returns by which both sides must be in a call again."""
NOTICED = r"^connection to {} (interrupted|lost)|^call with {} ended"
RESUMED = "^connection to {} is back$"
AGAIN = "^connected to {};"


def lossy_link(call: Call, impaired: Host, sent: Path, downloads: Path) -> dict:
    """Chat, a file and video over a link that loses and delays packets (set before the call)."""
    a, b = call.peers
    took = connected(call, timeout=60)
    for number in range(1, CHAT_LINES + 1):
        a.send(f"line {number} of {CHAT_LINES}")
    b.expect(rf"^\[{a.name}\] line {CHAT_LINES} of {CHAT_LINES}$", timeout=60)
    got = [int(m.group(1)) for line in b.lines if (m := re.match(rf"^\[{a.name}\] line (\d+) of", line))]
    assert got == list(range(1, CHAT_LINES + 1)), f"chat lines out of order or missing: {got}"
    b.send("and back")
    a.expect(rf"^\[{b.name}\] and back$", timeout=30)
    started = time.monotonic()
    b.expect(rf"^received {sent.name} from {a.name}", timeout=180)
    file_took = time.monotonic() - started
    received = downloads / sent.name
    assert hashlib.sha256(received.read_bytes()).hexdigest() == hashlib.sha256(sent.read_bytes()).hexdigest()
    since = time.time()
    video_plays(call, since)
    for peer in call.peers:
        assert not re.search(r"lost|ended|calling again", peer.output), peer.output
    return {"connected": took, "file": file_took}


def video_plays(call: Call, since: float, timeout: float = 15) -> None:
    """Both sides receive video (``fps_in`` of their ``--stats``) in lines written after ``since``."""
    for peer, stats, _ in call.both():
        deadline = time.monotonic() + timeout
        while True:
            recent = [line for line in stats_lines(stats) if _epoch(line["time"]) > since]
            if any((line["fps_in"] or 0) >= 3 for line in recent):
                break
            assert time.monotonic() < deadline, f"{peer.name}: no video since the file arrived: {recent[-3:]}\n{peer.output}"
            time.sleep(0.5)


def _epoch(iso: str) -> float:
    import datetime
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def outage(call: Call, impaired: Host, seconds: float, back: str) -> dict:
    """``impaired``'s link down for ``seconds`` in the middle of the call; what each side said
    and when, and the seconds after the link's return to the next line matching ``back``."""
    took = connected(call)
    chat_both_ways(call, "before")
    before = [len(peer.lines) for peer in call.peers]
    impaired.link_down()
    down = time.monotonic()
    noticed: dict[str, float] = {}
    while time.monotonic() - down < seconds:  # what the peers say while the link is down, and when
        for peer, _, other in call.both():
            if peer.name not in noticed and any(re.search(NOTICED.format(other, other), line) for line in peer.lines):
                noticed[peer.name] = time.monotonic() - down
        time.sleep(0.1)
    impaired.link_up()
    up = time.monotonic()
    came_back = {}
    again = [sum(1 for line in peer.lines if re.search(back.format(other), line)) + 1
             for peer, _, other in call.both()]
    for (peer, _, other), times in zip(call.both(), again):  # the next such line; at most 40 s
        try:
            peer.expect(back.format(other), timeout=max(0.0, up + 40 - time.monotonic()), times=times)
            came_back[peer.name] = time.monotonic() - up
        except AssertionError:
            pass
    return {"connected": took, "noticed": noticed, "back": came_back, "before": before}


def after_short_outage(call: Call, result: dict) -> None:
    assert set(result["back"]) == set(call.names), _outputs(call)
    assert all(seconds < BACK_WITHIN for seconds in result["back"].values()), (result["back"], _outputs(call))
    assert set(result["noticed"]) == set(call.names), (result["noticed"], _outputs(call))
    assert all(seconds < NOTICED_WITHIN for seconds in result["noticed"].values()), (result["noticed"], _outputs(call))
    video_plays(call, time.time())  # on the same connection: its media goes on
    chat_both_ways(call, "after")
    for peer, start in zip(call.peers, result["before"]):
        said = "\n".join(peer.lines[start:])
        assert not re.search("lost|calling again|connected to|ended", said), f"{peer.name}:\n{peer.output}"


def _outputs(call: Call) -> str:
    return "\n\n".join(f"{peer.name}:\n{peer.output}" for peer in call.peers)




@dataclass
class Lab:
    lab: Netlab
    runs: dict[str, Future]
    calls: dict[str, Call]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    check_tools()
    folder = tmp_path_factory.mktemp("links")
    sent = folder / "five-megabytes.bin"
    sent.write_bytes(os.urandom(FILE_SIZE))
    downloads = folder / "downloads"
    with Netlab() as network, ThreadPoolExecutor(3) as pool:
        server = network.signaling()
        turn = network.turn(user=TURN_USER, password=TURN_PASSWORD)
        relayed = ("--turn", turn.url, "--turn-user", TURN_USER, "--turn-password", TURN_PASSWORD)
        lossy = (network.public_host("la"), network.public_host("lb"))
        lossy[0].loss(LOSS)
        lossy[0].delay(DELAY_MS, way="out")
        short = (network.public_host("ta"), network.public_host("tb"))
        long = (network.nat_host("ua", "symmetric"), network.nat_host("ub", "symmetric"))
        calls = {
            "lossy": start_call(lossy, ("la-peer", "lb-peer"), "lossy", server, folder, "--send", str(sent),
                                flags_b=("--downloads", str(downloads))),
            "short": start_call(short, ("ta-peer", "tb-peer"), "short", server, folder),
            "long": start_call(long, ("ua-peer", "ub-peer"), "long", server, folder, *relayed),
        }
        runs = {
            "lossy": pool.submit(lossy_link, calls["lossy"], lossy[0], sent, downloads),
            "short": pool.submit(outage, calls["short"], short[0], SHORT_OUTAGE, RESUMED),
            "long": pool.submit(outage, calls["long"], long[0], LONG_OUTAGE, AGAIN),
        }
        yield Lab(network, runs, calls)


def test_chat_a_file_and_video_cross_a_lossy_slow_link(lab):
    figures = lab.runs["lossy"].result(timeout=300)
    print(f"lossy link: connected in {figures['connected']:.1f} s, 5 MB file in {figures['file']:.1f} s")


def test_a_call_goes_on_through_a_10_s_outage(lab):
    result = lab.runs["short"].result(timeout=120)
    print(f"10 s outage: said during it: {result['noticed']}; back after {result['back']}")
    after_short_outage(lab.calls["short"], result)


def test_a_relayed_call_comes_back_after_a_60_s_outage(lab):
    result = lab.runs["long"].result(timeout=200)
    call = lab.calls["long"]
    back = result["back"]
    print(f"60 s outage: noticed after {result['noticed']} s; back in a call {back} s after the link returned")
    assert set(result["noticed"]) == set(call.names), (result["noticed"], _outputs(call))
    assert all(seconds < NOTICED_WITHIN for seconds in result["noticed"].values()), (result["noticed"], _outputs(call))
    assert set(back) == set(call.names), _outputs(call)
    assert all(seconds < BACK_WITHIN for seconds in back.values()), (back, _outputs(call))
    chat_both_ways(call, "after")
