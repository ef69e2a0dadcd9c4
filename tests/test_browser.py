"""A real browser in the room: Debian's Chromium, driven by Playwright, runs the page the
signaling server serves at ``/`` (signaling/web/) and calls ``python -m peer``, in both
orders of arrival; and a classic Socket.IO client in that browser talks to our server.

Chromium runs headless with fake camera and microphone; all traffic stays on 127.0.0.1.
"""

import cv2  # noqa: F401  -- before av (media_check): see FIELD-NOTES

import time

import numpy as np
import pytest

from conftest import CONNECTED_WITHIN, LOCAL, Relay, Server
from media_check import likeness_to_testsrc, recorded_frames

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the chromium fixture says what is missing
    expect = None

PEER = ["--video", "testsrc", "--ice-host", LOCAL, "--no-window"]


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(CONNECTED_WITHIN * 1000)
    page = context.new_page()
    console = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.console = console
    yield page
    context.close()
    assert not [line for line in console if line.startswith(("pageerror", "error"))], "\n".join(console)


def state(page, expression: str):
    return page.evaluate(f"() => window.peerState.{expression}")


def join(page, url: str, room: str, name: str = "browser") -> None:
    page.goto(url + "/")
    page.fill("#room", room)
    page.fill("#name", name)
    page.click("#join")
    page.wait_for_function("() => window.peerState.joined")
    assert state(page, "localTracks") == ["audio", "video"], "Chromium's fake camera and microphone were not used"


def check_call(page, peer) -> None:
    """Both connected (our peer has a code from Chromium's DTLS certificate); video decodes in
    the browser and looks like our testsrc; chat both ways."""
    peer.expect(r"connected to browser; verification code \d{5}( \d{5}){4} ", CONNECTED_WITHIN)
    page.wait_for_function("() => window.peerState.connected.includes('ours')")
    page.wait_for_function("() => (window.peerState.video.ours || {}).width > 0")
    first = state(page, "video.ours")
    time.sleep(1.0)
    later = state(page, "video.ours")
    assert (later["width"], later["height"]) == (640, 480)
    assert later["decoded"] > first["decoded"] + 10, f"frames stopped: {first} then {later}"
    # Media reaches the peer on 127.0.0.1 (Chromium may send from its other local address;
    # either way the packets never leave the machine).
    assert page.evaluate("() => window.peerState.paths()")["ours"]["remote"].startswith(LOCAL + ":")

    # What the page shows is our peer's testsrc picture, not a black or frozen box.
    shot = page.locator(".tile.remote video").screenshot()
    picture = cv2.cvtColor(cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert picture.std() > 30, "the remote video region is uniform"
    assert likeness_to_testsrc(picture) > 0.9, "the remote video region does not show testsrc"

    page.fill("#chat-input", "hello from chromium ✓")
    page.click("#send")
    peer.expect(r"^\[browser\] hello from chromium ✓$", 10)
    peer.send("hello browser, héllo")
    expect(page.locator("#log")).to_contain_text("[ours] hello browser, héllo", timeout=10_000)
    assert {"from": "ours", "text": "hello browser, héllo"} in state(page, "chat")


def check_recording(path) -> None:
    """The peer's recording of the browser holds Chromium's fake camera picture."""
    frames = recorded_frames(str(path))
    assert len(frames) > 20, f"{path.name}: only {len(frames)} frames"
    for picture in frames[5::10]:
        assert picture.mean() > 20 and picture.std() > 10, f"{path.name} holds black or uniform frames"


def test_peer_calls_the_browser(server, processes, page, tmp_path):
    """The browser is there first, so our peer is the newcomer and offers."""
    join(page, server.url, "browser-first")
    recording = tmp_path / "from-browser.mp4"
    peer = processes.peer("--room", "browser-first", "--server", server.url, *PEER, "--record", str(recording),
                          name="ours")
    check_call(page, peer)

    peer.interrupt()  # the peer leaves: its bye removes its video from the page at once
    page.wait_for_function("() => window.peerState.connected.length === 0 && !document.querySelector('.tile.remote')",
                           timeout=2000)
    expect(page.locator("#log")).to_contain_text("call with ours ended (left)")
    assert peer.wait() == 0
    peer.expect(r"recorded browser to ")
    check_recording(recording)
    assert state(page, "errors") == []
    assert "Traceback" not in peer.output


def test_browser_calls_the_peer(server, processes, page, tmp_path):
    """Our peer is there first, so the browser is the newcomer and offers; then it leaves."""
    recording = tmp_path / "from-browser.mp4"
    peer = processes.peer("--room", "peer-first", "--server", server.url, *PEER, "--record", str(recording),
                          name="ours")
    peer.expect("waiting for someone to join room peer-first")
    join(page, server.url, "peer-first")
    check_call(page, peer)
    time.sleep(2)  # past the peer's 2 s heartbeat deadline: the call must still stand
    assert state(page, "connected") == ["ours"]
    trouble = [line for line in peer.lines if "call with" in line or "connection to" in line]
    assert not trouble, f"the call did not stand: {trouble}"

    started = time.monotonic()
    page.click("#leave")
    peer.expect(r"call with browser ended", timeout=2)
    assert time.monotonic() - started < 2.0
    peer.expect(r"recorded browser to ")
    check_recording(recording)
    assert not state(page, "joined") and page.locator(".tile.remote").count() == 0
    assert state(page, "errors") == []
    assert "Traceback" not in peer.output


def test_peer_signaling_drop_with_a_browser(server, processes, page):
    """Our peer alone loses the signaling server for a moment: the page hears it left and
    hangs up (the page has no heartbeat to know better); back in the room, the peer calls
    the browser again."""
    relay = Relay(server.port)
    try:
        join(page, server.url, "blip")
        peer = processes.peer("--room", "blip", "--server", relay.url, *PEER, name="ours")
        peer.expect(r"connected to browser; verification code", CONNECTED_WITHIN)
        relay.cut()
        peer.expect("back in room blip", timeout=15)
        peer.expect("connected to browser", CONNECTED_WITHIN, times=2)
        check_call(page, peer)  # video and chat both ways, on the new connection
        assert state(page, "connected") == ["ours"]
        assert "Traceback" not in peer.output
    finally:
        relay.close()


def test_browser_in_a_mesh_of_three(processes, page):
    """A browser between two peers: one connection per member, a labelled video for each."""
    server = Server("--room-size", "3")
    try:
        alice = processes.peer("--room", "mesh", "--server", server.url, *PEER, "--video-size", "320x240",
                               name="alice")
        alice.expect("waiting for someone to join room mesh")
        join(page, server.url, "mesh")
        alice.expect("connected to browser", CONNECTED_WITHIN)
        bob = processes.peer("--room", "mesh", "--server", server.url, *PEER, "--video-size", "320x240", name="bob")
        bob.expect("connected to browser", CONNECTED_WITHIN)
        bob.expect("connected to alice", CONNECTED_WITHIN)
        page.wait_for_function("() => ['alice', 'bob'].every(n => (window.peerState.video[n] || {}).decoded > 10)")
        expect(page.locator(".tile.remote .label")).to_have_text(["alice", "bob"])
        page.fill("#chat-input", "hi both")
        page.click("#send")
        alice.expect(r"^\[browser\] hi both$", 10)
        bob.expect(r"^\[browser\] hi both$", 10)
        bob.interrupt()
        expect(page.locator(".tile.remote .label")).to_have_text(["alice"], timeout=2000)
        assert bob.wait() == 0
        assert "Traceback" not in alice.output + bob.output
    finally:
        server.stop()


def test_classic_client_in_the_browser(server, page):
    """The socket.io client of a tutorial: bare-string join, userInRoom, message relay."""
    page.goto(server.url + "/")
    result = page.evaluate("""async () => {
        const within = (promise, what) => Promise.race([promise, new Promise((_, fail) =>
            setTimeout(() => fail(new Error("no " + what + " within 5 s")), 5000))]);
        const next = (socket, event) => new Promise((resolve) => socket.once(event, resolve));
        const open = () => io({ forceNew: true });
        const a = open(), b = open();
        let counted = next(a, "userInRoom");
        a.emit("join", "tutorial");
        const alone = await within(counted, "userInRoom");
        counted = next(a, "userInRoom");
        b.emit("join", "tutorial");
        const together = await within(counted, "userInRoom");
        const relayed = next(b, "message");
        a.emit("message", { type: "offer", sdp: "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\n" });
        const message = await within(relayed, "relayed message");
        const refused = next(a, "error");
        a.emit("message", { type: "nonsense" });
        const error = await within(refused, "error event");
        a.close(); b.close();
        return { alone, together, message, error };
    }""")
    assert result["alone"] == 1 and result["together"] == 2
    assert result["message"]["type"] == "offer" and result["message"]["sdp"].startswith("v=0")
    assert isinstance(result["message"]["from"], str)
    assert result["error"]["code"] == "unknown-type"

    # The page shows what the server refuses.
    page.fill("#room", "no spaces allowed")
    page.click("#join")
    expect(page.locator("#error")).to_contain_text("room name must be")
    assert not state(page, "joined")
    expect(page.locator("#join")).to_be_enabled()
