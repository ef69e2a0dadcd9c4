"""The remote video on screen: the parent's side of ``window_process.py``.

Frames go to the window process over a pipe; while a write is in flight, newer frames
replace older ones, so a slow window drops pictures instead of building delay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import DisplayError

logger = logging.getLogger(__name__)

PROCESS = Path(__file__).with_name("window_process.py")
READY_TIMEOUT = 20.0
QUIT_KEYS = ("q", "Q", "esc")
PREVIEW_WIDTH = 160
"""About the width of the local preview, in pixels: the picture is thinned to it here, so the
pipe to the window carries a sixteenth of a 640x480 frame."""
FULLSCREEN_KEY = "f"


def check_display() -> None:
    """Fail early and clearly where OpenCV's imshow would abort the process."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayError("no display (DISPLAY is not set): run with --no-window, or start it from a desktop session.")


class Window:
    """A window showing one tile per remote video, or a waiting picture when there is none."""

    def __init__(self) -> None:
        self._process: Optional[asyncio.subprocess.Process] = None
        self._latest: dict[str, tuple[str, np.ndarray]] = {}
        self._preview: Optional[np.ndarray] = None
        self._controls: list[dict] = []
        self._wake = asyncio.Event()
        self.quit = asyncio.Event()
        """Set when the user pressed q or Esc, closed the window, or the window died."""
        self._keys: dict[str, Callable[[], object]] = {}
        self._labels: dict[str, str] = {}
        self.stats_shown = False
        """Whether the statistics overlay is on (``toggle_stats``)."""
        for key in QUIT_KEYS:
            self.on_key(key, self.quit.set, "leave" if key == QUIT_KEYS[0] else "")
        self.on_key(FULLSCREEN_KEY, self.toggle_fullscreen, "fullscreen")
        self._tasks: list[asyncio.Task] = []

    async def open(self, title: str, waiting: str) -> None:
        check_display()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, str(PROCESS), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self._process.stdout is not None and self._process.stderr is not None  # made as pipes above
        self.set_title(title)
        self.set_waiting(waiting)
        self._tasks.append(asyncio.ensure_future(self._write_loop()))
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), READY_TIMEOUT)
        except asyncio.TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.close()
            detail = (await self._process.stderr.read()).decode(errors="replace").strip().splitlines()
            where = os.environ.get("DISPLAY", "")
            raise DisplayError(f"could not open a window on display {where!r}"
                               f"{' (' + detail[-1][:120] + ')' if detail else ''}: run with --no-window.")
        self._tasks.append(asyncio.ensure_future(self._read_loop()))
        self._tasks.append(asyncio.ensure_future(self._log_errors()))

    def set_title(self, text: str) -> None:
        self._control({"op": "title", "text": text})

    def set_waiting(self, text: str) -> None:
        self._control({"op": "waiting", "text": text})

    def set_status(self, text: str) -> None:
        self._control({"op": "status", "text": text})

    def toggle_fullscreen(self) -> None:
        self._control({"op": "fullscreen"})

    def toggle_stats(self) -> None:
        """The statistics overlay on, or off again; what it shows comes with ``set_stats``."""
        self.stats_shown = not self.stats_shown
        self._control({"op": "overlay", "on": self.stats_shown})

    def set_stats(self, key: str, lines: list[str]) -> None:
        """The statistics of the tile ``key``, a few short lines, shown while the overlay is on."""
        self._control({"op": "stats", "id": key, "lines": lines})

    def on_key(self, key: str, action: Callable[[], object], label: str = "") -> None:
        """Run ``action`` (on the event loop) when ``key`` is pressed in the window: a
        character (``"m"``), or ``esc``, ``enter``, ``space``, ``tab``. Replaces what that key
        did before; ``q`` and Esc set ``quit`` and ``f`` toggles fullscreen until then.
        A ``label`` puts the key in the hint line at the bottom of the window (``m mute``)."""
        self._keys[key] = action
        self._labels.pop(key, None)
        if label:
            self._labels[key] = label
        self._control({"op": "hint", "text": "  ".join(f"{k} {text}" for k, text in self._labels.items())})

    def show(self, key: str, name: str, picture: np.ndarray) -> None:
        """Show ``picture`` (BGR) in the tile ``key``; only the newest per tile is kept."""
        self._latest[key] = (name, picture)
        self._wake.set()

    def show_preview(self, picture: np.ndarray) -> None:
        """Show ``picture`` (BGR, what we send) small in a corner; only the newest is kept."""
        step = max(1, picture.shape[1] // PREVIEW_WIDTH)
        self._preview = np.ascontiguousarray(picture[::step, ::step])
        self._wake.set()

    def remove(self, key: str) -> None:
        self._latest.pop(key, None)
        self._control({"op": "remove", "id": key})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        process = self._process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None  # open() made it a pipe
        try:
            process.stdin.close()
            await asyncio.wait_for(process.wait(), 3)
        except (asyncio.TimeoutError, ConnectionError):
            process.kill()
            await process.wait()

    def _control(self, message: dict) -> None:
        self._controls.append(message)
        self._wake.set()

    async def _write_loop(self) -> None:
        assert self._process is not None and self._process.stdin is not None  # started by open(), with pipes
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                controls, self._controls = self._controls, []
                latest, self._latest = self._latest, {}
                preview, self._preview = self._preview, None
                for message in controls:
                    self._process.stdin.write(json.dumps(message).encode() + b"\n")
                for key, (name, picture) in latest.items():
                    self._write_picture({"op": "frame", "id": key, "name": name}, picture)
                if preview is not None:
                    self._write_picture({"op": "preview"}, preview)
                await self._process.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            self.quit.set()

    def _write_picture(self, header: dict, picture: np.ndarray) -> None:
        assert self._process is not None and self._process.stdin is not None  # started by open(), with pipes
        header = {**header, "w": picture.shape[1], "h": picture.shape[0], "size": picture.nbytes}
        self._process.stdin.write(json.dumps(header).encode() + b"\n" + picture.tobytes())

    async def _log_errors(self) -> None:
        """What the window process (OpenCV, Qt) says on stderr, to the log; read, so that
        a full pipe never blocks it."""
        assert self._process is not None and self._process.stderr is not None  # started by open(), with pipes
        while line := await self._process.stderr.readline():
            logger.debug("window: %s", line.decode(errors="replace").rstrip())

    async def _read_loop(self) -> None:
        assert self._process is not None and self._process.stdout is not None  # started by open(), with pipes
        while True:
            line = await self._process.stdout.readline()
            if not line or line.strip() == b"quit":
                if not line:
                    logger.info("the window process ended")
                self.quit.set()
                return
            word, _, key = line.decode(errors="replace").strip().partition(" ")
            action = self._keys.get(key) if word == "key" else None
            if action is not None:
                try:
                    action()
                except Exception:  # a key's action going wrong must not stop the keys
                    logger.exception("the action of key %s failed", key)
