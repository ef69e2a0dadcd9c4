"""The OpenCV window, in a process of its own: ``python window_process.py`` (run by path).

Why a process: OpenCV's GUI wants the main thread, an ``imshow`` without a display aborts
the whole process, and importing PyAV before cv2 makes the first ``imshow`` hang (their
wheels bundle different libxcb files). Here only cv2 and numpy are imported, the parent's
event loop is never stalled by GUI calls, and a crash is reported instead of shared.

Input on stdin, one JSON header line per message, followed by ``size`` raw bytes for frames:
  {"op": "title", "text": str}              window title
  {"op": "waiting", "text": str}            picture shown while there is no remote video
  {"op": "status", "text": str}             drawn at the bottom, on as many lines as it needs (verification code)
  {"op": "hint", "text": str}               the keys, on one line under everything else
  {"op": "fullscreen"}                      fullscreen on, or off again
  {"op": "frame", "id": str, "name": str, "w": int, "h": int, "size": int} + BGR bytes
  {"op": "remove", "id": str}               drop a tile (and its statistics)
  {"op": "stats", "id": str, "lines": [str]}  a tile's statistics, drawn under its name while the overlay is on
  {"op": "overlay", "on": bool}             the statistics overlay on or off
  {"op": "preview", "w": int, "h": int, "size": int} + BGR bytes: what we send, small in the top right corner
Output on stdout, one line each: ``ready`` once the window shows, ``key NAME`` for every key
pressed (its character, or ``esc``), ``quit`` when the user closed the window. What a key
does is the parent's business (``Window.on_key``): a new key needs no change here.
"""

import cv2  # first, before anything that could load another libxcb  # noqa: I001

import json
import math
import sys
import threading
from typing import Optional

import numpy as np

WINDOW = "peer"
CANVAS = (480, 640)
KEY_NAMES = {27: "esc", 13: "enter", 32: "space", 9: "tab"}
STATUS_SCALE = 0.6
HINT_SCALE = 0.45
HINT_HEIGHT = 20
STATS_SCALE = 0.5
STATS_STEP = 22
"""Pixels from one line of the statistics to the next at ``STATS_SCALE``."""
MEASURING = ["statistics: measuring..."]


class State:
    """What the window shows, written by the reader thread, read by the GUI loop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tiles: dict = {}
        self.names: dict = {}
        self.stats: dict = {}
        self.overlay = False
        self.title = "peer"
        self.waiting = "waiting for someone to join"
        self.status = ""
        self.hint = ""
        self.preview: Optional[np.ndarray] = None
        self.fullscreen = False
        self.version = 0
        self.eof = False

    def apply(self, header: dict, payload: bytes) -> None:
        op = header.get("op")
        with self.lock:
            if op == "frame":
                self.tiles[header["id"]] = picture(header, payload)
                self.names[header["id"]] = header.get("name", "")
            elif op == "preview":
                self.preview = picture(header, payload)
            elif op == "remove":
                self.tiles.pop(header.get("id"), None)
                self.stats.pop(header.get("id"), None)
            elif op == "stats":
                self.stats[header["id"]] = [str(line) for line in header.get("lines", [])]
            elif op == "overlay":
                self.overlay = bool(header.get("on"))
            elif op in ("title", "waiting", "status", "hint"):
                setattr(self, op, header.get("text", ""))
            elif op == "fullscreen":
                self.fullscreen = not self.fullscreen
            self.version += 1


def picture(header: dict, payload: bytes) -> np.ndarray:
    """The BGR picture a ``frame`` or ``preview`` message carries (``Window._write_picture``)."""
    return np.frombuffer(payload, np.uint8).reshape(header["h"], header["w"], 3)


def read_input(state: State) -> None:
    stream = sys.stdin.buffer
    while True:
        line = stream.readline()
        if not line:
            break
        header = json.loads(line)
        size = int(header.get("size", 0))
        payload = stream.read(size) if size else b""
        if len(payload) < size:
            break
        state.apply(header, payload)
    with state.lock:
        state.eof = True


def put_text(image: np.ndarray, text: str, origin: tuple, scale: float = 0.7) -> None:
    """White text on a dark box, readable on any picture."""
    if not text:
        return
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x - 4, y - height - 4), (x + width + 4, y + baseline + 2), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def status_lines(text: str, width: int, scale: float) -> list:
    """``text`` broken between words into lines ``width`` pixels wide at most: a 25-digit
    verification code is wider than a small remote video, and cut off it cannot be compared."""
    lines: list = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(joined, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


def waiting_picture(text: str) -> np.ndarray:
    image = np.full((*CANVAS, 3), (60, 40, 30), np.uint8)
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) > 30 and line:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    lines.append(line)
    for i, text_line in enumerate(lines):
        cv2.putText(image, text_line, (40, 200 + 40 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def put_lines(image: np.ndarray, lines: list, origin: tuple, scale: float) -> None:
    """``lines`` one under the other from ``origin`` (the statistics of a tile)."""
    x, y = origin
    step = round(STATS_STEP * scale / STATS_SCALE)
    for i, line in enumerate(lines):
        put_text(image, line, (x, y + step * i), scale)


def tiled(tiles: dict, names: dict, stats: Optional[dict] = None) -> np.ndarray:
    """One remote: its picture as it comes. More: a grid, each tile labelled with its name.
    With ``stats`` (the overlay on), each tile's statistics under its name."""
    if len(tiles) == 1:
        (key, frame), = tiles.items()
        image = frame.copy()
        put_text(image, names.get(key, ""), (10, 25))
        if stats is not None:
            put_lines(image, stats.get(key, MEASURING), (10, 52), STATS_SCALE)
        return image
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    cell_h, cell_w = CANVAS[0] // 2 if rows > 1 else CANVAS[0], CANVAS[1] // columns
    image = np.zeros((cell_h * rows, cell_w * columns, 3), np.uint8)
    for index, key in enumerate(sorted(tiles, key=lambda k: names.get(k, k))):
        row, column = divmod(index, columns)
        cell = cv2.resize(tiles[key], (cell_w, cell_h))
        put_text(cell, names.get(key, ""), (8, 22), 0.6)
        if stats is not None:
            put_lines(cell, stats.get(key, MEASURING), (8, 44), STATS_SCALE * 0.8)
        image[row * cell_h:(row + 1) * cell_h, column * cell_w:(column + 1) * cell_w] = cell
    return image


def put_preview(image: np.ndarray, preview: np.ndarray) -> None:
    """What we send, a quarter of the window's width, in its top right corner, framed."""
    width = max(1, image.shape[1] // 4)
    height = max(1, min(image.shape[0] // 2, round(preview.shape[0] * width / max(1, preview.shape[1]))))
    x, y = image.shape[1] - width - 8, 8
    cv2.rectangle(image, (x - 1, y - 1), (x + width, y + height), (255, 255, 255), 1)
    image[y:y + height, x:x + width] = cv2.resize(preview, (width, height), interpolation=cv2.INTER_AREA)


def compose(state: State) -> tuple:
    with state.lock:
        tiles, names = dict(state.tiles), dict(state.names)
        stats = dict(state.stats) if state.overlay else None
        title, waiting, status, hint = state.title, state.waiting, state.status, state.hint
        preview = state.preview
    image = tiled(tiles, names, stats) if tiles else waiting_picture(waiting)
    if preview is not None:
        put_preview(image, preview)
    bottom = image.shape[0] - 12
    if hint:
        # one line, made smaller where the picture is narrower than the hint
        width = cv2.getTextSize(hint, cv2.FONT_HERSHEY_SIMPLEX, 1, 1)[0][0]
        put_text(image, hint, (10, image.shape[0] - 6), min(HINT_SCALE, (image.shape[1] - 20) / width))
        bottom -= HINT_HEIGHT
    lines = status_lines(status, image.shape[1] - 20, STATUS_SCALE)
    for i, line in enumerate(reversed(lines)):
        put_text(image, line, (10, bottom - 24 * i), STATUS_SCALE)
    return image, title


def key_name(code: int) -> str:
    """A key as the parent names it: its character when printable, else a word (or "")."""
    if code in KEY_NAMES:
        return KEY_NAMES[code]
    return chr(code) if 33 <= code < 127 else ""


def say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


def main() -> int:
    state = State()
    threading.Thread(target=read_input, args=(state,), daemon=True).start()
    cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
    shown_version, shown_title, fullscreen = -1, None, False
    ready = False
    while True:
        with state.lock:
            version, eof, wanted = state.version, state.eof, state.fullscreen
        if eof:
            break
        if version != shown_version or not ready:
            image, title = compose(state)
            cv2.imshow(WINDOW, image)
            if title != shown_title:
                cv2.setWindowTitle(WINDOW, title)
                shown_title = title
            if wanted != fullscreen:
                fullscreen = wanted
                cv2.setWindowProperty(WINDOW, cv2.WND_PROP_FULLSCREEN,
                                      cv2.WINDOW_FULLSCREEN if fullscreen else cv2.WINDOW_NORMAL)
            shown_version = version
        key = cv2.waitKey(15)
        if not ready:
            ready = True
            say("ready")
        if key != -1 and (name := key_name(key & 0xFF)):
            say(f"key {name}")
        if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            say("quit")
            break
    cv2.destroyAllWindows()
    return 0


if __name__ == "__main__":
    sys.exit(main())
