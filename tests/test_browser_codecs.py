"""A browser (Debian's Chromium through Playwright) in a call with ``python -m peer --codec``:
video goes both ways whichever codec the peer prefers and whoever offers."""

import cv2  # noqa: F401  -- before av (media_check): see FIELD-NOTES

import json
import time

import pytest

from test_browser import PEER, check_call, check_recording, join, page, state  # noqa: F401  -- page: a fixture

MIME = {"h264": "H264", "vp8": "VP8"}


def stats_line(path) -> dict:
    """The first line the peer's ``--stats`` writes about the browser (once a second)."""
    deadline = time.monotonic() + 10
    while not path.read_text().strip():
        assert time.monotonic() < deadline, "no --stats line"
        time.sleep(0.1)
    return json.loads(path.read_text().splitlines()[0])


@pytest.mark.parametrize("codec", ["h264", "vp8"])
@pytest.mark.parametrize("browser_first", [True, False], ids=["peer-offers", "browser-offers"])
def test_browser_and_a_peer_preferring_a_codec(server, processes, page, tmp_path, codec, browser_first):
    room = f"codec-{codec}-{browser_first}"
    if browser_first:
        join(page, server.url, room)
    recording = tmp_path / "from-browser.mp4"
    peer = processes.peer("--room", room, "--server", server.url, *PEER, "--codec", codec,
                          "--record", str(recording), "--stats", str(tmp_path / "stats.jsonl"),
                          name="ours")
    if not browser_first:
        peer.expect(f"waiting for someone to join room {room}")
        join(page, server.url, room)
    check_call(page, peer)
    assert stats_line(tmp_path / "stats.jsonl")["codec"] == MIME[codec]
    peer.interrupt()
    assert peer.wait() == 0
    peer.expect(r"recorded browser to ")
    check_recording(recording)
    assert state(page, "errors") == []
    assert "Traceback" not in peer.output
