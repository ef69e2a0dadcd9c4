"""``python -m peer`` and the classic tutorial's browser client (tests/web/classic.js in
Chromium): it joins with a bare room string, offers on joining (video, then a data channel),
answers on its one connection and greets on every channel. In both orders of arrival, on our
server and on the classic relay: video both ways, chat both ways, one connection for the call.

The classic client there first is the hard case: its offer reached nobody, and had our peer
offered, Chromium would have rolled that offer back and refused our data channel.
"""

import cv2  # noqa: F401  -- before av (media_check): see FIELD-NOTES

import time

import numpy as np
import pytest

from classic import classic_page
from conftest import CONNECTED_WITHIN, LOCAL, classic_relay
from peer.call import CONNECT_TIMEOUT
from media_check import likeness_to_testsrc, recorded_frames

STEADY = 30
"""Seconds a call must stand with no reconnection (a wrong heartbeat broke it within 3 s; a
refused data channel, within 10 s)."""
TROUBLE = ("lost", "calling again", "ended", "gave up", "refused")


def chat_both_ways(page, ours, name: str) -> None:
    """Where the classic client answered our offer it greeted on each of our channels too: on
    chat that is a line to show, on the others nothing to act on."""
    until(page, "window.classic.chatOpen", "the classic page's chat channel did not open")
    page.evaluate("() => window.classic.send('hi from the tutorial')")
    ours.expect(rf"^\[{name}\] hi from the tutorial$", 10)
    ours.send("hello tutorial")
    until(page, "window.classic.received.some(m => m.data === 'hello tutorial')",
          "our chat line did not reach the classic page")
    if classic(page, "greeted"):
        ours.expect(rf"^\[{name}\] hello from the classic client$", 10)


def classic(page, expression: str):
    return page.evaluate(f"() => window.classic.{expression}")


def until(page, expression: str, what: str, timeout: float = CONNECTED_WITHIN) -> None:
    try:
        page.wait_for_function(f"() => {expression}", timeout=timeout * 1000)
    except Exception:
        raise AssertionError(f"{what}; the classic page saw: {classic(page, 'received')}, "
                             f"errors {classic(page, 'errors')}") from None


@pytest.mark.parametrize("first", ["classic", "peer"])
def test_classic_browser_and_our_peer(any_server, chromium, processes, tmp_path, first):
    room = f"tutorial-{first}"
    recording = tmp_path / "classic.mp4"
    flags = ["--room", room, "--server", any_server, "--video", "testsrc", "--ice-host", LOCAL, "--no-window",
             "--record", str(recording)]
    if first == "classic":
        page = classic_page(chromium, any_server, room)
        time.sleep(0.5)  # its offer has gone out, to nobody
        ours = processes.peer(*flags, name="ours")
    else:
        ours = processes.peer(*flags, name="ours")
        ours.expect(f"waiting for someone to join room {room}")
        page = classic_page(chromium, any_server, room)
    try:
        connected = ours.expect(r"connected to \S+; verification code", CONNECTED_WITHIN)
        name = connected.string.split()[2].rstrip(";")
        started = time.monotonic()

        # Our video in the classic page: frames decoded, and the picture is testsrc.
        until(page, "window.classic.video.getVideoPlaybackQuality().totalVideoFrames > 30",
              "the classic page decoded no video from our peer")
        shot = page.locator("video").screenshot()
        picture = cv2.cvtColor(cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert likeness_to_testsrc(picture) > 0.9, "the classic page does not show our testsrc"

        chat_both_ways(page, ours, name)
        time.sleep(max(0.0, STEADY - (time.monotonic() - started)))
        trouble = [line for line in ours.lines if any(word in line for word in TROUBLE)]
        assert not trouble, f"the call did not stand for {STEADY} s: {trouble}"
        assert len([line for line in ours.lines if "connected to" in line]) == 1
        assert classic(page, "errors") == []
        # Nothing of ours (pings, bye) reached the tutorial's chat: only our line.
        assert [m["data"] for m in classic(page, "received")] == ["hello tutorial"]
    finally:
        page.evaluate("() => window.classic.pc.close()")  # the tutorial's hang-up
        page.context.close()
    ours.expect(f"call with {name} ended", 15)
    ours.interrupt()
    assert ours.wait() == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["classic.mp4"], "one call, one recording"
    frames = recorded_frames(str(recording))
    assert len(frames) > 30, f"only {len(frames)} frames of the classic page's camera were recorded"
    assert all(frame.std() > 10 for frame in frames[10::50]), "the recording holds uniform frames"
    assert "Traceback" not in ours.output


def test_classic_browser_with_a_microphone_was_first(chromium, processes):
    """Its data section had mid "2"; we send video only, so our first data section has mid "1":
    the widened offer (peer.rollback) carries one under "2" too, and that one is taken."""
    relay = classic_relay(processes)
    page = classic_page(chromium, relay, "av", audio=True)
    time.sleep(0.5)
    ours = processes.peer("--room", "av", "--server", relay, "--video", "testsrc", "--ice-host", LOCAL,
                          "--no-window", name="ours")
    try:
        ours.expect(r"connected to peer; verification code", CONNECTED_WITHIN)
        until(page, "window.classic.video.getVideoPlaybackQuality().totalVideoFrames > 30",
              "the classic page decoded no video from our peer")
        chat_both_ways(page, ours, "peer")
        assert classic(page, "errors") == []
    finally:
        page.context.close()
    assert not [line for line in ours.lines if any(word in line for word in TROUBLE)]


def test_refused_data_channel(chromium, processes):
    """We send sound and video, the classic client that was first only video: every data
    section we offer has a mid above the one it keeps, so it refuses them all. The call stands
    without chat (aiortc alone would stay "connecting" and renew it), and the peer says why."""
    relay = classic_relay(processes)
    page = classic_page(chromium, relay, "refused")
    time.sleep(0.5)
    ours = processes.peer("--room", "refused", "--server", relay, "--video", "testsrc", "--audio", "sine",
                          "--ice-host", LOCAL, "--no-window", name="ours")
    try:
        ours.expect("peer refused our data channel: no chat or files", CONNECTED_WITHIN)
        ours.expect(r"connected to peer; verification code", CONNECTED_WITHIN)
        until(page, "window.classic.video.getVideoPlaybackQuality().totalVideoFrames > 30",
              "the classic page decoded no video from our peer")
        ours.send("anyone there?")
        ours.expect(r"^\(nobody here can receive chat; message not sent\)$", 5)
        time.sleep(CONNECT_TIMEOUT + 2)  # a call that never counted as connected was renewed by now
        trouble = [line for line in ours.lines if any(word in line for word in TROUBLE[:-1])]
        assert not trouble, f"the call did not stand: {trouble}"
        assert classic(page, "errors") == []
    finally:
        page.context.close()
    assert "Traceback" not in ours.output


def test_alone_on_a_classic_relay(processes):
    """Nobody else in a classic room: our offer waits for whoever comes; nothing is lost."""
    ours = processes.peer("--room", "empty", "--server", classic_relay(processes), "--video", "testsrc",
                          "--ice-host", LOCAL, "--no-window", name="ours")
    ours.expect("waiting for someone to join room empty")
    time.sleep(STEADY)
    trouble = [line for line in ours.lines if any(word in line for word in TROUBLE)]
    assert not trouble, f"alone, the peer said: {trouble}"
    ours.interrupt()
    assert ours.wait() == 0
    assert "Traceback" not in ours.output
