"""``python -m peer``: a video call from the terminal, a thin layer over the bot API.

The terminal carries chat (lines typed are sent, lines received are printed with the
sender's name); the OpenCV window shows the remote video. Everything here is wiring and
output for people on top of ``peer.Room``, the object bots get from ``peer.join()``: it
imports only the public API (``peer``'s names, the signaling package's) and the window.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import itertools
import json
import logging
import os
import signal
import socket
import sys
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any, AsyncContextManager, Callable, Optional, Sequence, TextIO

from signaling import HostedServer, host_server
from signaling.protocol import MAX_NAME_CHARS
from signaling.text import log_to_stderr, printable

from .ice_config import add_ice_arguments, ice_settings
from . import (ASK_TIMEOUT, DEFAULT_MAX_PER_PEER, DEFAULT_MAX_TOTAL, DEFAULT_SERVER, LOST_AFTER, MAX_TRIES, VIDEO_CODECS,
               CallEnded, CallStats, ChatMessage, Connected, Device, Event, FileFailed, FileOffer, FileProgress,
               FileReceived, Interrupted, LocalMedia, Member, PeerError, PeerJoined, PeerLeft, Rejoined, Resumed,
               Retrying, Room, SignalingLost, SignalingUnreachable, TrackReceived, TransferError, check_fps, human_size, join, list_devices,
               parse_bitrate, parse_size, parse_video_size, return_big_buffers)
from .media.window import Window, check_display
from .terminal import Terminal, say

logger = logging.getLogger("peer")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m peer", description="Join a WebRTC video room from Python.")
    parser.add_argument("--room", help="room to join; both sides use the same name (required)")
    parser.add_argument("--server", default=None,
                        help=f"signaling server URL (default {DEFAULT_SERVER}; if nothing answers there, "
                             "one is started inside this process)")
    parser.add_argument("--name", default=default_name(), help="name the others see (default: user@host)")
    parser.add_argument("--token", help="room token, when the server requires one")
    parser.add_argument("--video", default="camera",
                        help="camera (default), a device path or name, screen, a media file, testsrc, lavfi:GRAPH, "
                             "or none")
    parser.add_argument("--loop", action="store_true",
                        help="play a media file given to --video or --audio again and again (without it, once, "
                             "then a 'camera off' picture)")
    parser.add_argument("--video-size", type=_checked(parse_video_size), metavar="WxH",
                        help="size of the video sent, WIDTHxHEIGHT (default: 640x480 from a camera or testsrc, "
                             "the screen's, a file's own)")
    parser.add_argument("--fps", type=_checked(check_fps),
                        help="most frames a second sent (default: 30 from a camera, the screen or testsrc)")
    parser.add_argument("--codec", choices=sorted(VIDEO_CODECS),
                        help="video codec to prefer (default: the other side's preference, else vp8)")
    parser.add_argument("--bitrate", type=_checked(parse_bitrate), metavar="RATE",
                        help="video bitrate to start at and never exceed, e.g. 500k or 2M (default: aiortc's, "
                             "500k for vp8 and 1M for h264, adapting up to 1.5M and 3M)")
    parser.add_argument("--audio", default="mic",
                        help="mic (default: the system's default microphone; with none, the call goes on without "
                             "sound), a microphone's name as --list-devices prints it, a media file, sine or "
                             "sine:FREQ (a test tone), lavfi:GRAPH, or none")
    parser.add_argument("--no-window", action="store_true", help="show no window; remote media is still received")
    parser.add_argument("--speaker", metavar="DEVICE",
                        help="play the others' sound on DEVICE (a speaker's name as --list-devices prints it; "
                             "default: the default output)")
    parser.add_argument("--no-audio-out", action="store_true", help="do not play the sound others send")
    parser.add_argument("--record", metavar="PATH", help="write the remote media to PATH (.mp4, .webm or .mkv)")
    parser.add_argument("--send", action="append", default=[], metavar="FILE",
                        help="send FILE to everyone who connects (repeatable)")
    parser.add_argument("--downloads", metavar="DIR",
                        help="save files others send in DIR without asking; without it you are asked for each "
                             "(saved in ./downloads), and with no terminal to ask on they are refused")
    parser.add_argument("--max-download-per-peer", type=_size, default=DEFAULT_MAX_PER_PEER, metavar="SIZE",
                        help=f"take at most SIZE of files from each peer (default {human_size(DEFAULT_MAX_PER_PEER)}; "
                             "e.g. 500M, 2G: powers of 1000; 512MiB: of 1024)")
    parser.add_argument("--max-download-total", type=_size, default=DEFAULT_MAX_TOTAL, metavar="SIZE",
                        help=f"take at most SIZE of files in all (default {human_size(DEFAULT_MAX_TOTAL)})")
    parser.add_argument("--ice-host", action="append", default=[], metavar="ADDRESS",
                        help="local address ICE may use (repeatable); 127.0.0.1 keeps a call on this machine")
    add_ice_arguments(parser)
    parser.add_argument("--list-devices", action="store_true",
                        help="print the cameras, microphones and speakers found, and the flag for each; join no room")
    parser.add_argument("--stats", metavar="PATH",
                        help="append one JSON line of statistics a second per call to PATH")
    parser.add_argument("--quiet", action="store_true", help="no status line every few seconds")
    parser.add_argument("--retries", type=_count, default=MAX_TRIES, metavar="N",
                        help=f"new connections to try when a call's path dies or none is found (default {MAX_TRIES})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    args = parser.parse_args(argv)
    if not args.room and not args.list_devices:
        parser.error("the following arguments are required: --room")
    if args.speaker is not None and args.no_audio_out:
        parser.error("--speaker and --no-audio-out go against each other: give one")
    if args.record and Path(args.record).suffix.lower() not in (".mp4", ".webm", ".mkv"):
        parser.error("--record needs a .mp4, .webm or .mkv file name")
    for path in args.send:
        if not Path(path).is_file():
            parser.error(f"--send {path}: no such file")
    args.ice, problems = ice_settings(args, os.environ)
    if problems:  # one line each, no usage text: a value may come from the environment or a file
        parser.exit(2, "".join(f"{parser.prog}: {printable(problem)}\n" for problem in problems))
    args.stats_file = _open_stats(parser, args.stats) if args.stats else None
    return args


def _open_stats(parser: argparse.ArgumentParser, path: str) -> TextIO:
    """The --stats file, opened at the start: a path that cannot be written is said before joining.

    Opened non-blocking, which a regular file ignores: a pipe (a FIFO) would otherwise wait
    for a reader without a word before joining, and once its reader stops reading, a write
    would stop the event loop and the call with it; now the first is refused here, and the
    second is a write that fails (``StatsView._write``)."""
    try:
        return open(path, "a", encoding="utf-8", opener=_non_blocking)
    except OSError as error:
        reason = "a pipe nobody reads" if error.errno == errno.ENXIO else error.strerror or error
        parser.error(f"--stats {path}: {reason}")


def _non_blocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o666)  # none on Windows


def default_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname()}"[:MAX_NAME_CHARS]


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError: its message is the error shown."""
    def check(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return check


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(text: str) -> int:
    """A whole number, 0 or more (``--retries``)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number of 0 or more: {text!r}")
    return int(text)


VIDEO_ENDED = "your video stopped (camera unplugged or end of file); sending a 'camera off' picture"

VIDEO_WAIT = 24 * 3600.0
"""Seconds to wait for a video track's first frame before giving up saying it arrived: a
track that stays dark for a day has said enough."""

QUESTION_TIMEOUT = ASK_TIMEOUT - 5
"""A little less than the receiver allows, so the person is told it is too late."""


class FileQuestions:
    """Whether to take a file, without ``--downloads``: the person at the terminal is asked, and
    the next line typed is the answer (not chat). With no terminal nobody can answer: files
    are refused, and the person is told once how to take them."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self._asking = asyncio.Lock()
        self._answer: Optional[asyncio.Future] = None
        self._told = False
        self._withdrawn: Optional[str] = None
        """The file whose question was withdrawn (its sender offered another instead) while
        the person may have been answering it: the next line typed is not taken as an answer."""

    async def __call__(self, offer: FileOffer) -> bool:
        what = f"{offer.name} from {offer.sender.name}"
        if not self.interactive:
            if not self._told:
                self._told = True
                say(f"refused {what}: start with --downloads DIR to accept files")
            return False
        async with self._asking:  # one question at a time
            self._answer = asyncio.get_running_loop().create_future()
            say(f"{offer.sender.name} wants to send you {offer.name} ({human_size(offer.size)}): accept? [y/N]")
            try:
                accepted = await asyncio.wait_for(self._answer, QUESTION_TIMEOUT)
            except asyncio.TimeoutError:
                say(f"no answer within {QUESTION_TIMEOUT:g} s: refused {what}")
                return False
            except asyncio.CancelledError:
                say(f"{offer.sender.name} no longer sends {offer.name}")
                self._withdrawn = offer.name
                raise
            finally:
                self._answer = None
        say(f"accepted {what}" if accepted else f"refused {what}")
        return accepted

    def answer(self, line: str) -> bool:
        """Take ``line`` as the answer to the question asked, if one is (True then)."""
        if self._answer is None or self._answer.done():
            self._withdrawn = None  # whatever was being typed for it went as chat
            return False
        if self._withdrawn is not None:
            # A sender may withdraw a file just as its question is answered and offer another,
            # so that a "y" meant for a small file takes a big one: that answer counts for neither.
            say(f"that answer may have been meant for {self._withdrawn}, which was withdrawn: "
                "answer again for the file asked about last")
            self._withdrawn = None
            return True
        self._answer.set_result(line.strip().lower() in ("y", "yes"))
        return True


class CallView:
    """What a person sees of the room: printed lines, the window, recordings, files sent."""

    def __init__(self, room: Room, window: Optional[Window], record: Optional[str],
                 send: Sequence[str] = (), media: Optional[LocalMedia] = None,
                 terminal: Optional[Terminal] = None) -> None:
        self.room = room
        self.terminal = terminal or Terminal()
        self.window = window
        self.media = media
        self._previewing = False
        self.record = Path(record) if record else None
        self.send = [Path(path) for path in send]
        self._recordings_made = 0
        self._tasks: set[asyncio.Task] = set()
        self._showing: Optional[asyncio.Task] = None
        self._connected_once: set[str] = set()
        """The members whose call has been connected: a call that never was is not "lost"."""

    def start(self) -> None:
        """Show the room's events as they come, until the room closes."""
        self._showing = asyncio.ensure_future(self._show_events())

    async def _show_events(self) -> None:
        async for event in self.room.events():
            try:
                self._show(event)
            except Exception:  # one event shown wrong must not silence the rest
                logger.exception("could not show %s", event)

    def _show(self, event: Event) -> None:
        match event:
            case PeerJoined(member):
                say(f"{member.name} joined")
            case PeerLeft(member):
                say(f"{member.name} left")
            case Connected(member, code, path):
                self._connected_once.add(member.id)
                self._on_connected(member, code, path)
            case CallEnded(member, reason, no_path):
                self._connected_once.discard(member.id)
                say(f"{no_path.message(member.name)}; call ended ({reason})" if no_path else
                    f"call with {member.name} ended ({reason})")
                self._on_call_ended()
            case Retrying(member, reason, tries, limit, no_path):
                again = f"calling again (try {tries} of {limit or MAX_TRIES})"
                if no_path is not None:
                    say(f"{no_path.message(member.name)}; {again}")
                elif member.id in self._connected_once:
                    say(f"connection to {member.name} lost ({reason}); {again}")
                else:
                    say(f"could not connect to {member.name} ({reason}); {again}")
            case Interrupted(member, silent_for):
                say(f"connection to {member.name} interrupted (no answer for {silent_for:g} s); "
                    f"waiting up to {LOST_AFTER:g} s for it to come back")
            case Resumed(member):
                say(f"connection to {member.name} is back")
            case ChatMessage(sender, text):
                say(f"[{sender.name}] {text}")
            case FileProgress(sender, name, done, size):
                self.terminal.progress(f"receiving {name} from {sender.name}", done, size)
            case FileReceived(sender, path, sha256):
                say(f"received {path.name} from {sender.name}: saved to {path} (sha256 {sha256[:16]}…)")
            case FileFailed(sender, name, reason):
                self.terminal.progress_ended(f"receiving {name} from {sender.name}")
                say(f"could not receive {name} from {sender.name}: {reason}")
            case TrackReceived(sender, "video"):
                self._spawn(self._say_video_arrives(sender))
                if self.window is not None:
                    self._spawn(self._show_video(sender))
            case SignalingLost():
                say("lost the signaling server; reconnecting (calls in progress go on)")
            case Rejoined():
                say(f"back in room {self.room.name}")

    def waiting(self) -> None:
        if not self.room.calling:
            say(f"waiting for someone to join room {self.room.name}")
        self._update_title()

    def _update_title(self) -> None:
        if self.window is None:
            return
        names = [member.name for member in self.room.calling]
        self.window.set_title(printable(f"room {self.room.name} - " + (", ".join(names) if names else "waiting")))

    def _on_connected(self, member: Member, code: Optional[str], path: str) -> None:
        say(f"connected to {member.name}; verification code {code} "
            f"(the same on both sides means nobody is in the middle); path: {path}")
        if self.window is not None:
            self.window.set_status(f"code {code}")
            if self.media is not None and not self._previewing:
                self._previewing = True
                self._spawn(self._show_preview(self.media))
        self._update_title()
        if self.record is not None:  # again after a renewed connection: a new file
            self._spawn(self._record(member))
        if self.send:
            self._spawn(self._send_files(member))

    def _on_call_ended(self) -> None:
        if self.window is not None and not self.room.calling:
            self.window.set_status("")
        self.waiting()

    async def _send_files(self, member: Member) -> None:
        for path in self.send:
            what = f"sending {path.name} to {member.name}"
            try:
                # ignore: mypy cannot infer the type of a lambda with a default argument
                sha256 = await self.room.send_file(path, to=member,
                                                   progress=lambda _, done, size, what=what: self.terminal.progress(what, done, size))  # type: ignore[misc]
            except TransferError as error:
                self.terminal.progress_ended(what)
                say(f"could not send {path.name} to {member.name}: {error}")
                return
            say(f"sent {path.name} to {member.name} (sha256 {sha256[:16]}…)")

    def _recording_path(self) -> Path:
        """The first call records to --record; later ones (others in a mesh, a new joiner)
        to NAME-2.mp4, NAME-3.mp4, ... so no recording overwrites another."""
        assert self.record is not None  # only called with --record
        self._recordings_made += 1
        if self._recordings_made == 1:
            return self.record
        return self.record.with_name(f"{self.record.stem}-{self._recordings_made}{self.record.suffix}")

    async def _record(self, member: Member) -> None:
        """Record ``member`` until its tracks end (or we leave)."""
        try:
            recorder = self.room.record(member, self._recording_path())
        except ValueError as error:
            say(f"nothing to record: {error}")
            return
        try:
            await recorder.wait()
        finally:
            await asyncio.shield(recorder.stop())
            say(f"recorded {member.name} to {recorder.path}" if recorder.file_started
                else f"nothing recorded of {member.name}")

    async def _say_video_arrives(self, member: Member) -> None:
        """Say when ``member``'s first video frame is decoded: without a window the only sign
        that video arrives (and what bench/cold_start.py times from outside)."""
        try:
            await self.room.wait_for_frames(1, member, timeout=VIDEO_WAIT)
        except PeerError:  # the track or the room ended first: nothing arrived to tell of
            return
        say(f"video from {member.name} arrives")

    async def _show_video(self, member: Member) -> None:
        """A tile for ``member`` while its video track lasts."""
        assert self.window is not None  # only called with a window
        try:
            async for picture in self.room.frames(member):
                self.window.show(member.id, printable(member.name), picture)
        finally:
            self.window.remove(member.id)

    async def _show_preview(self, media: LocalMedia) -> None:
        """What we send, small in a corner of the window: from the first call on, since
        reading it plays the source (a file played once would be over before anyone came)."""
        assert self.window is not None  # only called with a window
        async for picture in media.preview():
            self.window.show_preview(picture)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Once the room is closed: show its last events (the calls it ended as it left),
        finish the recordings, stop what was started. Safe to call twice."""
        if self._showing is not None:
            await self._showing
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # recordings say where they went


def bind_media_keys(window: Window, media: LocalMedia) -> None:
    """``v`` turns the camera off and on, ``m`` mutes the sound sent and unmutes it; each
    change is said in one line, as the others see or hear it."""

    def camera() -> None:
        if media.video is None:
            say("no camera to turn off (started with --video none)")
            return
        media.set_camera(not media.camera_on)
        if not media.camera_on:
            say("camera off: the others see a 'camera off' picture")
        elif media.video_ended:
            say("camera on, but your video has stopped: the others still see the 'camera off' picture")
        else:
            say("camera on")

    def mute() -> None:
        if media.audio is None:
            say("no microphone to mute (--audio none, or none found)")
            return
        media.set_muted(not media.muted)
        say("microphone muted: the others hear silence" if media.muted else "microphone on")

    window.on_key("m", mute, "mute")
    window.on_key("v", camera, "camera")


STATUS_EVERY = 5
"""Seconds between two status lines."""


class StatsView:
    """The calls' statistics for people: the window's overlay (``s``), a status line every
    ``STATUS_EVERY`` seconds unless ``--quiet``, and ``--stats``' JSON lines. The room is read
    once a second while one of them wants it, never otherwise."""

    def __init__(self, room: Room, window: Optional[Window], file: Optional[TextIO], quiet: bool) -> None:
        self.room = room
        self.window = window
        self.file = file
        self.quiet = quiet

    async def run(self) -> None:
        """Until cancelled."""
        for second in itertools.count(1):
            await asyncio.sleep(1)
            status = not self.quiet and second % STATUS_EVERY == 0
            overlay = self.window is not None and self.window.stats_shown
            if not (status or overlay or self.file):
                continue
            try:
                self._report(await self.room.stats(), status, overlay)
            except Exception:  # figures gone wrong once must not end them for the rest of the call
                logger.exception("could not show the call statistics")

    def _report(self, calls: list[CallStats], status: bool, overlay: bool) -> None:
        if overlay:
            self._show(calls)
        if self.file is not None and calls:
            self._write(calls)
        if status and calls:
            say(f"status: {len(calls)} connected | "
                + " | ".join(f"{call.member.name} {call.summary()}" for call in calls))

    def _show(self, calls: list[CallStats]) -> None:
        assert self.window is not None  # only with the overlay on
        for call in calls:
            self.window.set_stats(call.member.id, call.lines())

    def _write(self, calls: list[CallStats]) -> None:
        """A line per call, appended and flushed: a few hundred bytes a second, which the
        system's page cache takes at once (no fsync). A write that fails (a full disk, a pipe
        its reader stopped reading) is said once, and the file closed with the lines it could
        not take: flushed again on leaving, they would fail again there."""
        assert self.file is not None  # only with --stats
        try:
            self.file.write("".join(json.dumps(call.as_dict()) + "\n" for call in calls))
            self.file.flush()
        except OSError as error:
            say(f"stopped writing statistics to {self.file.name}: {error.strerror or error}")
            with suppress(OSError):
                self.file.close()  # closes even when its last flush fails
            self.file = None


async def enter_room(stack: AsyncExitStack, args: argparse.Namespace,
                     joining: Callable[[str], AsyncContextManager[Room]]) -> tuple[Room, Optional[HostedServer]]:
    """Join on --server; with none, on the default server, or on one this process hosts
    when nothing answers there (the server hosted is returned, to stop after the room)."""
    try:
        return await stack.enter_async_context(joining(DEFAULT_SERVER if args.server is None else args.server)), None
    except SignalingUnreachable:
        if args.server is not None:
            raise
    try:
        hosted = await host_server()
    except OSError:  # someone else started hosting at this very moment: use theirs
        return await stack.enter_async_context(joining(DEFAULT_SERVER)), None
    say(f"No signaling server at {DEFAULT_SERVER}, so this process hosts one on port {hosted.port}.")
    say(f"On the other machine run: python -m peer --room {args.room} --server {hosted.url}")
    try:
        return await stack.enter_async_context(joining(hosted.local_url)), hosted
    except BaseException:
        await hosted.stop()
        raise


async def run(args: argparse.Namespace) -> int:
    if not args.no_window:
        check_display()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    window: Optional[Window] = None
    hosted: Optional[HostedServer] = None
    view: Optional[CallView] = None
    terminal = Terminal()
    questions = None if args.downloads else FileQuestions(terminal.interactive)
    # Opened before the window, so that a wrong --video is said before a window appears.
    size = "{}x{}".format(*args.video_size) if args.video_size else None
    media = await LocalMedia.open(args.video, args.audio, size, args.fps, loop=args.loop)
    media.on_video_ended(lambda: say(VIDEO_ENDED))

    def joining(server: str) -> AsyncContextManager[Room]:
        return join(args.room, server=server, name=args.name, token=args.token, media=media,
                    codec=args.codec, bitrate=args.bitrate, ice=args.ice, downloads=args.downloads or "downloads",
                    accept_files=True if questions is None else questions,
                    max_download_per_peer=args.max_download_per_peer, max_download_total=args.max_download_total,
                    retries=args.retries)

    try:
        if not args.no_window:
            window = Window()
            bind_media_keys(window, media)
            window.on_key("s", window.toggle_stats, "stats")
            await window.open(f"room {args.room} - waiting", f"waiting for someone to join room {args.room}")
        async with AsyncExitStack() as stack:
            room, hosted = await enter_room(stack, args, joining)
            view = CallView(room, window, args.record, args.send, media, terminal)
            view.start()
            if not args.no_audio_out:
                room.play_audio(args.speaker, on_problem=say)
            statistics = asyncio.ensure_future(StatsView(room, window, args.stats_file, args.quiet).run())
            stack.callback(statistics.cancel)
            assert room.me is not None  # the room is joined
            say(f"joined room {args.room} as {room.me.name}")
            view.waiting()
            await _until_done(room, window, stop, questions, terminal)
        await view.close()
        say(f"left room {args.room}")
        return 0
    finally:
        media.stop()
        if args.stats_file is not None:
            args.stats_file.close()
        if view is not None:
            await view.close()
        if window is not None:
            await window.close()
        if hosted is not None:
            await hosted.stop()


async def _until_done(room: Room, window: Optional[Window], stop: asyncio.Event,
                      questions: Optional[FileQuestions], terminal: Terminal) -> None:
    """Chat until the person leaves: q/Esc in the window, Ctrl-C or a signal, or Ctrl-D at a
    terminal. The end of stdin that is no terminal only ends chat: a headless peer (systemd,
    ``docker run`` without ``-i``, ``< /dev/null``) would otherwise leave the instant it joined.
    A line typed while a question is asked answers it."""
    leaves: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if window is not None:
        leaves.append(asyncio.ensure_future(window.quit.wait()))

    def take(line: str) -> None:
        if questions is not None and questions.answer(line):
            return
        if line.strip() and not room.send_text(line):
            say("(nobody here can receive chat; message not sent)" if room.calling else
                "(nobody is connected yet; message not sent)")

    chatting = asyncio.ensure_future(terminal.read(take))
    try:
        done, _ = await asyncio.wait(leaves + [chatting], return_when=asyncio.FIRST_COMPLETED)
        if chatting in done and not chatting.cancelled() and chatting.exception() is None \
                and not terminal.interactive:
            await asyncio.wait(leaves, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*leaves, chatting):
            task.cancel()
        await asyncio.wait([*leaves, chatting])  # the prompt gives the terminal back before what follows is said
    if chatting.done() and not chatting.cancelled() and (error := chatting.exception()) is not None:
        raise error  # a chat reader that failed is a bug to show, not a quiet leave with status 0


def device_lines(devices: Sequence[Device]) -> list[str]:
    """One line a device, its kind first, and "none found" for a kind with none: a person can
    tell an empty machine from a listing that failed."""
    lines = []
    for kind in ("camera", "microphone", "speaker"):
        mine = [device for device in devices if device.kind == kind]
        width = max((len(device.id) for device in mine), default=0)
        lines += [f"{kind:<10}  {device.id:<{width}}  {device.name}  "
                  f"({device.flag if device.flag else f'no flag takes a {kind} yet'})" for device in mine]
        lines += [] if mine else [f"{kind:<10}  none found"]
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    return_big_buffers()  # the process is ours: video frames freed go back to the system (peer.memory)
    log_to_stderr(logging.DEBUG if args.verbose else logging.WARNING,
                  "%(asctime)s %(name)s %(levelname)s: %(message)s" if args.verbose else "peer: %(message)s")
    if not args.verbose:
        for noisy in ("aioice", "aiortc", "socketio", "engineio"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.list_devices:
        for line in device_lines(list_devices()):
            say(line)
        return 0
    try:
        return asyncio.run(run(args))
    except PeerError as error:
        print(f"peer: {printable(str(error))}", file=sys.stderr)  # may quote the server's reason
        return error.exit_code
    except KeyboardInterrupt:
        return 0
