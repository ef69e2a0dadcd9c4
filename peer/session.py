"""A room: the signaling client and one ``Call`` per remote member.

The session follows presence: a newcomer offers to everyone its join acknowledgement
lists (the offerer rule of docs/protocol.md); members already there wait for its offer.

It also copes with what the real world does to a room: the signaling connection drops
(python-socketio reconnects, the session joins again and keeps the calls whose media
still flows), and servers that speak only the classic room-relay pattern (no
acknowledgements, no presence, no ``from``), where it behaves like a classic client.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import aiohttp
import socketio

from signaling import protocol
from signaling.protocol import JoinAck, JoinRequest, Member, ProtocolError

from .call import MAX_TRIES, Call, Complaints
from .errors import JoinRefused, SignalingUnreachable, TransferError
from .events import CallEnded, CallEvent, Event, Moved, PeerJoined, PeerLeft, Rejoined, SignalingLost
from .ice import IceConfigError, IceSettings
from .media.sources import LocalMedia
from .transfer import Downloads

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
RECONNECT_DELAY, RECONNECT_DELAY_MAX = 0.5, 2.0
"""Backoff between attempts to reach the signaling server again, in seconds: after an outage
of the network, the room is joined again within about this long of its return."""
TCP_CONNECT_TIMEOUT = 3.0
"""Seconds one attempt to reach the signaling server may take to open its TCP connection.
aiohttp's default waits 30 s, through the kernel's backed-off SYN retries: an attempt begun
during an outage would hold the next one back long after the network returned."""
REJOIN_RETRY, REJOIN_PATIENCE = 1.0, 60.0
"""After a network outage of ours the server may still hold our old connection, and count it
in the room (until its pings go unanswered: up to 45 s; a dead node's, until another node
sweeps it: 5 s): a rejoin refused as "room full" is asked again every REJOIN_RETRY seconds
for up to REJOIN_PATIENCE. So is any join refused as "unavailable" (a server node without
its Redis, which should be back soon)."""
ACK_TIMEOUT = 10.0
CLASSIC_ACK_TIMEOUT = 3.0
"""Our server acknowledges ``join`` at once; a server silent this long speaks only the classic pattern."""
REMAP_GRACE = 2.0
"""After a rejoin, how long to wait for live calls to announce their members' new ids."""
CLASSIC_PEER = Member(id="classic-peer", name="peer")
MAX_CALLS = 16
"""Calls a session holds at once. Each is a peer connection with its own sockets and some
300 KB; the server's room size keeps an honest room far below this, but the member list comes
from the server, and a hostile one listing 3,000 members made a peer open 9,000 sockets and
grow by 900 MB. Members past it are not called (one log line)."""

MAX_EARLY_MESSAGES = 64
"""Messages kept that come before a join acknowledgement; more are dropped."""

_REFUSALS = {
    protocol.ROOM_FULL: "{reason}. Pick another room with --room.",
    protocol.BAD_TOKEN: "the server refused the room token: {reason}. Pass a valid one with --token.",
    protocol.BAD_ROOM: "{reason}.",
}


class Session:
    """Membership of one room and the calls with its other members.

    Its events (``peer.events``) go to ``publish``: its own (``PeerJoined``, ``PeerLeft``,
    ``SignalingLost``, ``Rejoined``) and, unchanged, those of its calls.
    """

    def __init__(self, room: str, server: str, name: str = "", *, token: Optional[str] = None,
                 media: Optional[LocalMedia] = None, ice: Optional[IceSettings] = None,
                 heartbeat_interval: float = 0.5, dead_after: float = 2.0,
                 downloads: Optional[Downloads] = None, codec: Optional[str] = None,
                 retries: int = MAX_TRIES) -> None:
        self.request = JoinRequest(room=room, name=name, token=token)
        self.server = server
        self.media = media or LocalMedia()
        self.own_ice = ice or IceSettings()
        """The ICE settings we were given; ``ice`` adds the servers the server hands out."""
        self.ice = self.own_ice
        self.me: Optional[Member] = None
        self.members: dict[str, Member] = {}
        self.calls: dict[str, Call] = {}
        self.publish: Callable[[Event], None] = lambda event: None
        self.on_moved: Callable[[Member, Member], None] = lambda old, new: None
        """Told (old member, new member) when a live call's member rejoined under a new id
        (``_moved``): no event, but what is kept by member id follows it."""
        """Where the events of the room go (``Room`` takes them); until then, nowhere."""
        self.classic = False
        """True against a server that speaks only the classic room-relay pattern."""
        self._standing: Optional[Call] = None
        """On a classic server, the offer we made on joining, as a classic client does: it
        reaches whoever was there first, or nobody. Not a call until someone answers it."""
        self._early: Optional[list[dict[str, Any]]] = None
        """Messages that came while we waited for a join acknowledgement (see ``_ask_to_join``)."""
        self._leaving = False
        self.downloads = downloads or Downloads()
        """Which files offered are taken, where they go; one for every call, so quotas add up."""
        self._call_options: dict[str, Any] = {"heartbeat_interval": heartbeat_interval, "dead_after": dead_after,
                              "downloads": self.downloads, "codec": codec, "retries": retries}
        self._sio = socketio.AsyncClient(reconnection=True, reconnection_delay=RECONNECT_DELAY,
                                         reconnection_delay_max=RECONNECT_DELAY_MAX,
                                         handle_sigint=False)  # Ctrl-C is the application's to handle
        self._sio.eio.http_factory = _http_session  # python-engineio 4.14 on
        self._sio.on("connect", self._on_connect)
        self._sio.on("disconnect", self._on_disconnect)
        self._sio.on(protocol.PEER_JOINED, self._on_peer_joined)
        self._sio.on(protocol.PEER_LEFT, self._on_peer_left)
        self._sio.on(protocol.MESSAGE, self._on_message)
        self._sio.on(protocol.ERROR, self._on_error)
        self._tasks: set[asyncio.Task] = set()
        self._reconnecting: Optional[asyncio.Task] = None
        self._awaiting_move: set[str] = set()
        """Members of live calls who may come back under a new id (``moved``) after a
        signaling outage, theirs or ours: their ``peer-joined`` is no news."""
        self._claims: dict[Call, str] = {}
        """``moved`` claims the server's presence does not confirm yet (see ``_confirms``)."""
        self._present = asyncio.Event()
        """Set while we are in the room, so that ``_listed`` is the server's word."""
        self._listed: set[str] = set()
        """The ids the server lists in the room now (``members`` may keep some from before an
        outage of ours)."""
        self._too_many = False
        """Whether we said already that members past MAX_CALLS are not called."""
        self._complain = Complaints(logger)
        """Bad payloads of server events: logged once per event, the rest at debug level."""
        self._replaced: set[Call] = set()
        """Calls ending because a new one with their member took their place."""

    async def connect(self) -> None:
        """Open the signaling connection; SignalingUnreachable when nothing answers."""
        try:
            await self._sio.connect(self.server, transports=["websocket"], wait_timeout=CONNECT_TIMEOUT)
        except (socketio.exceptions.ConnectionError, ValueError) as error:
            await self._sio.eio.disconnect()  # closes the HTTP session a failed connect leaves open
            raise SignalingUnreachable(
                f"cannot reach the signaling server at {self.server} ({_first_line(error)}). "
                "Check the address, or start one with: python -m signaling"
            ) from None
        except BaseException:  # cancelled half-way: close what the attempt opened (its HTTP session)
            await self._sio.eio.disconnect()
            raise

    async def disconnect(self) -> None:
        """Close the signaling connection ``connect()`` opened, when the room is not joined
        after all (the media it was opened beside failed); nothing when it is not open."""
        await self._sio.shutdown()

    async def join(self) -> list[Member]:
        """Join the room and offer to everyone already there; return who that is."""
        try:
            ack = await self._ask_patiently(CLASSIC_ACK_TIMEOUT, (protocol.UNAVAILABLE,))
        except socketio.exceptions.TimeoutError:
            self.ice.check_relay()
            return await self._join_classic()
        self.ice.check_relay()  # before any call: relay-only with no TURN of ours nor the server's
        self._answer_waiting(ack)
        for member in ack.others:
            # a call begun already answers an offer: one the ack carried, or one that came before it
            if member.id not in self.calls and self._may_call(member):
                self._new_call(member).start_offer()
        return ack.others

    async def _ask_to_join(self, timeout: float) -> JoinAck:
        """Send ``join`` and take its acknowledgement's word (``_in_room``): who we are, who
        else is there, the offers to answer. Messages that come before it wait in ``_early``
        for ``_answer_waiting``: the candidates of an offer the acknowledgement carries can."""
        self._early = []
        try:
            ack = self._check_ack(await self._sio.call(protocol.JOIN, self.request.to_payload(), timeout=timeout))
        except BaseException:
            self._early = None
            raise
        self._take_ice_servers(ack)
        self._in_room(ack.me, ack.others)
        return ack

    def _take_ice_servers(self, ack: JoinAck) -> None:
        """Use the STUN and TURN servers the acknowledgement hands out (fresh credentials at
        every join), unless we were given servers of our own (``IceSettings.offered``).
        What of them was dropped as unusable is logged, once per kind of fault; never a
        credential. A rejoin whose servers leave a relay-only peer no relay keeps those of
        before (with a warning): the first join is refused for it (IceConfigError), a rejoin's
        task would die of it, half in the room."""
        if ack.ice_dropped:
            self._complain("iceServers", "ignored some of the server's ICE servers: %s", "; ".join(ack.ice_dropped))
        try:
            ice = self.own_ice.offered(ack.ice_servers)
            ice.check_relay()
        except IceConfigError:
            if self.me is None:  # the first join: relay-only with no TURN anywhere fails it
                raise
            logger.warning("the signaling server hands out no TURN server now: keeping the one it gave before "
                           "(--relay-only)")
            return
        self.ice = ice
        if ack.ice_servers and self.ice is not self.own_ice:
            logger.info("using the ICE servers of the signaling server: %s",
                        ", ".join(url for server in ack.ice_servers for url in server.urls))

    def _answer_waiting(self, ack: JoinAck) -> set[str]:
        """Answer the offers the ack carries: classic clients offer on joining, and one alone
        in the room offered to nobody, and waits. Offering to it instead would make a browser
        roll its offer back, and then refuse our data channel. Then handle what came before
        the ack. Returns who the offers came from."""
        early, self._early = self._early or [], None
        for message in ack.offers + early:
            self._deliver(message)
        return ack.offerers

    def _in_room(self, me: Member, others: list[Member]) -> None:
        """Take a join acknowledgement's word: who we are, and who else the server lists in the
        room. Added to what we know, not replacing it: a ``peer-joined`` may have
        been handled before the ack (``_listed`` was emptied when a connection dropped)."""
        self.me = me
        self.members.update({m.id: m for m in others})
        self._listed.update(m.id for m in others)
        self._present.set()

    async def leave(self) -> None:
        """Hang up every call, leave the room and close the signaling connection."""
        self._leaving = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        standing = [self._standing] if self._standing is not None else []
        await asyncio.gather(*(self._hang_up(call) for call in [*self.calls.values(), *standing]))
        if self._sio.connected and not self.classic:
            try:
                await self._sio.call(protocol.LEAVE, {}, timeout=2)
            except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
                pass
        await self._sio.shutdown()
        self.media.stop()

    async def __aenter__(self) -> "Session":
        """Connect (unless ``connect()`` already did) and join."""
        if not self._sio.connected:
            await self.connect()
        try:
            await self.join()
        except BaseException:
            await self._sio.shutdown()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.leave()

    def send_chat(self, text: str) -> int:
        """Send a line of chat to everyone in a call; return how many calls it went to."""
        return sum(call.send_chat(text) for call in self.calls.values())

    async def send_file(self, path: Path, to: Optional[str] = None,
                        progress: Optional[Callable[[Member, int, int], None]] = None) -> str:
        """Send a file to one member (``to``, a member id) or to everyone connected, one
        after another; return its sha256 once every receiver has checked it."""
        if to is not None and to not in self.calls:
            raise TransferError(f"cannot send {Path(path).name}: nobody with id {to} is connected")
        calls = [self.calls[to]] if to is not None else list(self.calls.values())
        if not calls:
            raise TransferError(f"cannot send {Path(path).name}: nobody is connected")
        sha256 = ""
        for call in calls:
            report = (lambda done, size, m=call.remote: progress(m, done, size)) if progress else None
            sha256 = await call.send_file(Path(path), report)
        return sha256

    # Joining

    def _check_ack(self, ack: Any) -> JoinAck:
        """The server's answer to ``join``, read once (``protocol.parse_join_ack``); JoinRefused
        when it refused, or answered what no server of ours would."""
        try:
            return protocol.parse_join_ack(ack, self.request.name)
        except protocol.Refusal as refusal:
            raise JoinRefused(_REFUSALS.get(refusal.code, "the server refused to join: {reason}.")
                              .format(reason=refusal.reason), refusal.code) from None
        except ProtocolError as error:
            raise JoinRefused(f"the server's answer to join makes no sense ({error.reason}); "
                              "is --server a signaling server?", error.code) from None

    async def _join_classic(self) -> list[Member]:
        """A classic server: bare-string join, and offer at once like a classic client (the
        offer is lost in an empty room; the next member's offer then reaches us)."""
        logger.info("the server did not acknowledge join: speaking the classic room-relay pattern")
        self.classic = True
        await self._sio.emit(protocol.JOIN, self.request.to_classic_payload())
        self.me = Member(id="me", name=self.request.name)
        self._standing = self._new_call(CLASSIC_PEER, standing=True)
        self._standing.start_offer()
        return []

    async def _on_connect(self) -> None:
        if self.me is not None and not self._leaving:
            self._spawn(self._rejoin())

    async def _rejoin(self) -> None:
        """Back after a signaling outage: join again, keep the calls whose media still
        flows (their members announce their new ids over the call), call the others."""
        if self.classic:
            await self._sio.emit(protocol.JOIN, self.request.to_classic_payload())
            if self._standing is not None:  # whoever came meanwhile offered to a room we were not in
                self._standing.start_offer()
            return
        ack = await self._join_again()
        if ack is None:
            return
        me, others = ack.me, ack.others
        answered = self._answer_waiting(ack)
        for call in self.calls.values():
            call.announce_id(me.id)
        self._awaiting_move -= {m.id for m in others}  # still there under their old ids: they did not move
        self._settle_claims()
        self.publish(Rejoined())
        unknown = [m for m in others if m.id not in self.calls]
        if unknown and any(call.alive for call in self.calls.values()):
            await asyncio.sleep(REMAP_GRACE)
        # The others saw us leave and come back, so we are the newcomer who offers: to those
        # we have no call with, and to those whose connection broke meanwhile (a browser
        # page hangs up when told we left, and then waits for our offer).
        for member in others:
            call = self.calls.get(member.id)
            if member.id in answered:
                continue
            if call is None:
                if self._may_call(member):
                    self._new_call(member).start_offer()
            elif not call.connected:
                self._call_afresh(member, call)

    def _call_afresh(self, member: Member, old: Call) -> None:
        """A new call with ``member`` in place of ``old``, not connected again when we came
        back: the others see a newcomer, who offers, and that offer must not go down with
        ``old``. After a long outage ``old`` is at the end of its tries: on giving up it took
        the offer with it, and the member, told we joined, waited for it for good. ``old``
        ends without a word (``_ended``)."""
        self._replaced.add(old)
        self._spawn(old.close("replaced", notify=False))
        self._new_call(member).start_offer()

    async def _join_again(self) -> Optional[JoinAck]:
        """The acknowledgement of joining again, or None (said in the log) when the server
        will not have us; "room full" is asked again for a while (``REJOIN_PATIENCE``)."""
        try:
            return await self._ask_patiently(ACK_TIMEOUT, (protocol.ROOM_FULL, protocol.UNAVAILABLE))
        except (JoinRefused, socketio.exceptions.TimeoutError) as error:
            logger.warning("could not join room %s again: %s", self.request.room, error or "no answer")
            return None

    async def _ask_patiently(self, timeout: float, passing: tuple[str, ...]) -> JoinAck:
        """``_ask_to_join``, asked again while the refusal is one of ``passing`` (see
        ``REJOIN_PATIENCE``), until the session closes meanwhile (then the last refusal)."""
        deadline = asyncio.get_running_loop().time() + REJOIN_PATIENCE
        while True:
            try:
                return await self._ask_to_join(timeout)
            except JoinRefused as error:
                if error.code not in passing or asyncio.get_running_loop().time() > deadline:
                    raise
                logger.info("could not join room %s yet (%s); asking again", self.request.room, error)
                await asyncio.sleep(REJOIN_RETRY)
                if not self._sio.connected or self._leaving:
                    raise

    # Signaling events

    async def _on_peer_joined(self, payload: Any = None, *_: Any) -> None:
        member = self._member(payload, protocol.PEER_JOINED)
        if member is None:
            return
        self.members[member.id] = member
        self._listed.add(member.id)
        self._settle_claims()
        namesakes = [call for call in self.calls.values()
                     if call.remote.id in self._awaiting_move and call.alive and call.remote.name == member.name]
        if namesakes:
            # Likely someone we are in a call with, back under a new id after a signaling
            # outage: its call says so (``moved``) within the grace. Only a stranger is news.
            await asyncio.sleep(REMAP_GRACE)
            if any(call.remote.id == member.id for call in namesakes) or member.id not in self.members:
                return
        if member.id not in self.calls or namesakes:
            self.publish(PeerJoined(member))

    async def _on_peer_left(self, payload: Any = None, *_: Any) -> None:
        member = self._member(payload, protocol.PEER_LEFT)
        if member is None or self.me is not None and member.id == self.me.id:
            return
        self.members.pop(member.id, None)
        self._listed.discard(member.id)
        call = self.calls.get(member.id)
        if call is not None and call.alive:
            self._awaiting_move.add(member.id)
            self._settle_claims()
            # Maybe only its signaling connection dropped: the heartbeat decides, and
            # ``peer-left`` follows the call's end if the member does not come back.
            logger.info("%s left the room but its media still flows; waiting for the heartbeat", member.name)
            return
        if call is not None:
            await call.close("left", notify=False)
        self.publish(PeerLeft(member))

    def _member(self, payload: Any, event: str) -> Optional[Member]:
        """The member a presence event names. A server sending something else (wrong types,
        no id, no argument) gets one log line per event, not a traceback per message."""
        try:
            return Member.from_payload(payload)
        except ProtocolError as error:
            self._complain(event, "ignored a %s from the server: %s", event, error)
            return None

    async def _on_message(self, payload: Any = None, *_: Any) -> None:
        """A signaling message relayed to us, checked (``protocol.parse_relayed``): a bad one
        costs one log line. A classic client's chatter (tutorials send strings such as
        ``"got user media"`` on this event) is no news."""
        try:
            message = protocol.parse_relayed(payload)
        except ProtocolError as error:
            if isinstance(payload, dict):
                self._complain(protocol.MESSAGE, "ignored a message from the server: %s", error)
            else:
                logger.debug("ignored a message that is no object: %r", payload)
            return
        if self._early is not None:
            if len(self._early) < MAX_EARLY_MESSAGES:
                self._early.append(message)
            return
        self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> None:
        """Hand a checked message to the call with its sender; an offer from someone we have
        no call with begins one."""
        sender = message.get("from")
        if self.classic or sender is None:
            sender = CLASSIC_PEER.id
        call = self.calls.get(sender)
        if call is None and sender == CLASSIC_PEER.id and self._standing is not None:
            call, self._standing = self._standing, None  # someone took up our offer: now it is a call
            self.calls[sender] = call
        if call is None:
            if message["type"] != protocol.OFFER:
                logger.debug("%s from %s with no call: ignored", message["type"], sender)
                return
            name = message.get("name") or CLASSIC_PEER.name
            member = self.members.setdefault(sender, Member(sender, name))
            if not self._may_call(member):
                return
            call = self._new_call(member)
        call.handle(message)

    async def _on_error(self, payload: Any = None, *_: Any) -> None:
        logger.debug("server error: %s", payload)

    async def _on_disconnect(self, reason: Any = None, *args: Any) -> None:
        if self._leaving:
            return
        logger.info("signaling connection lost (%s)", reason)
        self._present.clear()
        self._listed.clear()  # the server's word from before; the rejoin tells it anew
        self.publish(SignalingLost())
        for call in self.calls.values():
            self._awaiting_move.add(call.remote.id)  # the others will see us back under a new id
        if reason == self._sio.reason.SERVER_DISCONNECT and (self._reconnecting is None or self._reconnecting.done()):
            self._reconnecting = self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        """python-socketio reconnects after a lost connection, but not after the server said
        goodbye, as a server does when it is stopped to be restarted: retry the same way."""
        delay = RECONNECT_DELAY
        while True:
            await asyncio.sleep(delay)
            if self._sio.connected or self._leaving:
                return
            try:
                await self.connect()  # the connect event rejoins
                return
            except SignalingUnreachable:
                delay = min(delay * 2, RECONNECT_DELAY_MAX)

    # Calls

    def _may_call(self, member: Member) -> bool:
        """Whether a call with ``member`` may begin: not with ourselves (a server may list our
        own id), and not past MAX_CALLS."""
        if self.me is not None and member.id == self.me.id:
            return False
        if len(self.calls) < MAX_CALLS:
            return True
        if not self._too_many:
            self._too_many = True
            logger.warning("the server lists more than %d other members: not calling %r and any more",
                           MAX_CALLS, member.name)
        return False

    def _new_call(self, member: Member, standing: bool = False) -> Call:
        """A call with ``member``, listed in ``calls`` unless it is our ``standing`` offer."""
        call = Call(member, self._signal, self.ice, self.media, classic=self.classic,
                    publish=lambda event: self._from_call(call, event),
                    still_there=lambda: call.remote.id in self.members or self.classic,
                    initiator=lambda: self.classic or (self.me is not None and self.me.id < call.remote.id),
                    **self._call_options)
        if not standing:
            self.calls[member.id] = call
        return call

    def _from_call(self, call: Call, event: CallEvent) -> None:
        """What ``call`` reports: a claim to have moved is checked, an end is booked, and the
        events go up as they are."""
        if isinstance(event, Moved):
            self._claim(call, event.id)
        elif isinstance(event, CallEnded):
            self._ended(call, event)
        else:
            self.publish(event)

    def _ended(self, call: Call, event: CallEnded) -> None:
        if call in self._replaced:  # a new call took its place (``_call_afresh``): no news
            self._replaced.discard(call)
            self._claims.pop(call, None)
            return
        if call is self._standing:  # hung up on leaving, before anyone took it up
            self._standing = None
            return
        if self.calls.get(call.remote.id) is call:
            del self.calls[call.remote.id]
        self._awaiting_move.discard(call.remote.id)
        self._claims.pop(call, None)
        self.publish(event)
        if call.remote.id not in self.members and not self.classic and not self._leaving and event.reason != "left":
            self.publish(PeerLeft(call.remote))

    def _claim(self, call: Call, new_id: str) -> None:
        """The other side of ``call`` says (``moved``) it rejoined under ``new_id``. Anyone
        can say so, so it is believed only when the server's presence confirms it (see
        ``_confirms``); presence can lag the call, so an unconfirmed claim is held and checked
        again on every change of presence, for ``REMAP_GRACE`` of our being in the room."""
        if self.classic:
            logger.debug("ignored %r's claim to be %r: a classic server has no member ids", call.remote.name, new_id)
            return
        held = call in self._claims
        self._claims[call] = new_id  # a newer claim replaces the one held, not its deadline
        self._settle_claims()
        if not held and call in self._claims:
            self._spawn(self._expire_claim(call))

    def _settle_claims(self) -> None:
        """Move the calls whose claims the server's presence now confirms."""
        for call, new_id in list(self._claims.items()):
            if self._confirms(call, new_id):
                del self._claims[call]
                self._moved(call, new_id)

    def _confirms(self, call: Call, new_id: str) -> bool:
        """Whether presence bears out that ``call``'s member is now ``new_id``: we are in the
        room, the server said that member left while its call lived on (or our own signaling
        dropped, and the server no longer lists its old id), it lists ``new_id`` in the room
        under the same name, and no call has that id yet."""
        member = self.members.get(new_id)
        return self._present.is_set() and call.remote.id in self._awaiting_move and \
            new_id in self._listed and member is not None and \
            member.name == call.remote.name and new_id not in self.calls and \
            (self.me is None or new_id != self.me.id)

    async def _expire_claim(self, call: Call) -> None:
        """Drop ``call``'s claim unconfirmed after ``REMAP_GRACE`` in the room (the clock
        waits while our own signaling is down: then presence is not known)."""
        while True:
            await self._present.wait()
            await asyncio.sleep(REMAP_GRACE)
            if self._present.is_set():
                break
        new_id = self._claims.pop(call, None)
        if new_id is not None:
            logger.warning("ignored %r's claim to be member %r: the server's presence does not confirm it",
                           call.remote.name, new_id)

    def _moved(self, call: Call, new_id: str) -> None:
        """The member of a live call rejoined under a new id: keep the call under it."""
        old_id = call.remote.id
        self._awaiting_move.discard(old_id)
        if self.calls.get(old_id) is call:
            del self.calls[old_id]
        self.members.pop(old_id, None)
        old, call.remote = call.remote, Member(new_id, call.remote.name)
        self.calls[new_id] = call
        self.members[new_id] = call.remote
        self.on_moved(old, call.remote)

    async def _hang_up(self, call: Call) -> None:
        await self._signal(protocol.bye_message(call.remote.id))
        await call.close()

    async def _signal(self, message: dict[str, Any]) -> None:
        if not self._sio.connected:
            logger.debug("signaling down: %s not sent", message.get("type"))
            return
        if self.classic:
            classic = protocol.for_classic_server(message)
            if classic is None:
                return  # a bye: classic clients know none
            message = classic
        try:
            await self._sio.emit(protocol.MESSAGE, message)
        except socketio.exceptions.BadNamespaceError:
            logger.debug("signaling down: %s not sent", message.get("type"))

    def _spawn(self, coroutine: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _http_session() -> aiohttp.ClientSession:
    """The HTTP session of one signaling connection (python-engineio makes one per
    connection with this, and closes it): TCP connects that give up after TCP_CONNECT_TIMEOUT."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=TCP_CONNECT_TIMEOUT))


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
