"""One remote member of the room: its call over time, one connection after another.

A ``Call`` is driven by signaling messages put in its inbox and handled one at a time
(python-socketio runs handlers concurrently; an answer overtaking its offer breaks aiortc).
Media is not its business: local tracks come in from ``LocalMedia``, remote tracks leave
in ``TrackReceived`` events.

aiortc cannot roll back an offer or restart ICE, so every recovery here is a fresh
``Connection`` (``peer.connection``: one ``RTCPeerConnection`` with its channels and
heartbeat), the old one thrown away whole: on glare (an offer arriving while ours is pending) it answers on a
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
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Union

from aiortc import RTCDataChannel, RTCPeerConnection

from signaling import protocol
from signaling.protocol import Member

from . import rollback, wire
from .aiortc_fixes import selected_path
from .connection import MAX_PENDING_CANDIDATES, Connection
from .errors import TransferError
from .events import (CallEnded, Connected, FileFailed, FileProgress, FileReceived, Interrupted, NoPath, Publish,
                     Resumed, Retrying)
from .ice import IceSettings
from .media.sources import LocalMedia
from .reach import NO_PATH_AFTER
from .transfer import Downloads, FileReceiver, FileSender, Progress
from .wire import End, Reply, Start
from .verification import connection_code

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
"""A negotiation not connected by then is tried again on a fresh connection."""
MAX_TRIES = 3
"""New connections made for a call whose path died or was never found, unless told otherwise
(``join(retries=...)``, ``--retries``)."""
LOST_AFTER = 15.0
"""Seconds of silence from a peer of ours after which its path counts as dead and a new
connection is made. Shorter outages are said (``Interrupted``) and sat out: aiortc's connection
survives them, media and files go on where they were (a 10 s outage, measured)."""
NO_PATH = "no network path"
"""The reason of a ``Retrying`` or ``CallEnded`` whose connection found no path (``NoPath``)."""
ALREADY_NO_PATH_AFTER = NO_PATH_AFTER / 2
"""Seconds of unanswered ICE checks that also mean no path when the connection must go anyway:
the watchdog's, or the other side's new offer (it gave up first, its checks and ours started
a moment apart)."""
OTHER_SIDE_LOST = "the other side lost it"
"""The reason of a ``Retrying`` for a new offer from our peer on a call we thought connected."""
FILES_OPEN_TIMEOUT = 10.0
WIDENED_ANSWER_WAIT = 3.0
"""Seconds a widened offer waits for its answer before the plain one goes: a browser answers
within a fraction of a second."""
INBOX_SIZE = 100
"""Signaling messages from one member waiting to be handled. A negotiation takes an offer or
an answer and a few dozen trickled candidates at most; a newer offer replaces queued older
ones (see ``_Inbox``), so only a flood fills it, and what overflows is dropped."""
Signal = Callable[[dict[str, Any]], Awaitable[None]]

_START_OFFER = {"type": "_start-offer"}
_PLAIN_OFFER = {"type": "_plain-offer"}
_CANDIDATE = re.compile(r"^a=(candidate:.+?)\r?$", re.MULTILINE)
_MID = re.compile(r"^a=mid:(\S+)", re.MULTILINE)
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


class Call:
    """The call with one remote member: its inbox, its tries, and its current ``Connection``.

    What happens goes to ``publish`` as it happens (``peer.events``): ``Connected``,
    ``Interrupted`` and ``Resumed``, ``Retrying``, the file events, ``CallEnded`` last; and, from its connections,
    ``ChatMessage``, ``DataMessage``, ``TrackReceived`` and ``Moved``.
    """

    def __init__(self, remote: Member, signal: Signal, ice: IceSettings, media: LocalMedia,
                 *, publish: Publish, heartbeat_interval: float = 0.5, dead_after: float = 2.0,
                 lost_after: float = LOST_AFTER, downloads: Optional[Downloads] = None, still_there: Callable[[], bool] = lambda: False,
                 initiator: Callable[[], bool] = lambda: True, classic: bool = False,
                 codec: Optional[str] = None, retries: int = MAX_TRIES) -> None:
        self.remote = remote
        self.publish = publish
        """Where what happens goes (the session)."""
        self.downloads = downloads or Downloads()
        """What is done with files offered (where they go, which are taken, the quotas);
        shared by every call of a session."""
        self._signal = signal
        self._ice = ice
        self._media = media
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self._lost_after = lost_after
        self._still_there = still_there
        self._initiator = initiator
        self._classic = classic
        """The other side is a classic client on a classic server: our candidates go as
        messages too, our offer has the classic layout and is widened (``peer.rollback``),
        and it may wait for an answer as long as it takes (nobody may be in the room yet)."""
        self._codec = codec
        """The video codec this call's connections prefer (``peer.media.codecs``)."""
        self._retries = retries
        """New connections tried, one after another, before the call is given up."""
        self._widen = True
        self.connected = False
        self._had_path = False
        """Connected once: a connection of it that finds no path lost the path it had."""
        self.closed = False
        self._answered: Optional[tuple[Connection, str]] = None
        """The offer the current connection answered: one sent again is answered again, alike."""
        self._tries = 0
        self._receiver: Optional[FileReceiver] = None
        self._chat_backlog: list[str] = []
        self._complain = Complaints(logger)
        self._watchdog: Optional[asyncio.Future] = None
        self._inbox = _Inbox(lambda: self.remote.name)
        self._tasks: list[asyncio.Future] = [asyncio.ensure_future(self._run())]
        self._connection = self._new_connection()

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
        if self.closed or self._connection.chat_refused:
            return False
        if not self._connection.send_chat(text):
            self._chat_backlog.append(text)
        return True

    def send_control(self, text: str) -> bool:
        """Send a message made with ``wire.encode_control`` to a peer of ours (not to classic
        clients, which lack the channel)."""
        return self._connection.send_control(text)

    def announce_id(self, member_id: str) -> None:
        """Tell the other side our new signaling id after we rejoined, so it keeps this call."""
        self.send_control(wire.encode_control(wire.MOVED, id=member_id))

    async def send_file(self, path: Path, progress: Optional[Progress] = None) -> str:
        """Send a file; return its sha256 once the other side has checked and saved it."""
        try:
            await asyncio.wait_for(self._files_open.wait(), FILES_OPEN_TIMEOUT)
            await asyncio.wait_for(self._connection.ours.wait(), FILES_OPEN_TIMEOUT)  # a tutorial client takes files for chat
        except asyncio.TimeoutError:
            pass
        if self._sender is None or self._sender.channel.readyState != "open" or not self._connection.ours.is_set():
            raise TransferError(f"cannot send {path.name}: no file channel to {self.remote.name} "
                                "(not connected, or not one of our peers)")
        return await self._sender.send(path, progress)

    @property
    def alive(self) -> bool:
        """Connected and heard from recently: worth keeping through a signaling outage."""
        return self.connected and not self.closed and self._connection.responsive

    @property
    def verification_code(self) -> Optional[str]:
        """The code both sides compare (``12345 67890 12345 67890 12345``), from the certificates
        DTLS used: equal unless someone sits in the middle. None until DTLS has completed."""
        return connection_code(self.pc)

    # The current connection's parts (negotiation uses them; the attack tests reach them here)

    @property
    def pc(self) -> RTCPeerConnection:
        return self._connection.pc

    @property
    def chat(self) -> Optional[RTCDataChannel]:
        return self._connection.chat

    @property
    def control(self) -> Optional[RTCDataChannel]:
        return self._connection.control

    @property
    def _sender(self) -> Optional[FileSender]:
        return self._connection.sender

    @property
    def _files_open(self) -> asyncio.Event:
        return self._connection.files_open

    @property
    def _pending_candidates(self) -> list[Optional[dict[str, Any]]]:
        return self._connection.pending_candidates

    async def close(self, reason: str = "hung up", notify: bool = True, no_path: Optional[NoPath] = None) -> None:
        """Hang up. ``notify`` sends ``bye`` on the control channel first, so the other
        side knows at once rather than after aiortc's 30 s consent timeout. ``no_path``: what
        the last connection tried, when it found no path."""
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
        await self._connection.close()
        logger.info("call with %s closed: %s", self.remote.name, reason)
        self.publish(CallEnded(self.remote, reason, no_path))

    # What the current connection tells (see ``peer.connection.Owner``)

    def on_connected(self) -> None:
        if not self.connected:
            self.connected = self._had_path = True
            self._tries = 0
            self.publish(Connected(self.remote, self.verification_code, selected_path(self.pc)))

    async def on_lost(self, reason: str) -> None:
        if self._classic and self._connection.chat_refused:  # no chat channel to close: this is how it leaves
            await self.close("left", notify=False)
        elif self._tries and not self.connected:
            # Already calling again, and the watchdog gives each try its time: this is the
            # connection we lost (the side that waits for an offer keeps it) failing at last,
            # from aiortc's consent checks some 30 s on. Counted, it would end the last try early.
            logger.debug("connection with %s: %s while calling again; the watchdog decides", self.remote.name, reason)
        else:
            await self._lost(reason)

    def on_silent(self, seconds: float) -> None:
        """Silent, and no longer in the room (the server said it left, and its media stopped
        too): gone, not interrupted. Still in the room: its link may come back."""
        if not self._still_there():
            self._spawn(self._lost(f"no answer for {seconds:g} s"))
        elif self.connected:
            self.publish(Interrupted(self.remote, seconds))

    def on_heard_again(self) -> None:
        if self.connected:
            self.publish(Resumed(self.remote))

    async def on_no_path(self, no_path: NoPath) -> None:
        if not self.connected:
            await self._lost(NO_PATH, no_path)

    def on_left(self) -> None:
        self._spawn(self.close("left", notify=False))

    def on_chat_open(self) -> None:
        """Lines typed before the chat channel opened go now."""
        backlog, self._chat_backlog = self._chat_backlog, []
        for text in backlog:
            self._connection.send_chat(text)

    def on_file(self, message: Union[Start, End, bytes]) -> None:
        """A file the member sends: one receiver for the whole call, so the quota per peer holds
        across connections."""
        if self.closed:
            return
        if self._receiver is None:
            self._receiver = FileReceiver(
                self.downloads, lambda: self.remote, self._reply_files,
                lambda name, done, size: self.publish(FileProgress(self.remote, name, done, size)),
                lambda path, sha256: self.publish(FileReceived(self.remote, path, sha256)),
                lambda name, reason: self.publish(FileFailed(self.remote, name, reason)))
        self._receiver.on_message(message)

    def _reply_files(self, reply: Reply) -> None:
        self._connection.send_files(wire.encode_files(reply))

    # Negotiation

    async def _run(self) -> None:
        self._ice.apply()  # this task negotiates, and gathers, every connection of the call
        while not self.closed:  # a bye it handled closed the call: what was queued behind it goes too
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
            if self._connection.widened and self.pc.remoteDescription is None:
                self._widen = False
                await self._offer()
        elif kind == protocol.OFFER:
            await self._answer(message["sdp"])
        elif kind == protocol.ANSWER:
            if self.pc.signalingState != "have-local-offer":
                logger.debug("answer from %s with no offer pending: ignored", self.remote.name)
                return
            sdp = message["sdp"]
            if self._connection.widened:
                sdp = rollback.narrow_answer(sdp, self.pc.localDescription.sdp)
            if rollback.refuses_data(sdp):
                self._connection.chat_refused = True
                logger.warning("%s refused our data channel: no chat or files with it on this call "
                               "(video and sound go on)", self.remote.name)
                sdp = rollback.bundle_refused_data(sdp)
            await self._connection.accept(sdp)
            self._watch()
        elif kind == protocol.CANDIDATE:
            if not await self._connection.add_candidate(message.get("candidate")):
                self._complain("candidates", "dropped candidates from %r: more than %d before its description",
                               self.remote.name, MAX_PENDING_CANDIDATES)
        elif kind == protocol.BYE:
            await self.close("left", notify=False)

    async def _offer(self) -> None:
        if self.pc.signalingState == "have-local-offer" and not self._classic and self._complete(self.pc):
            # Unanswered: a network outage may hold it, or its answer, in TCP's retransmissions.
            # Sent again, not replaced: a late answer to it would be taken for the new one's.
            await self._signal(protocol.offer_message(self.pc.localDescription.sdp, self.remote.id))
            self._watch()
            return
        if self.pc.signalingState != "stable" or self.pc.remoteDescription is not None:
            await self._renew()
        # A classic browser that rolled back its own offer to answer this one accepts our data
        # channel only under the mid its own had: one more than its tracks. So toward classic
        # clients we offer what we send and nothing more (the layout of a classic client with
        # our devices); elsewhere we also ask for the kinds we do not send.
        sdp = await self._connection.offer(self._media.subscribe(), () if self._classic else ("audio", "video"))
        if self._classic and self._widen:
            sdp = rollback.widen_offer(sdp)
            self._connection.widened = True
            self._connection.spawn(self._unwiden_unless_answered())
        await self._signal(protocol.offer_message(sdp, self.remote.id))
        await self._trickle_candidates()
        self._watch()

    def _complete(self, pc: RTCPeerConnection) -> bool:
        """Whether ``pc``'s offer holds a relay candidate if a TURN server is set: one gathered
        in an outage has none, and is no use sent again."""
        return not self._ice.turn or " typ relay" in pc.localDescription.sdp

    async def _unwiden_unless_answered(self) -> None:
        """A widened offer (``peer.rollback``) that nobody answered soon either reached
        nobody, or a stack that cannot answer it: offer again, plainly, once. (Run by the
        connection that offered: one renewed meanwhile takes it along.)"""
        await asyncio.sleep(WIDENED_ANSWER_WAIT)
        self._inbox.put(_PLAIN_OFFER, ours=True)  # checked again when its turn comes

    async def _answer(self, sdp: str) -> None:
        if self._answered == (self._connection, sdp) and self.pc.localDescription is not None:
            # The offer we answered, sent again (``_offer``): so is our answer.
            await self._signal(protocol.answer_message(self.pc.localDescription.sdp, self.remote.id))
            return
        if self.pc.signalingState != "stable" or self.pc.remoteDescription is not None:
            # Glare (our offer is pending) or a new offer from a restarted peer, or one that
            # found no path: aiortc can neither roll back nor restart ICE, so a fresh
            # connection answers.
            logger.info("new offer from %s: answering on a fresh connection", self.remote.name)
            if self.connected and not self._classic:
                # Our peer lost the path while we still hear it (a path dead one way): said
                # and counted as on its side, which said so and called again.
                await self._lost(OTHER_SIDE_LOST)  # renews
            else:
                await self._say_no_path_first()  # renews, when it says so
            if self.closed:
                return
            if self.pc.signalingState != "stable" or self.pc.remoteDescription is not None:
                await self._renew()
        self._watch()  # also when the offer turns out to be one aiortc cannot take
        answer = await self._connection.answer(rollback.single_data_section(sdp), self._media.subscribe())
        self._answered = (self._connection, sdp)
        await self._signal(protocol.answer_message(answer, self.remote.id))
        await self._trickle_candidates()

    def _new_connection(self) -> Connection:
        return Connection(self, self._ice, self._complain, heartbeat_interval=self._heartbeat_interval,
                          dead_after=self._dead_after, lost_after=self._lost_after, codec=self._codec)

    async def _renew(self) -> None:
        """Throw the current connection away, with what was pending on it, for a fresh one."""
        old, self._connection = self._connection, self._new_connection()
        self.connected = False  # until the fresh one connects: then Connected, with its new code
        if self._receiver is not None:
            self._receiver.abort("the connection was renewed")
        await old.close()

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

    def _watch(self) -> None:
        """Give the current negotiation CONNECT_TIMEOUT seconds to connect (its ICE checks say
        sooner when they find no path: ``Connection``), and when it has not, say whether its
        checks found no path (``NoPath``) or never ran (no answer came). The watchdog of an
        earlier one on this connection goes (a member that sends offer after offer must not
        pile them up); one of a connection thrown away went with it. An offer to a classic
        room that nobody answered is not a failure: it waits for whoever joins (the answer
        restarts the clock)."""
        connection = self._connection

        async def watchdog() -> None:
            await asyncio.sleep(CONNECT_TIMEOUT)
            if not self.connected and not (self._classic and connection.pc.remoteDescription is None):
                no_path = connection.no_path(ALREADY_NO_PATH_AFTER)
                await self._lost(NO_PATH if no_path else f"not connected after {CONNECT_TIMEOUT:g} s", no_path)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = connection.spawn(watchdog())

    async def _say_no_path_first(self) -> None:
        """A new offer while our checks found no path yet: the other side gave up on them a
        moment before we would have. Said and counted as if we had (``_lost``), so both sides
        say it and count alike; the initiator would offer again, so only the other side."""
        connection = self._connection
        if self.connected or self._initiator() or connection.said_no_path:
            return
        if (no_path := connection.no_path(ALREADY_NO_PATH_AFTER)) is not None:
            connection.said_no_path = True
            await self._lost(NO_PATH, no_path)

    async def _lost(self, reason: str, no_path: Optional[NoPath] = None) -> None:
        """The path is gone, or none was found (``no_path``). While the member is still in the
        room, build a new connection (the initiator offers, the other side waits for it);
        otherwise hang up."""
        if self.closed:
            return
        if no_path is not None and self._had_path:
            no_path = replace(no_path, lost=True)
        if not self._still_there() or self._tries >= self._retries:
            if self._tries:
                reason = f"gave up after {self._tries} new connection{'s' * (self._tries != 1)}: {reason}"
            await self.close(reason, notify=False, no_path=no_path)
            return
        self._tries += 1
        self.connected = False
        self.publish(Retrying(self.remote, reason, self._tries, self._retries, no_path))
        if self._initiator():
            self._inbox.put(_START_OFFER, ours=True)
        else:
            # The offer should come; if it does not, this side retries too. The connection goes
            # now: a path dead one way only leaves the other side hearing our media, so that
            # only our closing it (DTLS's close alert) tells it to offer again.
            if self.pc.remoteDescription is not None:
                await self._renew()
            self._watch()

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
