"""A relay in the middle of a real call, as a hostile signaling server can run one: it ends
DTLS on each side with a connection of its own, passes the data channels through, and hides
behind a decoy fingerprint line. The verification codes must give it away."""

import asyncio
import hashlib
import re
from collections import defaultdict
from typing import Any, Optional

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

import peer
from conftest import LOCAL
from peer.connection import CHAT_CHANNEL, CONTROL_CHANNEL, FILES_CHANNEL
from peer.ice import use_host_addresses
from peer.verification import connection_code
from signaling import SignalingServer, protocol

MEDDLED = "victims"
BYSTANDERS = "bystanders"
SHA256 = re.compile(r"^a=fingerprint:sha-256 (\S+)\r?$", re.MULTILINE)


def with_decoy(sdp: str, value: str) -> str:
    """Each fingerprint group of ``sdp`` led by ``a=fingerprint:sha-1 VALUE``, which DTLS skips."""
    return SHA256.sub(lambda match: f"a=fingerprint:sha-1 {value}\r\n{match.group(0)}", sdp)


def first_sdp_fingerprint_code(pc: RTCPeerConnection) -> Optional[str]:
    """The code as it was computed before: from the first ``a=fingerprint`` line of each SDP."""
    first = re.compile(r"^a=fingerprint:(\S+) (\S+)", re.MULTILINE)
    prints = sorted(m.group(2).upper() for d in (pc.localDescription, pc.remoteDescription)
                    for m in [first.search(d.sdp)] if m)
    number = int.from_bytes(hashlib.sha256("|".join(prints).encode()).digest()[:4], "big") % 1_000_000
    return f"{number // 1000:03d} {number % 1000:03d}"


class RelayInTheMiddle(SignalingServer):
    """A signaling server that puts itself in the middle of every call in room ``victims``:
    it answers the offer with a connection of its own, offers the other side another one,
    and relays the data channels between them. Each victim is shown, before the relay's own
    fingerprint, a sha-1 line carrying the other victim's real sha-256 value."""

    def __init__(self) -> None:
        super().__init__()
        self.legs: dict[str, RTCPeerConnection] = {}
        """The relay's connection facing each victim (by member id)."""
        self.peer_of: dict[str, str] = {}
        self.channels: dict[str, dict[str, RTCDataChannel]] = defaultdict(dict)
        self.backlog: dict[tuple[str, str], list[Any]] = defaultdict(list)
        self.answers: dict[str, asyncio.Future] = {}
        self.overheard: list[str] = []
        self._tasks: set[asyncio.Task] = set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pc in self.legs.values():
            await pc.close()
        await super().stop()

    async def _on_message(self, sid: str, *args: Any) -> dict[str, Any]:
        message = args[0] if args and isinstance(args[0], dict) else {}
        if self.relay.store.rooms.room_of(sid) != MEDDLED:
            return await super()._on_message(sid, *args)
        kind = message.get("type")
        if kind == protocol.OFFER:
            task = asyncio.ensure_future(self._intercept(sid, message["to"], message["sdp"]))
            self._tasks.add(task)
            return {"ok": True}
        if kind == protocol.ANSWER and sid in self.answers:
            self.answers.pop(sid).set_result(message["sdp"])
            return {"ok": True}
        if kind == protocol.CANDIDATE:
            return {"ok": True}  # the SDP carries every candidate; these are not for the relay
        return await super()._on_message(sid, *args)

    async def _intercept(self, offerer: str, answerer: str, offer: str) -> None:
        facing_offerer, facing_answerer = self._leg(offerer, answerer), self._leg(answerer, offerer)
        for label in (CONTROL_CHANNEL, FILES_CHANNEL, CHAT_CHANNEL):  # as the offerer opens them
            self._attach(answerer, facing_answerer.createDataChannel(label))
        await facing_answerer.setLocalDescription(await facing_answerer.createOffer())
        answered = self.answers[answerer] = asyncio.get_running_loop().create_future()
        await self._send(answerer, offerer, protocol.OFFER,
                         with_decoy(facing_answerer.localDescription.sdp, SHA256.search(offer).group(1)))
        answer = await answered
        await facing_answerer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await facing_offerer.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await facing_offerer.setLocalDescription(await facing_offerer.createAnswer())
        await self._send(offerer, answerer, protocol.ANSWER,
                         with_decoy(facing_offerer.localDescription.sdp, SHA256.search(answer).group(1)))

    async def _send(self, to: str, as_from: str, kind: str, sdp: str) -> None:
        message = protocol.relayed({"type": kind, "sdp": sdp}, self.relay.store.rooms.member(as_from))
        await self.sio.emit(protocol.MESSAGE, message, to=to)

    def _leg(self, victim: str, other: str) -> RTCPeerConnection:
        # ICE gathers on 127.0.0.1 here: the test chose that before starting the relay.
        pc = self.legs[victim] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peer_of[victim] = other
        pc.on("datachannel", lambda channel: self._attach(victim, channel))
        return pc

    def _attach(self, victim: str, channel: RTCDataChannel) -> None:
        """What ``victim`` says on ``channel`` goes to the other victim's channel of that label."""
        label, other = channel.label, self.peer_of[victim]
        self.channels[victim][label] = channel

        @channel.on("message")
        def on_message(data: Any) -> None:
            if label == CHAT_CHANNEL:
                self.overheard.append(data)
            self.backlog[(other, label)].append(data)
            self._flush(other, label)

        channel.on("open", lambda: self._flush(victim, label))
        self._flush(victim, label)

    def _flush(self, victim: str, label: str) -> None:
        channel = self.channels[victim].get(label)
        if channel is not None and channel.readyState == "open":
            pending, self.backlog[(victim, label)] = self.backlog[(victim, label)], []
            for data in pending:
                channel.send(data)


async def codes_when_connected(a: peer.Room, b: peer.Room) -> tuple[str, str]:
    await asyncio.gather(a.wait_for_peer(timeout=15), b.wait_for_peer(timeout=15))
    return a.verification_code(), b.verification_code()


async def test_a_relay_in_the_middle_shows_in_the_codes():
    use_host_addresses([LOCAL])  # for the relay's own connections, made in tasks it starts
    relay = RelayInTheMiddle()
    url = f"http://{LOCAL}:{await relay.start(LOCAL, 0)}"
    try:
        async with peer.join(MEDDLED, server=url, name="alice", ice_hosts=[LOCAL]) as alice, \
                   peer.join(MEDDLED, server=url, name="bob", ice_hosts=[LOCAL]) as bob, \
                   peer.join(BYSTANDERS, server=url, name="carol", ice_hosts=[LOCAL]) as carol, \
                   peer.join(BYSTANDERS, server=url, name="dan", ice_hosts=[LOCAL]) as dan:
            code_alice, code_bob = await codes_when_connected(alice, bob)

            # The attack is real: each victim's DTLS ends at the relay, and chat runs through it.
            assert {pc.connectionState for pc in relay.legs.values()} == {"connected"}, relay.legs
            assert code_alice == connection_code(relay.legs[alice.me.id])
            assert code_bob == connection_code(relay.legs[bob.me.id])
            alice.send_text("hello bob")
            await bob.wait_for_message(lambda text: text == "hello bob", timeout=5)
            bob.send_text("hello alice")
            await alice.wait_for_message(lambda text: text == "hello alice", timeout=5)
            assert relay.overheard == ["hello bob", "hello alice"]

            # The decoy fools a code read from the SDP's first fingerprint lines...
            call_alice, call_bob = alice.session.calls[bob.me.id], bob.session.calls[alice.me.id]
            assert first_sdp_fingerprint_code(call_alice.pc) == first_sdp_fingerprint_code(call_bob.pc)
            # ...but not the code from the certificates DTLS used.
            assert re.fullmatch(r"\d{5}( \d{5}){4}", code_alice) and re.fullmatch(r"\d{5}( \d{5}){4}", code_bob)
            assert code_alice != code_bob

            # Bystanders in another room of the same server: an honest call, equal codes.
            code_carol, code_dan = await codes_when_connected(carol, dan)
            assert code_carol and code_carol == code_dan
            carol.send_text("still fine")
            await dan.wait_for_message(lambda text: text == "still fine", timeout=5)
    finally:
        await relay.stop()
