"""``python -m peer``: a video call from the terminal, a thin layer over ``Session``.

The terminal carries chat (lines typed are sent, lines received are printed with the
sender's name); the OpenCV window shows the remote video. Everything here is wiring and
output for people; negotiation lives in ``peer.call``/``peer.session``, media in ``peer.media``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from signaling import SignalingServer
from signaling.protocol import MAX_NAME_CHARS, Member
from signaling.server import advertised_urls

from .call import MAX_TRIES, Call
from .errors import PeerError, SignalingUnreachable, TransferError
from .ice import IceSettings
from .media.recorder import Recorder
from .media.sources import LocalMedia
from .media.window import Window, check_display
from .session import Session

logger = logging.getLogger("peer")

DEFAULT_SERVER = "http://localhost:8080"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m peer", description="Join a WebRTC video room from Python.")
    parser.add_argument("--room", required=True, help="room to join; both sides use the same name")
    parser.add_argument("--server", default=None,
                        help=f"signaling server URL (default {DEFAULT_SERVER}; if nothing answers there, "
                             "one is started inside this process)")
    parser.add_argument("--name", default=default_name(), help="name the others see (default: user@host)")
    parser.add_argument("--token", help="room token, when the server requires one")
    parser.add_argument("--video", default="camera",
                        help="camera (default), a device path or name, a media file, testsrc, lavfi:GRAPH, or none")
    parser.add_argument("--video-size", default="640x480", help="capture size, WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--fps", type=int, default=30, help="capture frame rate (default 30)")
    parser.add_argument("--audio", default="none", help="none (default), sine, a media file, or lavfi:GRAPH")
    parser.add_argument("--no-window", action="store_true", help="show no window; remote media is still received")
    parser.add_argument("--record", metavar="PATH", help="write the remote media to PATH (.mp4, .webm or .mkv)")
    parser.add_argument("--send", action="append", default=[], metavar="FILE",
                        help="send FILE to everyone who connects (repeatable)")
    parser.add_argument("--downloads", default="downloads", metavar="DIR",
                        help="where files others send are saved (default ./downloads)")
    parser.add_argument("--ice-host", action="append", default=[], metavar="ADDRESS",
                        help="local address ICE may use (repeatable); 127.0.0.1 keeps a call on this machine")
    parser.add_argument("--stun", action="append", default=[], metavar="URL", help="STUN server, e.g. stun:stun.example.org:3478")
    parser.add_argument("--turn", action="append", default=[], metavar="URL", help="TURN server, e.g. turn:turn.example.org:3478")
    parser.add_argument("--turn-user", help="TURN user name")
    parser.add_argument("--turn-password", help="TURN password")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    args = parser.parse_args(argv)
    if args.record and Path(args.record).suffix.lower() not in (".mp4", ".webm", ".mkv"):
        parser.error("--record needs a .mp4, .webm or .mkv file name")
    if not _is_size(args.video_size):
        parser.error("--video-size must look like 640x480")
    for path in args.send:
        if not Path(path).is_file():
            parser.error(f"--send {path}: no such file")
    return args


def default_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname()}"[:MAX_NAME_CHARS]


def _is_size(text: str) -> bool:
    width, _, height = text.partition("x")
    return width.isdigit() and height.isdigit()


def say(text: str) -> None:
    """Output for people, as opposed to logging."""
    print(text, flush=True)


class Terminal:
    """Lines typed on stdin, read on a thread so the event loop never waits for a person."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[Optional[str]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(self.lines.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(self.lines.put_nowait, None)

        threading.Thread(target=read, name="stdin", daemon=True).start()


class CallView:
    """What a person sees and hears of the session: printed lines, the window, the recording."""

    def __init__(self, session: Session, window: Optional[Window], record: Optional[str],
                 send: Sequence[str] = ()) -> None:
        self.session = session
        self.send = [Path(path) for path in send]
        self.window = window
        self.record = Path(record) if record else None
        self.recorders: dict[str, Recorder] = {}
        self._recordings = 0
        self._relays: dict[str, MediaRelay] = {}
        self._tasks: set[asyncio.Task] = set()
        self._finishing: list[asyncio.Task] = []
        self._last_progress: dict[str, float] = {}
        session.on("peer-joined", lambda m: say(f"{m.name} joined"))
        session.on("peer-left", self._on_left)
        session.on("connected", self._on_connected)
        session.on("chat", lambda m, text: say(f"[{m.name}] {text}"))
        session.on("track", self._on_track)
        session.on("call-closed", self._on_call_closed)
        session.on("file-progress", lambda m, name, done, size: self._progress(f"receiving {name} from {m.name}", done, size))
        session.on("file", lambda m, path, sha: say(f"received {Path(path).name} from {m.name}: saved to {path} (sha256 {sha[:16]}…)"))
        session.on("file-failed", lambda m, name, reason: say(f"could not receive {name} from {m.name}: {reason}"))
        session.on("retrying", lambda m, reason, tries: say(
            f"connection to {m.name} lost ({reason}); calling again (try {tries} of {MAX_TRIES})"))
        session.on("rejoined", lambda: say(f"back in room {self.room}"))
        session.on("disconnected", lambda: say("lost the signaling server; reconnecting (calls in progress go on)"))

    @property
    def room(self) -> str:
        return self.session.request.room

    def waiting(self) -> None:
        if not self.session.calls:
            say(f"waiting for someone to join room {self.room}")
        self._update_title()

    def _update_title(self) -> None:
        if self.window is None:
            return
        names = [c.remote.name for c in self.session.calls.values()]
        self.window.set_title(f"room {self.room} - " + (", ".join(names) if names else "waiting"))

    def _on_left(self, member: Member) -> None:
        say(f"{member.name} left")

    def _on_connected(self, call: Call) -> None:
        say(f"connected to {call.remote.name}; verification code {call.verification_code} "
            "(the same on both sides means nobody is in the middle)")
        if self.window is not None:
            self.window.set_status(f"code {call.verification_code}")
        self._update_title()
        recorder = self.recorders.get(call.remote.id)
        if recorder is not None:
            recorder.start()
        if self.send:
            self._spawn(self._send_files(call))

    async def _send_files(self, call: Call) -> None:
        for path in self.send:
            try:
                what = f"sending {path.name} to {call.remote.name}"
                sha256 = await call.send_file(path, lambda done, size, what=what: self._progress(what, done, size))
            except TransferError as error:
                say(f"could not send {path.name} to {call.remote.name}: {error}")
                return
            say(f"sent {path.name} to {call.remote.name} (sha256 {sha256[:16]}…)")

    def _progress(self, what: str, done: int, size: int) -> None:
        """A progress bar on a terminal; a line per quarter elsewhere (logs, pipes)."""
        fraction = done / size if size else 1.0
        bar = "#" * int(fraction * 20)
        line = f"{what}: [{bar:<20}] {fraction:4.0%} {done / 1e6:.1f}/{size / 1e6:.1f} MB"
        if sys.stdout.isatty():
            print("\r" + line, end="\n" if done >= size else "", flush=True)
        elif int(fraction * 4) != int(self._last_progress.get(what, -1) * 4):
            say(line)
        self._last_progress[what] = fraction

    def _on_track(self, member: Member, track: MediaStreamTrack) -> None:
        relay = self._relays.setdefault(member.id, MediaRelay())
        if self.record is not None:
            recorder = self.recorders.get(member.id)
            if recorder is None:
                recorder = self.recorders[member.id] = Recorder(self._recording_path())
            recorder.add_track(relay.subscribe(track))
        if track.kind == "video":
            self._spawn(self._show(member, relay.subscribe(track, buffered=False)))
        elif self.record is None:
            self._spawn(_drain(relay.subscribe(track, buffered=False)))

    def _recording_path(self) -> Path:
        """The first call records to --record; later ones (others in a mesh, a new joiner)
        to NAME-2.mp4, NAME-3.mp4, ... so no recording overwrites another."""
        self._recordings += 1
        if self._recordings == 1:
            return self.record
        return self.record.with_name(f"{self.record.stem}-{self._recordings}{self.record.suffix}")

    async def _show(self, member: Member, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if self.window is not None:
                    self.window.show(member.id, member.name, frame)
        except MediaStreamError:
            pass

    def _on_call_closed(self, member: Member, reason: str) -> None:
        say(f"call with {member.name} ended ({reason})")
        self._relays.pop(member.id, None)
        recorder = self.recorders.pop(member.id, None)
        if recorder is not None:
            self._finishing.append(asyncio.ensure_future(self._finish_recording(member, recorder)))
        if self.window is not None:
            self.window.remove(member.id)
            if not self.session.calls:
                self.window.set_status("")
        self.waiting()

    async def _finish_recording(self, member: Member, recorder: Recorder) -> None:
        await recorder.stop()
        say(f"recorded {member.name} to {recorder.path}")

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for member_id in list(self.recorders):
            self._on_call_closed(self.session.members.get(member_id, Member(member_id, member_id)), "leaving")
        await asyncio.gather(*self._finishing)
        if self.window is not None:
            await self.window.close()


async def _drain(track: MediaStreamTrack) -> None:
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass


async def open_session(args: argparse.Namespace, media: LocalMedia, ice: IceSettings) -> tuple[Session, Optional[SignalingServer]]:
    """Connect to the server; with no --server and nothing at the default, host one here."""
    def session(url: str) -> Session:
        return Session(args.room, url, args.name, token=args.token, media=media, ice=ice, downloads=Path(args.downloads))

    if args.server is not None:
        chosen = session(args.server)
        await chosen.connect()
        return chosen, None
    chosen = session(DEFAULT_SERVER)
    try:
        await chosen.connect()
        return chosen, None
    except SignalingUnreachable:
        pass
    server = SignalingServer()
    try:
        port = await server.start("0.0.0.0", 8080)
    except OSError:  # someone else started hosting at this very moment: use theirs
        chosen = session(DEFAULT_SERVER)
        await chosen.connect()
        return chosen, None
    url = (advertised_urls("0.0.0.0", port) or [f"http://ADDRESS:{port}"])[0]
    say(f"No signaling server at {DEFAULT_SERVER}, so this process hosts one on port {port}.")
    say(f"On the other machine run: python -m peer --room {args.room} --server {url}")
    chosen = session(f"http://127.0.0.1:{port}")
    await chosen.connect()
    return chosen, server


async def run(args: argparse.Namespace) -> int:
    ice = IceSettings(host_addresses=tuple(args.ice_host), stun=tuple(args.stun), turn=tuple(args.turn),
                      turn_user=args.turn_user, turn_password=args.turn_password)
    if not args.no_window:
        check_display()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    window: Optional[Window] = None
    server: Optional[SignalingServer] = None
    view: Optional[CallView] = None
    media = await LocalMedia.open(args.video, args.audio, args.video_size, args.fps)
    try:
        if not args.no_window:
            window = Window()
            await window.open(f"room {args.room} - waiting", f"waiting for someone to join room {args.room}")
        session, server = await open_session(args, media, ice)
        view = CallView(session, window, args.record, args.send)
        try:
            await session.join()
        except BaseException:
            await session.leave()
            raise
        say(f"joined room {args.room} as {session.me.name}")
        view.waiting()
        await _until_done(session, window, stop)
        await session.leave()
        say(f"left room {args.room}")
        return 0
    finally:
        media.stop()
        if view is not None:
            await view.close()
        elif window is not None:
            await window.close()
        if server is not None:
            await server.stop()


async def _until_done(session: Session, window: Optional[Window], stop: asyncio.Event) -> None:
    """Chat until the person leaves: q/Esc in the window, Ctrl-C, or end of input."""
    terminal = Terminal()
    waits = [asyncio.ensure_future(stop.wait())]
    if window is not None:
        waits.append(asyncio.ensure_future(window.quit.wait()))

    async def chat() -> None:
        while (line := await terminal.lines.get()) is not None:
            if line.strip() and not session.send_chat(line):
                say("(nobody is connected yet; message not sent)")

    waits.append(asyncio.ensure_future(chat()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s" if args.verbose else "peer: %(message)s")
    if not args.verbose:
        for noisy in ("aioice", "aiortc", "socketio", "engineio"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return asyncio.run(run(args))
    except PeerError as error:
        print(f"peer: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 0
