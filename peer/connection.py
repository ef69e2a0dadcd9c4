"""One ``RTCPeerConnection`` of a call, with its data channels and heartbeat.

A call (``peer.call``) makes a fresh ``Connection`` for every negotiation that cannot reuse
the current one (aiortc can neither roll back an offer nor restart ICE) and throws the old one
away whole: ``close()`` detaches it from the call first, so nothing the old connection hears
later (a state change, a message, a track) reaches the call. Everything that belongs to one
connection lives here and starts afresh with the next: its channels, whether the other side
speaks our conventions, when it was last heard from, the candidates waiting for its remote
description, whether its chat channel opened or was refused.

The channels: ``chat`` (plain text typed by people, as the classic browser clients send it),
``control`` (JSON between our own peers: heartbeat, bye, application data, moved) and
``files`` (``peer.transfer``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Iterable, Optional, Protocol, Union

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from signaling.protocol import Member

from . import wire
from .aiortc_fixes import (close_connection, complete_video_at_marker, guard_receipt, hold_less_audio, ice_checks,
                           packets_arrived)
from .events import CallEvent, ChatMessage, DataMessage, Moved, NoPath, TrackReceived
from .ice import IceSettings
from .media import codecs, encoding
from .reach import verdict
from .transfer import FileSender
from .wire import Accept, End, Failed, Received, Start

logger = logging.getLogger(__name__)

CHAT_CHANNEL = "chat"
"""Plain UTF-8 text typed by people, as the classic browser clients send it."""
CONTROL_CHANNEL = "control"
"""JSON objects between our own peers: heartbeat, bye, application data."""
FILES_CHANNEL = "files"
"""File transfers (see ``peer.transfer``)."""

MAX_PENDING_CANDIDATES = 100
"""Trickled candidates kept until the remote description comes; more are dropped."""
CHECKS_EVERY = 0.25
"""Seconds between two looks at the ICE checks of a connection that is not connected yet."""
LONGEST_LOOK = 2 * CHECKS_EVERY
"""The most one look adds to the time the checks are counted to have had: the event loop may
have stood still longer (a busy machine), and then so did the checks' answers."""


class Owner(Protocol):
    """What a connection tells the call it serves, until it is closed."""

    remote: Member

    def publish(self, event: CallEvent) -> None:
        """``ChatMessage``, ``DataMessage``, ``TrackReceived``, ``Moved``."""

    def on_connected(self) -> None:
        """ICE and DTLS are up."""

    async def on_lost(self, reason: str) -> None:
        """The path died: the connection failed or closed, or a peer of ours stayed silent."""

    def on_silent(self, seconds: float) -> None:
        """A peer of ours has been silent for ``seconds``: its link may be down for a moment."""

    def on_heard_again(self) -> None:
        """The peer silent before (``on_silent``) is heard again."""

    async def on_no_path(self, no_path: NoPath) -> None:
        """ICE found no path: the connection never came up, and will not."""

    def on_left(self) -> None:
        """The other side hung up: ``bye``, or a classic client's chat channel closing."""

    def on_chat_open(self) -> None:
        """The chat channel opened: lines typed before it may go."""

    def on_file(self, message: Union[Start, End, bytes]) -> None:
        """A file the other side sends us, one message of it."""


class _Gone:
    """The owner of a closed connection: whatever it still hears goes nowhere."""

    def __init__(self, remote: Member) -> None:
        self.remote = remote

    def publish(self, event: CallEvent) -> None:
        pass

    def on_connected(self) -> None:
        pass

    async def on_lost(self, reason: str) -> None:
        pass

    def on_silent(self, seconds: float) -> None:
        pass

    def on_heard_again(self) -> None:
        pass

    async def on_no_path(self, no_path: NoPath) -> None:
        pass

    def on_left(self) -> None:
        pass

    def on_chat_open(self) -> None:
        pass

    def on_file(self, message: Union[Start, End, bytes]) -> None:
        pass


class Connection:
    """One ``RTCPeerConnection`` and what lives on it, serving ``owner`` until ``close()``."""

    def __init__(self, owner: Owner, ice: IceSettings, complain: Callable[..., None], *,
                 heartbeat_interval: float, dead_after: float, lost_after: float,
                 codec: Optional[str] = None) -> None:
        self.pc = RTCPeerConnection(ice.configuration())
        self._codec = codec
        """The video codec to put first (``peer.media.codecs``): None leaves aiortc's order."""
        self._owner: Owner = owner
        self._complain = complain
        """The call's ``Complaints``: one warning per kind of bad input from its member."""
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        """Seconds of silence from a peer of ours that are said (``Owner.on_silent``)."""
        self._lost_after = lost_after
        """Seconds of silence after which the path counts as dead (``Owner.on_lost``)."""
        self.chat: Optional[RTCDataChannel] = None
        self.control: Optional[RTCDataChannel] = None
        self.sender: Optional[FileSender] = None
        self.files_open = asyncio.Event()
        self.ours = asyncio.Event()
        """Set once the other side shows it speaks our conventions: it opened a ``control``
        channel (no classic client does), or sent a well-formed control message on ours. Until
        then nothing of ours goes to it (a classic client takes every channel for chat and
        greets on it)."""
        self.chat_refused = False
        """The answer refused our data channel (see ``peer.rollback``): no chat, control or files."""
        self.widened = False
        """Our offer on this connection went out widened (``peer.rollback``): its answer is narrowed."""
        self.pending_candidates: list[Optional[dict[str, Any]]] = []
        self._chat_opened = False
        self._last_seen = time.monotonic()
        self._heartbeat: Optional[asyncio.Future] = None
        self._closing = False
        self._checking: Optional[asyncio.Future] = None
        self.checked_for = 0.0
        """Seconds the ICE checks have run with no answer since the last new pair (``_watch_checks``)."""
        self.said_no_path = False
        """The owner was told this connection found no path (``Owner.on_no_path``)."""
        self._tasks: list[asyncio.Future] = []
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("datachannel", self._on_datachannel)
        self._tracks: dict[str, MediaStreamTrack] = {}
        """The newest remote track of each kind: the one the room reads."""
        self.pc.on("track", self._on_track)

    # What the call does with it

    async def offer(self, tracks: Iterable[MediaStreamTrack], receive: Iterable[str]) -> str:
        """Open our channels, send ``tracks``, also receive the kinds in ``receive`` that we do
        not send; return the offer, every candidate in it."""
        # chat last: a tutorial's ``ondatachannel = e => chat = e.channel`` keeps the last one
        for label in (CONTROL_CHANNEL, FILES_CHANNEL, CHAT_CHANNEL):
            self._adopt(self.pc.createDataChannel(label))
        kinds = set()
        for track in tracks:
            encoding.add_track(self.pc, track)
            kinds.add(track.kind)
        for kind in receive:
            if kind not in kinds:
                self.pc.addTransceiver(kind, direction="recvonly")
        codecs.prefer(self.pc, self._codec)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        # aiortc gathers every candidate during setLocalDescription: they travel in the SDP.
        return self.pc.localDescription.sdp

    async def answer(self, sdp: str, tracks: Iterable[MediaStreamTrack]) -> str:
        """Take the remote offer ``sdp``, send those of ``tracks`` whose kinds it offers; return
        our answer, every candidate in it."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        offered = {t.kind for t in self.pc.getTransceivers()}
        sending = {s.track.kind for s in self.pc.getSenders() if s.track is not None}
        for track in tracks:
            if track.kind in offered and track.kind not in sending:
                encoding.add_track(self.pc, track)
                sending.add(track.kind)
        await self.flush_candidates()
        codecs.prefer(self.pc, self._codec)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._watch_checks()
        return self.pc.localDescription.sdp

    async def accept(self, sdp: str) -> None:
        """Take the remote answer ``sdp`` to our offer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        await self.flush_candidates()
        self._watch_checks()

    async def add_candidate(self, candidate: Optional[dict[str, Any]]) -> bool:
        """Take a trickled candidate (None or an empty one ends them), now or once the remote
        description is there; False when too many wait already (it is dropped)."""
        if len(self.pending_candidates) >= MAX_PENDING_CANDIDATES:
            return False
        self.pending_candidates.append(candidate)
        if self.pc.remoteDescription is not None:
            await self.flush_candidates()
        return True

    async def flush_candidates(self) -> None:
        """Add trickled candidates that arrived before the remote description could take them."""
        pending, self.pending_candidates = self.pending_candidates, []
        for candidate in pending:
            await self.pc.addIceCandidate(_parse_candidate(candidate))

    def send_chat(self, text: str) -> bool:
        """Send a line of chat; False when the chat channel is not open (yet)."""
        return _send(self.chat, text)

    def send_control(self, text: str) -> bool:
        """Send a control message to a peer of ours; False to others or when not open."""
        return self.ours.is_set() and _send(self.control, text)

    def send_files(self, text: str) -> bool:
        """Send a reply of our file receiver."""
        return _send(self.sender.channel if self.sender else None, text)

    def no_path(self, patience: float) -> Optional[NoPath]:
        """What ICE tried, when its checks show no path after ``patience`` seconds of them
        (``peer.reach.verdict``); None while one may turn up, or once one has."""
        return verdict(ice_checks(self.pc), self.checked_for, patience)

    @property
    def responsive(self) -> bool:
        """A peer of ours heard from within ``dead_after`` seconds."""
        return self.ours.is_set() and time.monotonic() - self._last_seen < self._dead_after

    def spawn(self, coroutine: Awaitable[Any]) -> asyncio.Future:
        """Run ``coroutine`` for as long as this connection serves: ``close()`` cancels it, and
        one spawned once it is closing never runs (a channel may open while aiortc closes)."""
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.ensure_future(coroutine))
        if self._closing:
            self._tasks[-1].cancel()
        return self._tasks[-1]

    async def close(self) -> None:
        """Throw this connection away: from now on nothing it hears reaches its owner, its
        tasks end (but the one closing it), and the ``RTCPeerConnection`` closes."""
        self._closing = True
        self._owner = _Gone(self._owner.remote)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await close_connection(self.pc)

    # What it hears

    async def _on_state(self) -> None:
        logger.debug("connection with %s: %s", self._owner.remote.name, self.pc.connectionState)
        if self.pc.connectionState == "connected":
            self._heard()
            self._owner.on_connected()
        elif self.pc.connectionState in ("failed", "closed"):
            await self._owner.on_lost(f"connection {self.pc.connectionState}")

    def _on_track(self, track: MediaStreamTrack) -> None:
        """A remote track goes up; one it replaces (the other side offered two of a kind: the
        room reads the newest) is read here to its end, since aiortc queues every frame of a
        track until it is read, for as long as the connection lives."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track:
                hold_less_audio(transceiver.receiver)
                complete_video_at_marker(transceiver.receiver)
        self._owner.publish(TrackReceived(self._owner.remote, track.kind, track))
        replaced, self._tracks[track.kind] = self._tracks.get(track.kind), track
        if replaced is not None:
            self.spawn(_drain(replaced))

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == CONTROL_CHANNEL:
            self.ours.set()  # only our peers open a control channel
        self._adopt(channel)

    def _adopt(self, channel: RTCDataChannel) -> None:
        """Take a data channel into use by its label (ours, or the remote's on answering)."""
        guard_receipt(channel.transport, lambda error: self._complain(
            "channel", "dropped a data channel message from %r that could not be handled: %s: %s",
            self._owner.remote.name, type(error).__name__, error), self._cut_off)
        if channel.label == CHAT_CHANNEL:
            if self.chat is not None:
                self.chat.remove_listener("close", self._on_chat_closed)  # only the newest one's closing counts
            self.chat = channel
            channel.on("message", self._on_chat)
            channel.on("close", self._on_chat_closed)
            _when_open(channel, self._on_chat_open)
        elif channel.label == CONTROL_CHANNEL:
            self.control = channel
            channel.on("message", self._on_control)
            _when_open(channel, self._start_heartbeat)
        elif channel.label == FILES_CHANNEL:
            self.sender = FileSender(channel)
            channel.on("message", self._on_files)
            _when_open(channel, self.files_open.set)

    def _cut_off(self) -> None:
        """The member sent a message larger than any peer may: this connection goes (the call
        then recovers or ends as after any lost connection)."""
        logger.warning("%r sent a data channel message larger than any peer may send: connection cut",
                       self._owner.remote.name)
        self.spawn(close_connection(self.pc))

    def _on_chat_open(self) -> None:
        """From now on, the chat channel closing means the other side hung up (see
        ``_on_chat_closed``)."""
        self._chat_opened = True
        self._owner.on_chat_open()

    def _on_chat(self, message: Any) -> None:
        self._heard()
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        self._owner.publish(ChatMessage(self._owner.remote, message))

    def _on_chat_closed(self) -> None:
        """Classic clients have no heartbeat: the chat channel closing is how they hang up.
        One that never opened was refused in negotiation; the call goes on without it."""
        if self._chat_opened and not self.ours.is_set():
            self._owner.on_left()

    def _on_control(self, message: Any) -> None:
        """Only a well-formed message counts: a classic client's greeting here is chat sent
        to the wrong channel, and is ignored without a word."""
        try:
            parsed = wire.parse_control(message)
        except wire.BadControlMessage as error:
            self._dropped("control", "dropped a control message from %r: %s", message, error)
            return
        self._heard()
        self.ours.set()
        if parsed.type == wire.PING:
            _send(self.control, wire.encode_control(wire.PONG))
        elif parsed.type == wire.BYE:
            self._owner.on_left()
        elif parsed.type == wire.DATA:
            self._owner.publish(DataMessage(self._owner.remote, parsed.data))
        elif parsed.type == wire.MOVED and parsed.id is not None:  # parse_control checks that it is there
            self._owner.publish(Moved(self._owner.remote, parsed.id))  # the session checks it against presence

    def _on_files(self, message: Any) -> None:
        """Every message is checked, and a bad one dropped; any other failure costs that message
        only, as on every channel (``guard_receipt``)."""
        self._heard()
        if self.sender is None:
            return
        try:
            parsed = message if isinstance(message, bytes) else wire.parse_files(message)
        except wire.BadFilesMessage as error:
            self._dropped("files", "dropped a bad message on the files channel from %s: %s", message, error)
            return
        if isinstance(parsed, (Accept, Received, Failed)):
            self.sender.on_reply(parsed)  # the other side's answer to what we send
        else:
            self._owner.on_file(parsed)  # what the other side sends us

    def _dropped(self, kind: str, text: str, message: Any, error: Exception) -> None:
        """A message that breaks the rules of one of our channels: from a peer of ours, a
        warning (once, see ``Complaints``); from a classic client, which greets on every
        channel it is given, not a word."""
        if self.ours.is_set():
            self._complain(kind, text, self._owner.remote.name, error)
        else:
            logger.debug("ignored %r on the %s channel of %s (not one of our peers)", message, kind,
                         self._owner.remote.name)

    # Finding a path

    def _watch_checks(self) -> None:
        """Look at the ICE checks until a pair answers: when they show there is no path, say
        so (once) within seconds, where aioice would take 63."""
        if self._checking is None:
            self._checking = self.spawn(self._look_at_checks())

    async def _look_at_checks(self) -> None:
        pairs, before = -1, time.monotonic()
        while self.pc.connectionState not in ("connected", "closed", "failed"):
            await asyncio.sleep(CHECKS_EVERY)
            now, checks = time.monotonic(), ice_checks(self.pc)
            if checks is None or not checks.started or checks.pairs != pairs:
                self.checked_for = 0.0  # new pairs get their time too (a browser trickles candidates)
                pairs = checks.pairs if checks is not None and checks.started else -1
            else:
                self.checked_for += min(now - before, LONGEST_LOOK)
            before = now
            if checks is not None and checks.succeeded:
                return  # a path: DTLS and the call's watchdog take it from here
            if self.said_no_path:
                return  # said already (``Call`` asked, on the other side's new offer)
            if (no_path := verdict(checks, self.checked_for)) is not None:
                self.said_no_path = True
                await self._owner.on_no_path(no_path)
                return

    # Staying connected

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = self.spawn(self._beat())

    async def _beat(self) -> None:
        """Ping over the control channel. Silence for ``dead_after`` seconds is said at once
        (``on_silent``: a cable pulled, a link down), and the call is kept: a link back within
        ``lost_after`` seconds finds it as it was (``on_heard_again``), since aiortc's
        connection survives such an outage. Silence for ``lost_after`` seconds means the path
        is gone (``on_lost``), long before aiortc's 30 s consent timeout. Any packet
        from it counts as an answer: on a lossy, slow link a pong can wait seconds behind
        retransmissions (and a file's data) while its video still comes. Not those read after
        this process stood still (stopped, suspended) as long: they queued meanwhile, and the
        other side has noticed our silence and is calling again, which needs our part."""
        self._heard()
        arrived = packets_arrived(self.pc)
        silent = False
        while True:
            if self.ours.is_set():
                _send(self.control, wire.encode_control(wire.PING))
            slept = time.monotonic()
            await asyncio.sleep(self._heartbeat_interval)
            now = packets_arrived(self.pc)
            if now != arrived and time.monotonic() - slept < self._dead_after:
                self._heard()
            arrived = now
            if not self.ours.is_set():
                continue
            quiet = time.monotonic() - self._last_seen
            if quiet > self._lost_after:
                await self._owner.on_lost(f"no answer for {self._lost_after:g} s")
                return
            if silent != (quiet > self._dead_after):
                silent = not silent
                if silent:
                    self._owner.on_silent(self._dead_after)
                else:
                    self._owner.on_heard_again()

    def _heard(self) -> None:
        self._last_seen = time.monotonic()


async def _drain(track: MediaStreamTrack) -> None:
    """Read ``track`` to its end, throwing its frames away."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass


def _when_open(channel: RTCDataChannel, callback: Callable[[], Any]) -> None:
    if channel.readyState == "open":
        callback()
    else:
        channel.once("open", callback)


def _send(channel: Optional[RTCDataChannel], text: str) -> bool:
    """False when the channel is not open; a message over the a=max-message-size the other
    side announced (any size it likes) is dropped and logged: aiortc raises ValueError, which
    would end whatever sent it (the CLI's chat input) and the sending to others."""
    if channel is None or channel.readyState != "open":
        return False
    try:
        channel.send(text)
    except ValueError as error:
        logger.warning("%s message not sent: %s", channel.label, error)
    return True


def _parse_candidate(candidate: Optional[dict[str, Any]]) -> Any:
    """A browser's trickled candidate as aiortc wants it; None ends the candidates."""
    if not candidate or not candidate.get("candidate"):
        return None
    text = candidate["candidate"]
    parsed = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    return parsed
