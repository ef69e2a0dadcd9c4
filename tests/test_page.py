"""The page the signaling server serves, as the Python peer's window: a link joins at once, each
remote tile shows the call's verification code and (key s) its statistics, and the keys m, v,
f, q and Esc act as in the window, except while typing in the chat box. On a plain-http page
(no camera, no SHA-256, sound held back) it shows no code, says why, and gives the sound at the
first key.

Real parts: our server, Chromium (fake camera and microphone) through Playwright, and a Python
bot (``peer.join``) on an event loop of its own thread, so that the test can read what the
other side of the page's call gets. All traffic stays on 127.0.0.1.
"""

import cv2  # noqa: F401  -- before av (peer imports it): see FIELD-NOTES

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

import numpy as np
import pytest

import peer
from conftest import CHROMIUM_FLAGS, CONNECTED_WITHIN, LOCAL, require
from test_browser import page, state  # noqa: F401  -- page: the fixture, with its check of console errors

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the chromium fixture says what is missing
    expect = None

HOST = "page.test"
"""A name for 127.0.0.1 that Chromium does not count as localhost (see the test of plain http)."""


class Bot:
    """A Python peer in the room, driven from the test's thread: ``bot.run(coroutine)``."""

    def __init__(self, server_url: str, room: str, name: str, audio: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._joining = peer.join(room, server=server_url, name=name, video="testsrc", audio=audio,
                                  ice_hosts=[LOCAL])
        self.room = self.run(self._joining.__aenter__())

    def run(self, coroutine: Awaitable[Any], timeout: float = CONNECTED_WITHIN) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.run(self._joining.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def until_video(self, member: peer.Member, accept: Callable[[np.ndarray], bool], timeout: float = 10) -> np.ndarray:
        """The first picture from ``member`` that ``accept`` takes; fails after ``timeout`` seconds."""
        async def first() -> np.ndarray:
            async for picture in self.room.frames(member):
                if accept(picture):
                    return picture
            raise AssertionError("the video ended")
        return self.run(asyncio.wait_for(first(), timeout), timeout + 5)

    def loudest(self, member: peer.Member, frames: int) -> int:
        """The largest sample of the next ``frames`` audio frames (20 ms each) from ``member``."""
        async def peak() -> int:
            loudest, count = 0, 0
            async for samples in self.room.frames(member, kind="audio", latest=False):
                loudest = max(loudest, int(np.abs(samples.astype(np.int32)).max()))
                count += 1
                if count >= frames:
                    return loudest
            raise AssertionError("the audio ended")
        return self.run(peak())


def camera_off(picture: np.ndarray) -> bool:
    """Nearly all the picture is dark, as the "camera off" picture (a dark grey with a line of
    text); Chromium's fake camera has no dark pixel at all."""
    return float((picture < 48).all(axis=2).mean()) > 0.9


@pytest.fixture
def bot(server):
    started: list[Bot] = []

    def start(room: str, name: str = "bot", audio: str = "none") -> Bot:
        started.append(Bot(server.url, room, name, audio))
        return started[-1]

    yield start
    for one in started:
        one.close()


def call(page, server, bot, room: str, name: str = "ann", bot_name: str = "bot",
         page_first: bool = False) -> tuple[Bot, peer.Member]:
    """The page joins ``room`` from a link and the bot joins it; the newcomer offers (the bot
    is there first unless ``page_first``). Both connected."""
    link = f"{server.url}/?{urlencode({'room': room, 'name': name})}"
    if page_first:
        page.goto(link)
        page.wait_for_function("() => window.peerState.joined")
    waiting = bot(room, bot_name)
    if not page_first:
        page.goto(link)
    member = waiting.run(waiting.room.wait_for_peer(CONNECTED_WITHIN), CONNECTED_WITHIN + 5)
    page.wait_for_function(f"() => window.peerState.connected.includes({bot_name!r})")
    return waiting, member


def test_a_link_joins_at_once(server, page):
    page.goto(f"{server.url}/?room=demo&name=ann")
    page.wait_for_function("() => window.peerState.joined")
    assert (state(page, "room"), state(page, "name")) == ("demo", "ann")
    expect(page.locator("#hint")).to_have_text("m mute  v camera  f fullscreen  s stats  q/Esc leave")
    assert state(page, "errors") == []


@pytest.mark.parametrize("query, problem", [
    ("room=no%20spaces&name=ann", "room name must be 1-64 letters"),
    ("room=&name=ann", "room name must be 1-64 letters"),
    ("room=demo&name=" + "a" * 65, "name must be at most 64 characters"),
    ("room=demo&name=ann%1B%5B2J", "name must not contain control characters"),
    ("room=demo&name=%E2%80%AEnna", "name must not contain control characters"),
    ("room=demo&name=ann&stun=nonsense", "the ICE servers of the link are refused: 'nonsense' is not a valid URL"),
    ("room=demo&name=ann&turn=turn:127.0.0.1:3478", "the ICE servers of the link are refused: Both username and credential"),
])
def test_a_link_with_bad_values_leaves_the_form(server, page, query, problem):
    """The server would refuse these; the page says why before asking, and the form stays."""
    page.goto(f"{server.url}/?{query}")
    expect(page.locator("#error")).to_contain_text(f"cannot join from this link: {problem}")
    assert not state(page, "joined")
    assert page.locator("#join").is_enabled() and page.locator("#room").is_editable()
    assert page.locator("#hint").is_hidden()


@pytest.mark.parametrize("page_first", [False, True], ids=["page-offers", "bot-offers"])
def test_the_page_and_a_bot_show_the_same_verification_code(server, page, bot, page_first):
    """The page computes the code from Chromium's DTLS certificates as peer/verification.py
    does from aiortc's, whichever side offers; names from others are shown as text (never markup)."""
    waiting, member = call(page, server, bot, "codes", name="<b>ann</b>", bot_name="<i>bot</i>", page_first=page_first)
    assert member.name == "<b>ann</b>"
    page.wait_for_function("() => Object.values(window.peerState.codes).every((code) => code)")
    code = state(page, "codes")["<i>bot</i>"]
    assert waiting.room.verification_code(member) == code
    tile = page.locator(".tile.remote")
    expect(tile.locator(".code")).to_have_text(code)
    expect(tile.locator(".label")).to_have_text("<i>bot</i>")
    assert tile.locator("i, b").count() == 0
    expect(page.locator("#log")).to_contain_text(f"verification code with <i>bot</i>: {code}")
    assert state(page, "errors") == []


def test_a_page_on_a_plain_http_address(server, chromium, bot):
    """The page at http://HOST:PORT/ from another machine: browsers give such a page neither
    camera nor SHA-256, and hold its sound back until the user acts (a link joins with no
    click). The page joins to watch, shows no code rather than a wrong one and says why, plays
    the others' video muted, and the first key pressed gives the sound. A host name mapped to
    127.0.0.1 stands for the other machine's address: it is no localhost to Chromium."""
    browser = chromium.browser_type.launch(
        executable_path=require("chromium"), headless=True,
        args=CHROMIUM_FLAGS + [f"--host-resolver-rules=MAP {HOST} {LOCAL}",
                               "--autoplay-policy=document-user-activation-required"])
    try:
        page = browser.new_page()
        waiting = bot("plain", audio="sine")  # sound to hold back: a picture alone may play
        page.goto(f"http://{HOST}:{server.port}/?room=plain&name=ann")
        # Playwright's own evaluate counts as an act of the user: until the sound is held back,
        # the page is read through the DevTools protocol without one.
        quiet = page.context.new_cdp_session(page)

        def read(expression: str) -> Any:
            answer = quiet.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "userGesture": False})
            return answer["result"].get("value")

        deadline = time.monotonic() + CONNECTED_WITHIN
        while "hear the others" not in read("document.querySelector('#log').textContent"):
            assert time.monotonic() < deadline, read("document.querySelector('#log').textContent")
            time.sleep(0.1)
        assert read("window.peerState.soundMuted") == ["bot"]
        log = page.locator("#log")
        expect(log).to_contain_text("camera unavailable: browsers allow it only on https:// or http://localhost pages")
        page.wait_for_function("() => window.peerState.connected.includes('bot')")
        expect(log).to_contain_text("no verification code for the call with bot: "
                                    "browsers compute SHA-256 only on https:// or http://localhost pages")
        assert state(page, "codes") == {"bot": None}
        assert page.locator(".tile.remote .code").text_content() == ""
        page.keyboard.press("x")
        page.wait_for_function("() => window.peerState.soundMuted.length === 0")
        # The two sides see the call connected at their own moments: the bot's may come later.
        waiting.run(waiting.room.wait_for_peer(CONNECTED_WITHIN), CONNECTED_WITHIN + 5)
        assert state(page, "errors") == []
    finally:
        browser.close()


def test_keys_typed_in_the_chat_box_are_chat(server, page, bot):
    waiting, member = call(page, server, bot, "typing")
    page.fill("#chat-input", "")
    page.type("#chat-input", "msvqf")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    message = waiting.run(waiting.room.wait_for(peer.ChatMessage, lambda event: event.text == "msvqf"))
    assert message.sender.id == member.id
    assert state(page, "joined") and state(page, "audioEnabled") == [True]
    assert not (state(page, "muted") or state(page, "cameraOff") or state(page, "statsShown") or state(page, "fullscreen"))

    # Out of the chat box, q leaves: the bot sees the page go.
    page.locator("#chat-input").blur()
    page.keyboard.press("q")
    waiting.run(waiting.room.wait_for(peer.PeerLeft, lambda event: event.member.id == member.id))
    assert not state(page, "joined") and page.locator("#join").is_enabled()
    assert page.locator("#hint").is_hidden()


def test_keys_show_statistics_mute_and_turn_the_camera_off(server, page, bot):
    waiting, member = call(page, server, bot, "keys")

    page.keyboard.press("s")
    stats = page.locator(".tile.remote .stats")
    expect(stats).to_be_visible()
    expect(stats).to_contain_text("in  640x480")  # the bot's testsrc
    expect(stats).to_contain_text("VP8")
    expect(stats).to_contain_text("path direct (host/host)")
    expect(stats).to_contain_text("bit/s")
    text = state(page, "stats")["bot"]
    assert "rtt " in text and "loss " in text, text
    page.keyboard.press("s")
    expect(stats).to_be_hidden()

    # m: Chromium's fake microphone beeps; muted, the bot hears nothing at all.
    assert waiting.loudest(member, 100) > 1000
    page.keyboard.press("m")
    assert state(page, "audioEnabled") == [False]
    expect(page.locator("#local .label")).to_have_text("you (muted)")
    waiting.loudest(member, 25)  # what was on its way before
    assert waiting.loudest(member, 100) < 50
    page.keyboard.press("m")
    assert state(page, "audioEnabled") == [True]

    # v: the bot gets the dark "camera off" picture instead of Chromium's fake camera, and back.
    live = waiting.until_video(member, lambda picture: True)
    assert not camera_off(live)
    page.keyboard.press("v")
    assert state(page, "cameraOff")
    off = waiting.until_video(member, camera_off)
    assert off.shape == live.shape
    page.keyboard.press("v")
    waiting.until_video(member, lambda picture: not camera_off(picture))

    # f: fullscreen and back.
    page.keyboard.press("f")
    page.wait_for_function("() => window.peerState.fullscreen")
    page.keyboard.press("f")
    page.wait_for_function("() => !window.peerState.fullscreen")
    assert state(page, "joined") and state(page, "errors") == []

    # Esc leaves, as q does.
    page.keyboard.press("Escape")
    waiting.run(waiting.room.wait_for(peer.PeerLeft, lambda event: event.member.id == member.id))
    assert not state(page, "joined")
