"""One remote member of the room: its RTCPeerConnection, negotiation and data channels.

A ``Call`` is driven by signaling messages put in its inbox and handled one at a time
(python-socketio runs handlers concurrently; an answer overtaking its offer breaks aiortc).
Media is not its business: local tracks come in from ``LocalMedia``, remote tracks leave
through the ``track`` event.

aiortc cannot roll back an offer or restart ICE, so every recovery here is a fresh
``RTCPeerConnection``: on glare (an offer arriving while ours is pending) it answers on a
new one; when the path dies while the member is still in the room it offers on a new one,
a bounded number of times.

The other side may be a classic tutorial client rather than one of ours: it has no
``control`` channel (or takes ours for chat and greets on it), knows no ``bye``, and when it
is a browser that rolled back its own offer to answer ours, it may refuse our data channel.
None of that ends or renews the call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcsctptransport import (SCTP_DATA_FIRST_FRAG, SCTP_DATA_LAST_FRAG, DataChunk, RTCSctpTransport,
                                     tsn_plus_one)
from aiortc.sdp import candidate_from_sdp
from pyee.asyncio import AsyncIOEventEmitter

from signaling import protocol
from signaling.protocol import Member

from . import rollback, wire
from .errors import TransferError
from .ice import IceSettings
from .media.sources import LocalMedia
from .transfer import Downloads, FileReceiver, FileSender, Progress
from .verification import connection_code

logger = logging.getLogger(__name__)

CHAT_CHANNEL = "chat"
"""Plain UTF-8 text typed by people, as the classic browser clients send it."""
CONTROL_CHANNEL = "control"
"""JSON objects between our own peers: heartbeat, bye, application data."""
FILES_CHANNEL = "files"
"""File transfers (see ``peer.transfer``)."""

CONNECT_TIMEOUT = 10.0
"""A negotiation not connected by then is tried again on a fresh connection."""
MAX_TRIES = 3
FILES_OPEN_TIMEOUT = 10.0
WIDENED_ANSWER_WAIT = 3.0
"""Seconds a widened offer waits for its answer before the plain one goes: a browser answers
within a fraction of a second."""
INBOX_SIZE = 100
"""Signaling messages from one member waiting to be handled. A negotiation takes an offer or
an answer and a few dozen trickled candidates at most; a newer offer replaces queued older
ones (see ``_Inbox``), so only a flood fills it, and what overflows is dropped."""
MAX_PENDING_CANDIDATES = 100
"""Trickled candidates kept until the remote description comes; more are dropped."""
MAX_MESSAGE_FRAGMENTS = 1024
"""SCTP fragments of one data channel message (about 1.2 MB). We announce
``a=max-message-size:65536`` (some 55 fragments), so an honest sender never comes near it;
aiortc itself would reassemble a message of any size, rescanning its fragments on each new
one, so a peer sending one of hundreds of megabytes would cost the victim that much memory
and CPU time on the event loop. Past it, the connection is cut."""
MAX_HELD_CHUNKS = 16384
"""SCTP fragments one stream may hold in all (about 19 MB): a message sent out of order evades
the count above, and a lost chunk honestly holds back up to a congestion window of later ones."""

Signal = Callable[[dict[str, Any]], Awaitable[None]]

_START_OFFER = {"type": "_start-offer"}
_PLAIN_OFFER = {"type": "_plain-offer"}
_CANDIDATE = re.compile(r"^a=(candidate:.+?)\r?$", re.MULTILINE)
_MID = re.compile(r"^a=mid:(\S+)", re.MULTILINE)
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


class Call(AsyncIOEventEmitter):
    """The connection to one remote member.

    Events: ``connected``, ``chat`` (text), ``data`` (a JSON value), ``track`` (a remote
    MediaStreamTrack), ``moved`` (the member's new id after it rejoined), ``retrying``
    (reason, try number), file events (see ``Session``), and ``closed`` (reason).
    """

    def __init__(self, remote: Member, signal: Signal, ice: IceSettings, media: LocalMedia,
                 *, heartbeat_interval: float = 0.5, dead_after: float = 2.0,
                 downloads: Optional[Downloads] = None, still_there: Callable[[], bool] = lambda: False,
                 initiator: Callable[[], bool] = lambda: True, classic: bool = False) -> None:
        super().__init__()
        self.remote = remote
        self.downloads = downloads or Downloads()
        """What is done with files offered (where they go, which are taken, the quotas);
        shared by every call of a session."""
        self._signal = signal
        self._ice = ice
        self._media = media
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self._still_there = still_there
        self._initiator = initiator
        self._classic = classic
        """The other side is a classic client on a classic server: our candidates go as
        messages too, our offer has the classic layout and is widened (``peer.rollback``),
        and it may wait for an answer as long as it takes (nobody may be in the room yet)."""
        self._widen = True
        self._widened: Optional[RTCPeerConnection] = None
        """The connection whose offer went out widened, if any: only its answer is narrowed."""
        self.connected = False
        self.closed = False
        self._tries = 0
        self._receiver: Optional[FileReceiver] = None
        self._chat_backlog: list[str] = []
        self._pending_candidates: list[Optional[dict[str, Any]]] = []
        self._complain = Complaints(logger)
        self._watchdog: Optional[asyncio.Future] = None
        self._inbox = _Inbox(lambda: self.remote.name)
        self._tasks: list[asyncio.Future] = [asyncio.ensure_future(self._run())]
        self.pc = self._new_pc()

    # What the session calls

    def start_offer(self) -> None:
        """Send an offer (the offerer rule says we are the newcomer; or, on a classic server,
        the one we made on joining again, after our signaling was away)."""
        self._widen = True
        self._inbox.put(_START_OFFER, ours=True)

    def handle(self, message: dict[str, Any]) -> None:
        """Queue a signaling message from this member; handled in arrival order."""
        self._inbox.put(message)

    def send_chat(self, text: str) -> bool:
        """Send a line of chat; lines sent before the channel opens wait for it.
        False once the call is over."""
        if self.closed or self._chat_refused:
            return False
        if not _send(self.chat, text):
            self._chat_backlog.append(text)
        return True

    def send_control(self, text: str) -> bool:
        """Send a message made with ``wire.encode_control`` to a peer of ours (not to classic
        clients, which lack the channel)."""
        return self._peer_is_ours and _send(self.control, text)

    def announce_id(self, member_id: str) -> None:
        """Tell the other side our new signaling id after we rejoined, so it keeps this call."""
        self.send_control(wire.encode_control(wire.MOVED, id=member_id))

    async def send_file(self, path: Path, progress: Optional[Progress] = None) -> str:
        """Send a file; return its sha256 once the other side has checked and saved it."""
        try:
            await asyncio.wait_for(self._files_open.wait(), FILES_OPEN_TIMEOUT)
            await asyncio.wait_for(self._ours.wait(), FILES_OPEN_TIMEOUT)  # a tutorial client takes files for chat
        except asyncio.TimeoutError:
            pass
        if self._sender is None or self._sender.channel.readyState != "open" or not self._peer_is_ours:
            raise TransferError(f"cannot send {path.name}: no file channel to {self.remote.name} "
                                "(not connected, or not one of our peers)")
        return await self._sender.send(path, progress)

    @property
    def alive(self) -> bool:
        """Connected and heard from recently: worth keeping through a signaling outage."""
        return self.connected and not self.closed and self._peer_is_ours and \
            time.monotonic() - self._last_seen < self._dead_after

    @property
    def verification_code(self) -> Optional[str]:
        """The code both sides compare (``12345 67890 12345 67890 12345``), from the certificates
        DTLS used: equal unless someone sits in the middle. None until DTLS has completed."""
        return connection_code(self.pc)

    async def close(self, reason: str = "hung up", notify: bool = True) -> None:
        """Hang up. ``notify`` sends ``bye`` on the control channel first, so the other
        side knows at once rather than after aiortc's 30 s consent timeout."""
        if self.closed:
            return
        self.closed = True
        if notify and self.send_control(wire.encode_control(wire.BYE)):
            await asyncio.sleep(0.05)  # let the bye leave before the transport goes
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._receiver is not None:
            self._receiver.shutdown(f"{self.remote.name} left during the transfer")
        await _close_pc(self.pc)
        logger.info("call with %s closed: %s", self.remote.name, reason)
        self.emit("closed", reason)

    # Negotiation

    async def _run(self) -> None:
        self._ice.apply()  # this task negotiates, and gathers, every connection of the call
        while True:
            message = await self._inbox.get()
            try:
                await self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bad SDP or candidate must not end the call
                self._complain("signal", "ignored a bad %s from %r: %s", message.get("type"), self.remote.name,
                               error or type(error).__name__)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == _START_OFFER["type"]:
            await self._offer()
        elif kind == _PLAIN_OFFER["type"]:
            if self._widened is self.pc and self.pc.remoteDescription is None:
                self._widen = False
                await self._offer()
        elif kind == protocol.OFFER:
            await self._answer(message["sdp"])
        elif kind == protocol.ANSWER:
            if self.pc.signalingState != "have-local-offer":
                logger.debug("answer from %s with no offer pending: ignored", self.remote.name)
                return
            sdp = message["sdp"]
            if self._widened is self.pc:
                sdp = rollback.narrow_answer(sdp, self.pc.localDescription.sdp)
            if rollback.refuses_data(sdp):
                self._chat_refused = True
                logger.warning("%s refused our data channel: no chat or files with it on this call "
                               "(video and sound go on)", self.remote.name)
                sdp = rollback.bundle_refused_data(sdp)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
            await self._flush_candidates()
            self._watch(self.pc)
        elif kind == protocol.CANDIDATE:
            if len(self._pending_candidates) >= MAX_PENDING_CANDIDATES:
                self._complain("candidates", "dropped candidates from %r: more than %d before its description",
                               self.remote.name, MAX_PENDING_CANDIDATES)
                return
            self._pending_candidates.append(message.get("candidate"))
            if self.pc.remoteDescription is not None:
                await self._flush_candidates()
        elif kind == protocol.BYE:
            await self.close("left", notify=False)

    async def _offer(self) -> None:
        if self.pc.signalingState != "stable" or self.pc.remoteDescription is not None:
            await self._fresh_pc()
        pc = self.pc
        # chat last: a tutorial's ``ondatachannel = e => chat = e.channel`` keeps the last one
        for label in (CONTROL_CHANNEL, FILES_CHANNEL, CHAT_CHANNEL):
            self._adopt(pc.createDataChannel(label))
        kinds = set()
        for track in self._media.subscribe():
            pc.addTrack(track)
            kinds.add(track.kind)
        # A classic browser that rolled back its own offer to answer this one accepts our data
        # channel only under the mid its own had: one more than its tracks. So toward classic
        # clients we offer what we send and nothing more (the layout of a classic client with
        # our devices); elsewhere we also ask for the kinds we do not send.
        for kind in () if self._classic else ("audio", "video"):
            if kind not in kinds:
                pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        # aiortc gathers every candidate during setLocalDescription: they travel in the SDP.
        sdp = pc.localDescription.sdp
        if self._classic and self._widen:
            sdp = rollback.widen_offer(sdp)
            self._widened = pc
            self._spawn(self._unwiden_unless_answered(pc))
        await self._signal(protocol.offer_message(sdp, self.remote.id))
        await self._trickle_candidates()
        self._watch(pc)

    async def _unwiden_unless_answered(self, pc: RTCPeerConnection) -> None:
        """A widened offer (``peer.rollback``) that nobody answered soon either reached
        nobody, or a stack that cannot answer it: offer again, plainly, once."""
        await asyncio.sleep(WIDENED_ANSWER_WAIT)
        if pc is self.pc and not self.closed:
            self._inbox.put(_PLAIN_OFFER, ours=True)  # checked again when its turn comes

    async def _answer(self, sdp: str) -> None:
        if self.pc.signalingState != "stable" or self.pc.remoteDescription is not None:
            # Glare (our offer is pending) or a new offer from a restarted peer: aiortc can
            # neither roll back nor restart ICE, so a fresh connection answers.
            logger.info("new offer from %s: answering on a fresh connection", self.remote.name)
            await self._fresh_pc()
        pc = self.pc
        self._watch(pc)  # also when the offer turns out to be one aiortc cannot take
        await pc.setRemoteDescription(RTCSessionDescription(rollback.single_data_section(sdp), "offer"))
        offered = {t.kind for t in pc.getTransceivers()}
        sending = {s.track.kind for s in pc.getSenders() if s.track is not None}
        for track in self._media.subscribe():
            if track.kind in offered and track.kind not in sending:
                pc.addTrack(track)
                sending.add(track.kind)
        await self._flush_candidates()
        await pc.setLocalDescription(await pc.createAnswer())
        await self._signal(protocol.answer_message(pc.localDescription.sdp, self.remote.id))
        await self._trickle_candidates()

    async def _fresh_pc(self) -> None:
        old, self.pc = self.pc, self._new_pc()
        self._pending_candidates = []  # they belonged to the old connection's remote
        if self._receiver is not None:
            self._receiver.abort("the connection was renewed")
        await _close_pc(old)

    async def _flush_candidates(self) -> None:
        """Add trickled candidates that arrived before the remote description could take them."""
        pending, self._pending_candidates = self._pending_candidates, []
        for candidate in pending:
            await self.pc.addIceCandidate(_parse_candidate(candidate))

    async def _trickle_candidates(self) -> None:
        """Classic clients expect candidates as messages: send ours too (they are in the SDP
        already), then an empty one for the end."""
        if not self._classic:
            return
        sdp = self.pc.localDescription.sdp
        mid = _MID.search(sdp)
        ufrag = _UFRAG.search(sdp)
        base = {"sdpMid": mid.group(1) if mid else "0", "sdpMLineIndex": 0,
                "usernameFragment": ufrag.group(1) if ufrag else None}
        first_section = sdp.split("\r\nm=")[1] if "\r\nm=" in sdp else sdp
        for line in _CANDIDATE.findall(first_section):
            await self._signal(protocol.candidate_message({"candidate": line, **base}))
        await self._signal(protocol.candidate_message({"candidate": "", **base}))

    # Staying connected

    def _watch(self, pc: RTCPeerConnection) -> None:
        """Give this negotiation CONNECT_TIMEOUT seconds to connect. The watchdog of an
        earlier one goes: it would keep that connection in memory for nothing (a member that
        sends offer after offer would pile them up). An offer to a classic room that nobody
        answered is not a failure: it waits for whoever joins (the answer restarts the clock)."""
        async def watchdog() -> None:
            await asyncio.sleep(CONNECT_TIMEOUT)
            if pc is self.pc and not self.connected and not (self._classic and pc.remoteDescription is None):
                await self._lost(f"not connected after {CONNECT_TIMEOUT:g} s")
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = self._spawn(watchdog())

    async def _lost(self, reason: str) -> None:
        """The path is gone. While the member is still in the room, build a new connection
        (the initiator offers, the other side waits for it); otherwise hang up."""
        if self.closed:
            return
        if not self._still_there() or self._tries >= MAX_TRIES:
            if self._tries:
                reason = f"gave up after {self._tries} new connections: {reason}"
            await self.close(reason, notify=False)
            return
        self._tries += 1
        self.connected = False
        self.emit("retrying", reason, self._tries)
        if self._initiator():
            self._inbox.put(_START_OFFER, ours=True)
        else:
            self._watch(self.pc)  # the offer should come; if it does not, this side retries too

    def _heard(self) -> None:
        self._last_seen = time.monotonic()

    # The connection and its channels

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(self._ice.configuration())
        self.chat: Optional[RTCDataChannel] = None
        self.control: Optional[RTCDataChannel] = None
        self._sender: Optional[FileSender] = None
        self._files_open = asyncio.Event()
        self._last_seen = time.monotonic()
        self._chat_opened = False
        self._chat_refused = False
        self._ours = asyncio.Event()
        """Set once the other side shows it speaks our conventions: it opened a ``control``
        channel (no classic client does), or sent a well-formed control message on ours. Until
        then nothing of ours goes to it (a classic client takes every channel for chat and
        greets on it)."""

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.pc:
                return
            logger.debug("connection with %s: %s", self.remote.name, pc.connectionState)
            if pc.connectionState == "connected" and not self.connected:
                self.connected = True
                self._tries = 0
                self._heard()
                self.emit("connected")
            elif pc.connectionState in ("failed", "closed"):
                if self._classic and self._chat_refused:  # no chat channel to close: this is how it leaves
                    await self.close("left", notify=False)
                else:
                    await self._lost(f"connection {pc.connectionState}")

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if pc is self.pc:
                if channel.label == CONTROL_CHANNEL:
                    self._ours.set()  # only our peers open a control channel
                self._adopt(channel)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if pc is self.pc:
                self.emit("track", track)

        return pc

    def _adopt(self, channel: RTCDataChannel) -> None:
        """Take a data channel into use by its label (ours, or the remote's on answering)."""
        pc = self.pc
        _guard_receipt(channel.transport, lambda error: self._complain(
            "channel", "dropped a data channel message from %r that could not be handled: %s: %s",
            self.remote.name, type(error).__name__, error), lambda: self._cut_off(pc))
        if channel.label == CHAT_CHANNEL:
            self.chat = channel
            channel.on("message", self._on_chat)
            channel.on("close", lambda: self._on_chat_closed(channel))
            _when_open(channel, self._on_chat_open)
        elif channel.label == CONTROL_CHANNEL:
            self.control = channel
            channel.on("message", self._on_control)
            _when_open(channel, lambda: self._spawn(self._heartbeat(channel)))
        elif channel.label == FILES_CHANNEL:
            self._sender = FileSender(channel)
            if self._receiver is None:
                self._receiver = FileReceiver(
                    self.downloads, lambda: self.remote, self._reply_files,
                    lambda name, done, size: self.emit("file-progress", name, done, size),
                    lambda path, sha256: self.emit("file", path, sha256),
                    lambda name, reason: self.emit("file-failed", name, reason))
            channel.on("message", self._on_files)
            _when_open(channel, self._files_open.set)

    def _cut_off(self, pc: RTCPeerConnection) -> None:
        """The member sent a message larger than any peer may: its connection goes (the call
        then recovers or ends as after any lost connection)."""
        logger.warning("%r sent a data channel message larger than any peer may send: connection cut",
                       self.remote.name)
        self._spawn(_close_pc(pc))

    def _on_chat_open(self) -> None:
        """Lines typed before the channel opened go now; and from now on, its closing means
        the other side hung up (see ``_on_chat_closed``)."""
        self._chat_opened = True
        backlog, self._chat_backlog = self._chat_backlog, []
        for text in backlog:
            _send(self.chat, text)

    def _on_chat(self, message: Any) -> None:
        self._heard()
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        self.emit("chat", message)

    def _on_chat_closed(self, channel: RTCDataChannel) -> None:
        """Classic clients have no heartbeat: the chat channel closing is how they hang up.
        One that never opened was refused in negotiation; the call goes on without it."""
        if channel is self.chat and self._chat_opened and not self._peer_is_ours and not self.closed:
            self._spawn(self.close("left", notify=False))

    def _on_control(self, message: Any) -> None:
        """Only a well-formed message counts: a classic client's greeting here is chat sent
        to the wrong channel, and is ignored without a word."""
        try:
            parsed = wire.parse_control(message)
        except wire.BadControlMessage as error:
            self._dropped("control", "dropped a control message from %r: %s", message, error)
            return
        self._heard()
        self._ours.set()
        if parsed.type == wire.PING:
            _send(self.control, wire.encode_control(wire.PONG))
        elif parsed.type == wire.BYE:
            self._spawn(self.close("left", notify=False))
        elif parsed.type == wire.DATA:
            self.emit("data", parsed.data)
        elif parsed.type == wire.MOVED:
            self.emit("moved", parsed.id)  # the session checks it against the server's presence

    @property
    def _peer_is_ours(self) -> bool:
        return self._ours.is_set()

    def _dropped(self, kind: str, text: str, message: Any, error: Exception) -> None:
        """A message that breaks the rules of one of our channels: from a peer of ours, a
        warning (once, see ``Complaints``); from a classic client, which greets on every
        channel it is given, not a word."""
        if self._peer_is_ours:
            self._complain(kind, text, self.remote.name, error)
        else:
            logger.debug("ignored %r on the %s channel of %s (not one of our peers)", message, kind, self.remote.name)

    def _on_files(self, message: Any) -> None:
        """Every message is checked, and a bad one dropped; any other failure costs that message
        only, as on every channel (``_guard_receipt``)."""
        self._heard()
        if self.closed or self._sender is None or self._receiver is None:
            return
        try:
            parsed = message if isinstance(message, bytes) else wire.parse_files(message)
        except wire.BadFilesMessage as error:
            self._dropped("files", "dropped a bad message on the files channel from %s: %s", message, error)
            return
        if isinstance(parsed, (wire.Accept, wire.Received, wire.Failed)):
            self._sender.on_reply(parsed)  # the other side's answer to what we send
        else:
            self._receiver.on_message(parsed)  # what the other side sends us

    def _reply_files(self, reply: wire.Reply) -> None:
        _send(self._sender.channel if self._sender else None, wire.encode_files(reply))

    async def _heartbeat(self, channel: RTCDataChannel) -> None:
        """Ping over the control channel; silence for ``dead_after`` seconds means the peer
        is gone (killed, cable pulled), long before aiortc's 30 s consent timeout."""
        self._heard()
        while not self.closed and channel is self.control:
            if self._peer_is_ours:
                _send(channel, wire.encode_control(wire.PING))
            await asyncio.sleep(self._heartbeat_interval)
            if self._peer_is_ours and channel is self.control and time.monotonic() - self._last_seen > self._dead_after:
                await self._lost(f"no answer for {self._dead_after:g} s")
                return

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Future:
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.ensure_future(coroutine))
        return self._tasks[-1]


class Complaints:
    """Bad input from outside, logged once per kind as a warning, then only at debug level:
    whoever repeats it (a hostile peer or server) must not flood the log. One per source."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._seen: set[str] = set()

    def __call__(self, kind: str, text: str, *args: Any) -> None:
        if kind in self._seen:
            self._log.debug(text, *args)
            return
        self._seen.add(kind)
        self._log.warning(text + " (more such are dropped quietly)", *args)


class _Inbox:
    """The signaling messages from one member, handled one at a time in arrival order.

    Bounded, since the member decides how many it sends: a newer offer starts a new
    negotiation, which makes queued older offers, answers and candidates moot (they are
    dropped); a newer answer replaces a queued older one; past ``INBOX_SIZE`` messages the
    rest is dropped, with one log line per burst. Our own ``_START_OFFER`` always gets in:
    recovery depends on it, and we send few.
    """

    def __init__(self, sender: Callable[[], str]) -> None:
        self._items: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self._sender = sender
        self._overflowing = False

    def put(self, message: dict[str, Any], ours: bool = False) -> None:
        kind = message.get("type")
        if kind == protocol.OFFER:
            self._drop((protocol.OFFER, protocol.ANSWER, protocol.CANDIDATE))
        elif kind == protocol.ANSWER:
            self._drop((protocol.ANSWER,))
        if not ours and len(self._items) >= INBOX_SIZE:
            if not self._overflowing:
                self._overflowing = True
                logger.warning("signaling messages from %r arrive faster than they can be handled: "
                               "dropping them until the %d queued are done", self._sender(), len(self._items))
            return
        self._items.append(message)
        self._ready.set()

    async def get(self) -> dict[str, Any]:
        while not self._items:
            self._overflowing = False  # drained: the next overflow is a new burst
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def _drop(self, kinds: tuple[str, ...]) -> None:
        if any(message.get("type") in kinds for message in self._items):
            self._items = deque(message for message in self._items if message.get("type") not in kinds)


async def _close_pc(pc: RTCPeerConnection) -> None:
    """Close ``pc`` for good. aiortc connects in a task of its own that ``close()`` does not
    stop: closed half-way through connecting, that task then starts ICE consent checks and
    RTCP loops on the closed connection that never end (or fails, "RTCIceTransport is
    closed"). So it is cancelled first."""
    connecting = [task for task in asyncio.all_tasks() if _connects(task, pc)]
    for task in connecting:
        task.cancel()
    await asyncio.gather(*connecting, return_exceptions=True)
    await pc.close()


def _connects(task: asyncio.Task, pc: RTCPeerConnection) -> bool:
    coroutine = task.get_coro()
    frame = getattr(coroutine, "cr_frame", None)
    return getattr(coroutine, "__qualname__", "") == "RTCPeerConnection.__connect" and \
        frame is not None and frame.f_locals.get("self") is pc


def _when_open(channel: RTCDataChannel, callback: Callable[[], Any]) -> None:
    if channel.readyState == "open":
        callback()
    else:
        channel.once("open", callback)


_guarded: "weakref.WeakSet[RTCSctpTransport]" = weakref.WeakSet()


def _guard_receipt(transport: RTCSctpTransport, complain: Callable[[Exception], None],
                   oversized: Callable[[], None]) -> None:
    """Make a data channel message that cannot be handled cost that message, not the connection.

    aiortc decodes text messages and runs the channels' ``message`` handlers inside its DTLS
    receive loop; any exception on the way (text that is not UTF-8, a handler's error, a
    second open of one stream) ends that loop, and with it the whole connection. So the
    transport's receive step is wrapped, once per transport: the exception is logged and the
    message dropped.

    Its receipt of data chunks is bounded too: once a stream receives a message of more than
    ``MAX_MESSAGE_FRAGMENTS`` fragments in a row, or holds more than ``MAX_HELD_CHUNKS``
    fragments of unfinished messages, they are dropped, nothing more is taken on that
    transport, and ``oversized`` is called once.
    """
    if transport in _guarded:
        return
    receive = transport._data_channel_receive
    receive_chunk = transport._receive_data_chunk
    runs: dict[int, tuple[int, int]] = {}
    """Per stream: the last chunk's TSN, and how many fragments in a row its message has had."""
    cut = False

    async def bounded(chunk: DataChunk) -> None:
        nonlocal cut
        if cut:
            return
        await receive_chunk(chunk)
        last, count = runs.get(chunk.stream_id, (chunk.tsn, 0))
        if chunk.flags & SCTP_DATA_FIRST_FRAG:
            count = 1
        elif count and chunk.tsn == tsn_plus_one(last):
            count += 1
        if chunk.flags & SCTP_DATA_LAST_FRAG:
            count = 0
        runs[chunk.stream_id] = (chunk.tsn, count)
        stream = transport._inbound_streams.get(chunk.stream_id)
        if count > MAX_MESSAGE_FRAGMENTS or stream is not None and len(stream.reassembly) > MAX_HELD_CHUNKS:
            cut = True
            if stream is not None:
                stream.reassembly.clear()
            oversized()

    async def guarded(stream_id: int, pp_id: int, data: bytes) -> None:
        try:
            await receive(stream_id, pp_id, data)
        except Exception as error:
            complain(error)

    transport._data_channel_receive = guarded  # type: ignore[method-assign]
    transport._receive_data_chunk = bounded  # type: ignore[method-assign]
    _guarded.add(transport)


def _send(channel: Optional[RTCDataChannel], text: str) -> bool:
    if channel is None or channel.readyState != "open":
        return False
    channel.send(text)
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
