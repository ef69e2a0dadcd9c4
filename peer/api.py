"""The API for scripted test peers and headless bots.

    import peer

    async with peer.join("demo", server="http://localhost:8080", video="testsrc") as room:
        someone = await room.wait_for_peer()
        room.send_text(f"hello {someone.name}")
        async for picture in room.frames(someone):      # newest frame, BGR numpy array
            ...

Everything a session starts (connections, tasks, threads, sockets) ends when the ``async with``
block does, also on an error or a cancellation.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Sequence, TypeVar, Union

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from signaling import DEFAULT_PORT
from signaling.protocol import Member

from . import wire
from .call import MAX_TRIES, Call
from .errors import NothingToRecord, RoomClosed, WaitTimeout
from .events import (CallEnded, ChatMessage, Connected, DataMessage, Event, FileFailed, FileProgress, FileReceived,
                     Interrupted, NoPath, PeerJoined, PeerLeft, Rejoined, Resumed, Retrying, SignalingLost,
                     TrackReceived)
from .ice import IceSettings
from .media.audio import AudioFrame, Converter
from .media import codecs
from .media.recorder import Recorder
from .media.sources import NONE, LocalMedia
from .media.speaker import Speaker
from .session import Session
from .stats import CallStats, FrameMeter, StatsSampler, Watched
from .transfer import DEFAULT_MAX_PER_PEER, DEFAULT_MAX_TOTAL, AcceptPolicy, Downloads, FileOffer

__all__ = [
    "Room", "join", "Member", "PeerJoined", "PeerLeft", "Connected", "CallEnded", "Retrying", "Interrupted",
    "Resumed", "ChatMessage",
    "DataMessage", "FileReceived", "FileFailed", "FileProgress", "FileOffer", "TrackReceived", "SignalingLost",
    "Rejoined", "Event", "Recorder", "DEFAULT_SERVER", "AudioFrame", "Speaker", "CallStats", "NoPath",
]

DEFAULT_SERVER = f"http://localhost:{DEFAULT_PORT}"
"""The signaling server ``join()``, the CLI and the examples use unless told otherwise."""


E = TypeVar("E", bound=Event)


class _RemoteMedia:
    """One remote track: read by one task (aiortc queues frames forever otherwise), counted,
    and handed to everyone reading it (``Room.frames``, ``Room.record``). Cancelling the task
    ends them all."""

    def __init__(self, member: Member, track: MediaStreamTrack) -> None:
        self.member = member
        self.track = track
        self.count = 0
        self.meter = FrameMeter() if track.kind == "video" else None
        """The frames and their size, for the call's statistics."""
        self.arrived = asyncio.Condition()
        self.ended = False
        self._readers: set[asyncio.Queue] = set()
        self.task = asyncio.ensure_future(self._drain())

    async def frames(self, latest: bool) -> AsyncIterator[Any]:
        """The frames (PyAV's) from now on until the track ends; with ``latest`` only the
        newest waits to be taken."""
        if self.ended:
            return
        queue: asyncio.Queue = asyncio.Queue(maxsize=1 if latest else 0)
        self._readers.add(queue)
        try:
            while (frame := await queue.get()) is not None:
                yield frame
        finally:
            self._readers.discard(queue)

    def _hand(self, frame: Any) -> None:
        for queue in self._readers:
            if queue.full():
                queue.get_nowait()  # stale: a slow consumer gets the newest frame only
            queue.put_nowait(frame)

    async def _drain(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.count += 1
                if self.meter is not None:
                    self.meter.saw(frame)
                self._hand(frame)
                async with self.arrived:
                    self.arrived.notify_all()
        except MediaStreamError:
            pass
        finally:
            self.ended = True
            self._hand(None)
            async with self.arrived:
                self.arrived.notify_all()


class Room:
    """Membership of a room with calls to everyone else in it; see ``join()``."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._subscribers: list[asyncio.Queue] = []
        self._history: list[Event] = []
        self._remote: dict[tuple[str, str], _RemoteMedia] = {}
        self._media_changed = asyncio.Event()
        """Set, and replaced by a new one, whenever a remote track comes or the room closes."""
        self._recorders: list[Recorder] = []
        self._speakers: list[Speaker] = []
        self._stats = StatsSampler()
        self._closed = False
        session.publish = self._on_event
        session.on_moved = self._on_moved

    # Lifetime

    async def __aenter__(self) -> "Room":
        await self.session.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Leave the room and stop everything this room started."""
        try:
            await asyncio.shield(self.session.leave())
        finally:
            self._closed = True
            codecs.release(self.session)
            try:
                await asyncio.gather(*(recorder.stop() for recorder in self._recorders),
                                     *(speaker.close() for speaker in self._speakers), return_exceptions=True)
            finally:
                # Every iterator and wait of this room ends: none is left waiting forever.
                for remote in self._remote.values():
                    remote.task.cancel()
                await asyncio.gather(*(r.task for r in self._remote.values()), return_exceptions=True)
                for queue in self._subscribers:
                    queue.put_nowait(None)
                self._media_change()

    # Who is here

    @property
    def name(self) -> str:
        """The room's name, as given to ``join()``."""
        return self.session.request.room

    @property
    def me(self) -> Optional[Member]:
        return self.session.me

    @property
    def members(self) -> list[Member]:
        """The others in the room (connected or not yet)."""
        return list(self.session.members.values())

    @property
    def connected(self) -> list[Member]:
        """Those we are in a connected call with."""
        return [call.remote for call in self.session.calls.values() if call.connected]

    @property
    def calling(self) -> list[Member]:
        """Those we have a call with, connected or still connecting."""
        return [call.remote for call in self.session.calls.values()]

    def verification_code(self, member: Optional[Member] = None) -> Optional[str]:
        """The code both sides of a call show; equal codes mean no one is in the middle."""
        call = self._call(member)
        return call.verification_code if call else None

    # Sending

    def send_text(self, text: str) -> int:
        """Chat to everyone connected; return how many calls it went to."""
        return self.session.send_chat(text)

    def send_json(self, value: Any) -> int:
        """Send a JSON value to every connected peer of ours (``DataMessage`` there).
        ValueError for one the other side would drop (see ``wire.encode_control``), whoever is
        connected; encoded once for all."""
        text = wire.encode_control(wire.DATA, data=value)
        return sum(call.send_control(text) for call in self.session.calls.values())

    async def send_file(self, path: Union[str, Path], to: Optional[Member] = None,
                        progress: Optional[Callable[[Member, int, int], None]] = None) -> str:
        """Send a file (to one member, or everyone connected); return its sha256 once checked
        by the receiver. Raises TransferError when a receiver leaves half-way."""
        return await self.session.send_file(Path(path), to.id if to else None, progress)

    # Receiving

    async def events(self, history: bool = True) -> AsyncIterator[Event]:
        """Every event of the room, in order (with ``history``, also those before this call)."""
        queue: asyncio.Queue = asyncio.Queue()
        if history:
            for event in self._history:
                queue.put_nowait(event)
        if self._closed:
            queue.put_nowait(None)
        self._subscribers.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(queue)

    async def frames(self, member: Optional[Member] = None, *, latest: bool = True,
                     kind: str = "video") -> AsyncIterator[np.ndarray]:
        """Remote frames as numpy arrays: video as BGR (height x width x 3), audio as the
        samples PyAV gives (channels x samples, or interleaved). With ``latest`` the newest
        frame only, stale ones dropped; without it every frame, for recording."""
        try:
            remote = await self._remote_media(member, kind)
        except ConnectionError:
            return  # the room closed before such a track came
        async for frame in remote.frames(latest):
            yield frame.to_ndarray(format="bgr24") if kind == "video" else frame.to_ndarray()

    async def audio_frames(self, member: Optional[Member] = None, *, latest: bool = False) -> AsyncIterator[AudioFrame]:
        """Remote sound as ``peer.AudioFrame``s: int16 samples shaped (samples, channels) with
        their rate, layout and time. Every frame in order (``latest=False``, what sound needs
        to stay whole), or the newest only."""
        try:
            remote = await self._remote_media(member, "audio")
        except ConnectionError:
            return  # the room closed before such a track came
        convert = Converter()
        async for frame in remote.frames(latest):
            yield convert.frame(frame)

    def play_audio(self, device: Optional[str] = None,
                   on_problem: Optional[Callable[[str], None]] = None) -> Speaker:
        """Play every member's sound, now and later, mixed on the default output device (or
        the one called ``device``) until the room closes or ``await speaker.close()``. Where
        no device opens, ``on_problem`` (default: a log warning) is told once; the calls go on.
        While it plays, the room's own microphone is turned down (``LocalMedia.playing``).
        Asked again for the same device while that plays, it returns the speaker playing
        (a second one would play every voice twice, a little apart)."""
        self._speakers = [speaker for speaker in self._speakers if not speaker.closed]
        playing = next((speaker for speaker in self._speakers if speaker.device == device), None)
        if playing is not None:
            return playing
        speaker = Speaker(device, on_problem, on_sound=self.session.media.playing)
        self._speakers.append(speaker)
        for (_, kind), remote in self._remote.items():
            if kind == "audio" and not remote.ended:
                speaker.follow(remote.frames(latest=False))
        return speaker

    def record(self, member: Member, path: Union[str, Path]) -> Recorder:
        """Record what ``member`` sends (video, audio) to ``path`` (.mp4, .webm or .mkv),
        encoded on a thread. The file is finished when those tracks end (the call ends, or
        its connection is renewed: record again on the next ``Connected``), on
        ``await recorder.stop()``, or when the room closes; ``await recorder.wait()`` for it.
        Raises NothingToRecord (a ValueError) when the member sends no media."""
        live = [remote for (member_id, _), remote in self._remote.items() if member_id == member.id and not remote.ended]
        if not live:
            raise NothingToRecord(f"{member.name} sends no media to record")
        recorder = Recorder(path, [remote.track.kind for remote in live])
        for remote in live:
            recorder.follow(remote.frames(latest=False))
        self._recorders = [r for r in self._recorders if not r.finished] + [recorder]
        return recorder

    # Statistics

    async def stats(self) -> list[CallStats]:
        """The statistics of each connected call: resolutions, fps and bitrates both ways,
        round-trip time, packet loss, video codec and path (see ``CallStats``). Rates are over
        the time since the room last read that connection: asked within a second, the same
        figures again; the first time for a connection, it is read twice, a second apart."""
        return await self._stats.sample(self._watched)

    def _watched(self) -> list[Watched]:
        def meter(member: Member) -> Optional[FrameMeter]:
            remote = self._remote.get((member.id, "video"))
            return remote.meter if remote is not None else None
        return [Watched(call.remote, call.pc, meter(call.remote)) for call in self.session.calls.values()
                if call.connected and not call.closed]

    # Waiting, for tests

    async def wait_for_peer(self, timeout: float = 15) -> Member:
        """Until someone is connected (returns them); names what it waited for on timeout."""
        return await self._wait(lambda: self.connected[0] if self.connected else None, timeout,
                                f"a connected peer in room {self.session.request.room!r}")

    async def wait_for_frames(self, count: int, member: Optional[Member] = None, timeout: float = 15,
                              kind: str = "video") -> int:
        """Until ``count`` frames have arrived from ``member`` (or anyone); returns the count."""
        deadline = time.monotonic() + timeout
        what = f"{count} {kind} frames from {member.name if member else 'anyone'}"
        remote = await self._with_deadline(self._remote_media(member, kind), deadline, what)

        async def enough() -> int:
            async with remote.arrived:
                await remote.arrived.wait_for(lambda: remote.count >= count or remote.ended)
            if remote.count < count:
                raise RoomClosed(f"the track ended after {remote.count} of {what}")
            return remote.count

        try:
            return await self._with_deadline(enough(), deadline, what)
        except TimeoutError:
            raise WaitTimeout(f"timed out waiting for {what} (got {remote.count})") from None

    async def wait_for_message(self, predicate: Optional[Callable[[Any], bool]] = None,
                               timeout: float = 15) -> Union[ChatMessage, DataMessage]:
        """Until a chat or JSON message arrives that ``predicate`` accepts (text or value)."""
        async def first() -> Union[ChatMessage, DataMessage]:
            async for event in self.events(history=False):
                if isinstance(event, (ChatMessage, DataMessage)):
                    content = event.text if isinstance(event, ChatMessage) else event.value
                    if predicate is None or predicate(content):
                        return event
            raise RoomClosed("the room closed")
        return await self._with_deadline(first(), time.monotonic() + timeout, "a matching message")

    async def wait_for(self, event_type: type[E], predicate: Optional[Callable[[E], bool]] = None,
                       timeout: float = 15, history: bool = True) -> E:
        """Until an event of ``event_type`` (that ``predicate`` accepts) happens; returns it."""
        async def first() -> E:
            async for event in self.events(history=history):
                if isinstance(event, event_type) and (predicate is None or predicate(event)):
                    return event
            raise RoomClosed("the room closed")
        return await self._with_deadline(first(), time.monotonic() + timeout, f"a {event_type.__name__} event")

    # Internals

    def _on_event(self, event: Event) -> None:
        """Every event of the session and its calls: what concerns the room's media first, then
        it is kept and handed to every reader."""
        if isinstance(event, TrackReceived):
            self._on_track(event)
        elif isinstance(event, CallEnded):
            self._on_call_ended(event)
        self._publish(event)

    def _publish(self, event: Event) -> None:
        self._history.append(event)
        del self._history[:-1000]
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _on_track(self, event: TrackReceived) -> None:
        if event.track is None:
            return
        old = self._remote.get((event.sender.id, event.kind))
        if old is not None:
            old.task.cancel()
        remote = self._remote[(event.sender.id, event.kind)] = _RemoteMedia(event.sender, event.track)
        if event.kind == "audio":
            for speaker in self._speakers:
                speaker.follow(remote.frames(latest=False))
        self._media_change()

    def _on_moved(self, old: Member, new: Member) -> None:
        """Its media goes on under its new id: in the statistics, ``frames(new)``, and ended
        with its call."""
        for key in [key for key in self._remote if key[0] == old.id]:
            remote = self._remote.pop(key)
            remote.member = new
            self._remote[(new.id, key[1])] = remote

    def _on_call_ended(self, event: CallEnded) -> None:
        # Its tracks end with the call, also those aiortc never started receiving on (a call
        # closed while connecting): end them here so that no reader waits for them forever.
        # Forgotten too: a room that lasts sees members come and go.
        for key in [key for key in self._remote if key[0] == event.member.id]:
            self._remote.pop(key).task.cancel()

    def _media_change(self) -> None:
        """Wake whoever waits for a remote track (``_remote_media``)."""
        self._media_changed.set()
        self._media_changed = asyncio.Event()

    async def _remote_media(self, member: Optional[Member], kind: str) -> _RemoteMedia:
        def find() -> Optional[_RemoteMedia]:
            for (member_id, track_kind), remote in self._remote.items():
                if track_kind == kind and (member is None or member.id == member_id) and not remote.ended:
                    return remote
            return None
        while (found := find()) is None and not self._closed:
            await self._media_changed.wait()
        if found is None:
            raise RoomClosed("the room closed")
        return found

    def _call(self, member: Optional[Member]) -> Optional[Call]:
        if member is not None:
            return self.session.calls.get(member.id)
        return next(iter(self.session.calls.values()), None)

    async def _wait(self, probe: Callable[[], Any], timeout: float, what: str) -> Any:
        async def poll() -> Any:
            while (value := probe()) is None:
                await asyncio.sleep(0.05)
            return value
        return await self._with_deadline(poll(), time.monotonic() + timeout, what)

    @staticmethod
    async def _with_deadline(awaitable: Any, deadline: float, what: str) -> Any:
        try:
            result = await asyncio.wait_for(awaitable, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise WaitTimeout(f"timed out waiting for {what}") from None
        _honour_cancellation()
        return result


def _honour_cancellation() -> None:
    """Raise CancelledError if the current task was cancelled and the cancellation got lost.

    Before Python 3.12, ``asyncio.wait_for`` returns the result instead of raising when the
    cancellation arrives as what it waits for completes (python-socketio waits that way for
    the server's answers too). The task is then marked as cancelling but runs on: a bot
    cancelled while joining would stay in the room.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


async def _open_while_connecting(session: Session, open_media: Callable[[], Awaitable[LocalMedia]]) -> LocalMedia:
    """Open the media while ``session`` connects to the signaling server: opening a source
    (a camera, a file, ``testsrc``) and connecting take some milliseconds each, and joining
    needs both; one after the other, a join waited for their sum (bench/call.py's join row).

    Either failing ends the other: a media error is raised before a signaling one, as when
    the media was opened first (a wrong ``video`` is said, whatever the server does); what
    the other opened is closed. So is everything when the join is cancelled."""
    opening = asyncio.ensure_future(open_media())
    connecting = asyncio.ensure_future(session.connect())
    try:
        await asyncio.wait([opening, connecting], return_when=asyncio.FIRST_EXCEPTION)
        if opening.done() and opening.exception() is not None:
            connecting.cancel()
        await asyncio.wait([opening, connecting])
        if (error := opening.exception()) is not None:
            raise error
        connecting.result()
        return opening.result()
    except BaseException:
        for task in (opening, connecting):
            task.cancel()  # when cancelled: LocalMedia.open closes what it opened so far
        await asyncio.gather(opening, connecting, return_exceptions=True)
        if opening.done() and not opening.cancelled() and opening.exception() is None:
            opening.result().stop()
        await session.disconnect()
        raise


class _Joining:
    """What ``join()`` returns, for ``async with``: entering opens the media (unless given),
    connects and joins."""

    def __init__(self, make: Callable[[], Awaitable[Session]], owns_media: bool) -> None:
        self._make = make
        self._owns_media = owns_media
        """Whether the media is ours to stop when joining fails (it is the caller's when given)."""
        self._room: Optional[Room] = None

    async def __aenter__(self) -> Room:
        session = await self._make()
        self._room = Room(session)
        try:
            room = await self._room.__aenter__()
        except BaseException:
            codecs.release(session)
            if self._owns_media:
                session.media.stop()
            raise
        try:
            _honour_cancellation()
        except asyncio.CancelledError:
            await room.close()
            raise
        return room

    async def __aexit__(self, *exc: Any) -> None:
        if self._room is not None:
            await self._room.__aexit__(*exc)


def join(room: str, *, server: str = DEFAULT_SERVER, name: str = "bot", token: Optional[str] = None,
         video: Union[str, MediaStreamTrack] = NONE, audio: Union[str, MediaStreamTrack] = NONE,
         video_size: Optional[str] = None, fps: Optional[int] = None, codec: Optional[str] = None,
         bitrate: Optional[Union[int, str]] = None, media: Optional[LocalMedia] = None,
         ice: Optional[IceSettings] = None, ice_hosts: Sequence[str] = (),
         stun: Sequence[str] = (), turn: Sequence[str] = (), turn_user: Optional[str] = None,
         turn_password: Optional[str] = None, relay_only: bool = False, downloads: Optional[Union[str, Path]] = None,
         accept_files: Optional[AcceptPolicy] = None, max_download_per_peer: int = DEFAULT_MAX_PER_PEER,
         max_download_total: int = DEFAULT_MAX_TOTAL, retries: int = MAX_TRIES) -> _Joining:
    """Join ``room``: ``async with peer.join("demo", ...) as room``.

    ``video``/``audio`` take the CLI's source names (``testsrc``, ``camera``, ``mic``, ``sine:880``,
    a file, a device, ``none``) or a track such as ``FrameSource`` or ``AudioSource`` for frames
    or samples you make; ``audio="mic"`` with no microphone there goes on without sound (a
    warning is logged). ``media`` takes sources
    opened beforehand with ``LocalMedia.open`` instead (the CLI opens the camera before its
    window): the room stops them when it closes, and a join that fails leaves them open, to
    stop or to join with elsewhere. ``ice_hosts`` is the CLI's ``--ice-host``, ``stun`` and
    ``turn`` its ``--stun`` and ``--turn`` (URLs; ``turn_user`` and ``turn_password`` go with
    every ``turn`` URL), ``relay_only`` its ``--relay-only``; ``ice`` an ``IceSettings`` in
    place of all of them (several TURN servers with their own credentials: ``servers``).
    With no STUN or TURN server given, those the signaling server hands out in its join
    acknowledgement are used (``IceSettings.offered``). Received files are saved in
    ``downloads``; ``accept_files`` decides which are taken: True, False, or a function of a
    ``FileOffer`` returning a bool (or an awaitable one); by default every file when
    ``downloads`` is given, none without. At most ``max_download_per_peer`` bytes from each peer and ``max_download_total`` in all are taken.
    ``video_size`` (``"320x240"``) and ``fps`` make the video sent that size and at most that
    rate (see ``LocalMedia.open``); ``codec`` (``"vp8"`` or ``"h264"``) is put first in every
    offer and answer; ``bitrate`` (``"500k"``, ``"2M"`` or bits/s) is where the encoders start
    and the most they send, for every encoder of this process (``peer.media.codecs``; so is
    the frame rate H.264 is told, from ``fps``): the newest open room's that asked, else the
    defaults.
    Raises SignalingUnreachable, JoinRefused or MediaError with a message for people,
    IceConfigError (a ValueError too) for an ICE URL aiortc cannot use, TURN without
    credentials, or ``relay_only`` with no TURN server (of ours or the server's), and
    ValueError for ``accept_files`` without ``downloads``, ``media`` with ``video`` or
    ``audio``, ``ice`` with the keywords it replaces, or a codec, bitrate, size or rate we
    cannot send, or retries below 0. ``retries`` is how many new connections a call gets, one
    after another, when its path dies or none is found (``Retrying``), before it ends (``CallEnded``).
    """
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, not {retries}")
    if media is not None and (video != NONE or audio != NONE):
        raise ValueError("join() takes media, or video and audio to open, not both")
    if ice is not None and (ice_hosts or stun or turn or turn_user or turn_password or relay_only):
        raise ValueError("join() takes ice, or ice_hosts, stun, turn and relay_only, not both")
    if codec is not None and codec not in codecs.CODECS:
        raise ValueError(f"not a video codec: {codec!r} (one of {', '.join(codecs.CODECS)})")
    rate = codecs.parse_bitrate(bitrate) if isinstance(bitrate, str) else \
        codecs.check_bitrate(bitrate) if bitrate is not None else None
    files = Downloads(downloads, accept_files, max_per_peer=max_download_per_peer, max_total=max_download_total)
    if ice is None:
        ice = IceSettings(host_addresses=tuple(ice_hosts), stun=tuple(stun), turn=tuple(turn),
                          turn_user=turn_user, turn_password=turn_password, relay_only=relay_only)

    async def make() -> Session:
        session = Session(room, server, name, token=token, media=media, ice=ice, downloads=files, codec=codec,
                          retries=retries)
        if media is None:
            session.media = await _open_while_connecting(session, lambda: LocalMedia.open(video, audio, video_size, fps))
        codecs.ask(session, rate, session.media.fps)
        return session

    return _Joining(make, owns_media=media is None)
