"""A room: the signaling client and one ``Call`` per remote member.

The session follows presence: a newcomer offers to everyone its join acknowledgement
lists (the offerer rule of docs/protocol.md); members already there wait for its offer.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import socketio
from pyee.asyncio import AsyncIOEventEmitter

from signaling import protocol
from signaling.protocol import JoinRequest, Member

from .call import Call
from .errors import JoinRefused, SignalingUnreachable, TransferError
from .ice import IceSettings
from .media.sources import LocalMedia

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
ACK_TIMEOUT = 10.0

_REFUSALS = {
    protocol.ROOM_FULL: "{reason}. Pick another room with --room.",
    protocol.BAD_TOKEN: "the server refused the room token: {reason}. Pass a valid one with --token.",
    protocol.BAD_ROOM: "{reason}.",
}


class Session(AsyncIOEventEmitter):
    """Membership of one room and the calls with its other members.

    Events: ``joined`` (the member list), ``peer-joined`` / ``peer-left`` (Member),
    ``connected`` (Call), ``chat`` (Member, text), ``data`` (Member, value),
    ``track`` (Member, MediaStreamTrack), ``call-closed`` (Member, reason),
    ``file-progress`` (Member, name, done, size), ``file`` (Member, path, sha256),
    ``file-failed`` (Member, name, reason),
    ``disconnected`` (signaling lost; calls go on).
    """

    def __init__(self, room: str, server: str, name: str = "", *, token: Optional[str] = None,
                 media: Optional[LocalMedia] = None, ice: Optional[IceSettings] = None,
                 heartbeat_interval: float = 1.0, dead_after: float = 3.0,
                 downloads: Optional[Path] = None) -> None:
        super().__init__()
        self.request = JoinRequest(room=room, name=name, token=token)
        self.server = server
        self.media = media or LocalMedia()
        self.ice = ice or IceSettings()
        self.me: Optional[Member] = None
        self.members: dict[str, Member] = {}
        self.calls: dict[str, Call] = {}
        self._leaving = False
        self._call_options = {"heartbeat_interval": heartbeat_interval, "dead_after": dead_after,
                              "downloads": Path(downloads) if downloads is not None else None}
        self._sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=5,
                                         handle_sigint=False)  # Ctrl-C is the application's to handle
        self._sio.on(protocol.PEER_JOINED, self._on_peer_joined)
        self._sio.on(protocol.PEER_LEFT, self._on_peer_left)
        self._sio.on(protocol.MESSAGE, self._on_message)
        self._sio.on(protocol.ERROR, self._on_error)
        self._sio.on("disconnect", self._on_disconnect)

    async def connect(self) -> None:
        """Open the signaling connection; SignalingUnreachable when nothing answers."""
        self.ice.apply()
        try:
            await self._sio.connect(self.server, transports=["websocket"], wait_timeout=CONNECT_TIMEOUT)
        except (socketio.exceptions.ConnectionError, ValueError) as error:
            await self._sio.eio.disconnect()  # closes the HTTP session a failed connect leaves open
            raise SignalingUnreachable(
                f"cannot reach the signaling server at {self.server} ({_first_line(error)}). "
                "Check the address, or start one with: python -m signaling"
            ) from None

    async def join(self) -> list[Member]:
        """Join the room and offer to everyone already there; return who that is."""
        try:
            ack = await self._sio.call(protocol.JOIN, self.request.to_payload(), timeout=ACK_TIMEOUT)
        except socketio.exceptions.TimeoutError:
            raise SignalingUnreachable(f"the signaling server at {self.server} did not answer join") from None
        if not isinstance(ack, dict) or not ack.get("ok"):
            code = ack.get("code", "") if isinstance(ack, dict) else ""
            reason = ack.get("error", "join refused") if isinstance(ack, dict) else "join refused"
            raise JoinRefused(_REFUSALS.get(code, "the server refused to join: {reason}.").format(reason=reason), code)
        self.me = Member(id=ack["id"], name=ack.get("name", self.request.name))
        others = [Member.from_payload(m) for m in ack.get("members", [])]
        for member in others:
            self.members[member.id] = member
            self._new_call(member).start_offer()
        self.emit("joined", others)
        return others

    async def leave(self) -> None:
        """Hang up every call, leave the room and close the signaling connection."""
        self._leaving = True
        await asyncio.gather(*(self._hang_up(call) for call in list(self.calls.values())))
        if self._sio.connected:
            try:
                await self._sio.call(protocol.LEAVE, {}, timeout=2)
            except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
                pass
        await self._sio.shutdown()
        self.media.stop()

    async def __aenter__(self) -> "Session":
        await self.connect()
        try:
            await self.join()
        except BaseException:
            await self._sio.shutdown()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.leave()

    async def send_file(self, path: Path, to: Optional[str] = None,
                        progress: Optional[Callable[[Member, int, int], None]] = None) -> str:
        """Send a file to one member (``to``, a member id) or to everyone connected, one
        after another; return its sha256 once every receiver has checked it."""
        calls = [self.calls[to]] if to is not None and to in self.calls else list(self.calls.values())
        if to is not None and to not in self.calls:
            raise TransferError(f"cannot send {Path(path).name}: nobody with id {to} is connected")
        if not calls:
            raise TransferError(f"cannot send {Path(path).name}: nobody is connected")
        sha256 = ""
        for call in calls:
            report = (lambda done, size, m=call.remote: progress(m, done, size)) if progress else None
            sha256 = await call.send_file(Path(path), report)
        return sha256

    def send_chat(self, text: str) -> int:
        """Send a line of chat to everyone connected; return how many it reached."""
        return sum(call.send_chat(text) for call in self.calls.values())

    # Signaling events

    async def _on_peer_joined(self, payload: Any) -> None:
        member = Member.from_payload(payload)
        self.members[member.id] = member
        self.emit("peer-joined", member)

    async def _on_peer_left(self, payload: Any) -> None:
        member = Member.from_payload(payload)
        if self.me is not None and member.id == self.me.id:
            return
        self.members.pop(member.id, None)
        call = self.calls.get(member.id)
        if call is not None:
            await call.close("left", notify=False)
        self.emit("peer-left", member)

    async def _on_message(self, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("from"), str):
            logger.debug("message without a sender ignored")
            return
        sender = payload["from"]
        call = self.calls.get(sender)
        if call is None:
            if payload.get("type") != protocol.OFFER:
                logger.debug("%s from %s with no call: ignored", payload.get("type"), sender)
                return
            member = self.members.setdefault(sender, Member(sender, str(payload.get("name") or sender)))
            call = self._new_call(member)
        call.handle(payload)

    async def _on_error(self, payload: Any) -> None:
        logger.debug("server error: %s", payload)

    async def _on_disconnect(self, *args: Any) -> None:
        if not self._leaving:
            logger.info("signaling connection lost")
            self.emit("disconnected")

    # Calls

    def _new_call(self, member: Member) -> Call:
        call = Call(member, self._signal, self.ice, self.media, **self._call_options)
        self.calls[member.id] = call
        call.on("connected", lambda: self.emit("connected", call))
        call.on("chat", lambda text: self.emit("chat", member, text))
        call.on("data", lambda value: self.emit("data", member, value))
        call.on("track", lambda track: self.emit("track", member, track))
        call.on("file-progress", lambda name, done, size: self.emit("file-progress", member, name, done, size))
        call.on("file", lambda path, sha256: self.emit("file", member, path, sha256))
        call.on("file-failed", lambda name, reason: self.emit("file-failed", member, name, reason))

        @call.on("closed")
        def on_closed(reason: str) -> None:
            if self.calls.get(member.id) is call:
                del self.calls[member.id]
            self.emit("call-closed", member, reason)

        return call

    async def _hang_up(self, call: Call) -> None:
        await self._signal({"type": protocol.BYE, "to": call.remote.id})
        await call.close()

    async def _signal(self, message: dict[str, Any]) -> None:
        if not self._sio.connected:
            logger.debug("signaling down: %s not sent", message.get("type"))
            return
        await self._sio.emit(protocol.MESSAGE, message)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
