"""The signaling protocol as plain data: events, payloads, validation. No I/O.

Both the server (``signaling.server``) and the peer (``peer.session``, ``peer.call``)
import this module: what each side sends is built here and what each receives is read
and checked here, so the rules of the wire live in one place and are tested without sockets.
The wire format is documented for client writers in ``docs/protocol.md``.

Compatibility with the classic room-relay pattern (``join`` with a bare room string,
``message`` objects of type offer/answer/candidate, ``userInRoom`` head counts) is a
hard rule: every addition here is something an old client may ignore.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .text import is_printable
from .turn import IceServer, read_ice_servers

# Events a client sends.
JOIN = "join"
LEAVE = "leave"
MESSAGE = "message"

# Events the server sends.
USER_IN_ROOM = "userInRoom"
PEER_JOINED = "peer-joined"
PEER_LEFT = "peer-left"
ERROR = "error"

# Message types relayed inside ``message``.
OFFER = "offer"
ANSWER = "answer"
CANDIDATE = "candidate"
BYE = "bye"
MESSAGE_TYPES = (OFFER, ANSWER, CANDIDATE, BYE)

MAX_SDP_BYTES = 64 * 1024
"""An SDP offer with audio, video and a data channel is 3-6 KiB; 64 KiB leaves room for
many candidates and simulcast while refusing payloads meant to exhaust memory."""
MAX_CANDIDATE_BYTES = 1024
MAX_NAME_CHARS = 64
MAX_ID_CHARS = 64
"""A member id in ``to`` or ``from``; the server's ids (Socket.IO session ids) are 20 characters."""
MAX_TOKEN_CHARS = 256
MAX_KEPT_CANDIDATES = 32
"""Candidates kept with an offer that reached nobody (see ``join_ack``); a browser gathers
a handful per network interface, so more is a client flooding the server's memory."""
MAX_PENDING_MESSAGES = 64
"""Items of a join ack's ``offers`` a client reads: one kept offer and its candidates fit
twice over (only a member alone in its room has one)."""
MAX_CODE_CHARS = 64
MAX_REASON_CHARS = 200
"""A refusal's ``code`` and ``error`` as a client reads them (the server's are a word and a
sentence); longer ones are none of ours."""
ROOM_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class ProtocolError(ValueError):
    """A payload that breaks the protocol. ``code`` is stable; ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def to_payload(self, event: str) -> dict[str, Any]:
        """The body of an ``error`` event or a failed acknowledgement."""
        return {"ok": False, "event": event, "code": self.code, "error": self.reason}


# Error codes, one per thing a client can get wrong.
BAD_PAYLOAD = "bad-payload"
BAD_ROOM = "bad-room"
BAD_NAME = "bad-name"
UNKNOWN_TYPE = "unknown-type"
TOO_LARGE = "too-large"
NOT_JOINED = "not-joined"
ALREADY_JOINED = "already-joined"
ROOM_FULL = "room-full"
BAD_TOKEN = "bad-token"
UNKNOWN_TARGET = "unknown-target"
RATE_LIMITED = "rate-limited"
UNAVAILABLE = "unavailable"
"""The server cannot reach its room store (a node without its Redis): try again shortly."""


@dataclass(frozen=True)
class JoinRequest:
    """What ``join`` asks for: a room, a display name, maybe a token."""

    room: str
    name: str = ""
    token: Optional[str] = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"room": self.room, "name": self.name}
        if self.token is not None:
            payload["token"] = self.token
        return payload

    def to_classic_payload(self) -> str:
        """The classic form, for a server that speaks only the classic pattern: the bare room
        (no name, no token)."""
        return self.room


@dataclass(frozen=True)
class Member:
    """A member of a room as others see it: a stable id for ``to`` and a display name."""

    id: str
    name: str

    def to_payload(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}

    @classmethod
    def from_payload(cls, payload: Any, default_name: str = "") -> "Member":
        """A member as a client reads it from the server (which may be anyone's): an id and a
        name bounded as the server bounds them."""
        _require_dict(payload, "member")
        return cls(id=_member_id(payload.get("id")), name=_member_name(payload.get("name")) or default_name)


def parse_join(payload: Any) -> JoinRequest:
    """Accept the classic bare room string or ``{room, name?, token?}``."""
    if isinstance(payload, str):
        return JoinRequest(room=_check_room(payload))
    _require_dict(payload, JOIN)
    room = _check_room(payload.get("room"))
    name = payload.get("name", "")
    if name is None:
        name = ""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise ProtocolError(BAD_NAME, f"name must be a string of at most {MAX_NAME_CHARS} characters")
    if not is_printable(name):  # shown on terminals and in logs: no ESC, newline, bidi override
        raise ProtocolError(BAD_NAME, "name must not contain control characters, bidi controls or line separators")
    token = payload.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS):
        raise ProtocolError(BAD_TOKEN, "token must be a string")
    return JoinRequest(room=room, name=name.strip(), token=token)


def parse_message(payload: Any) -> dict[str, Any]:
    """Validate a ``message`` a client sent; return the part that may be relayed.

    Only the fields the type defines survive (plus ``to``), so a client cannot smuggle a
    forged ``from`` or arbitrary data through the server.
    """
    _require_dict(payload, MESSAGE)
    kind = payload.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(
            UNKNOWN_TYPE, f"message type must be one of {', '.join(MESSAGE_TYPES)}, not {kind!r}"[:200]
        )
    clean: dict[str, Any] = {"type": kind}
    if kind in (OFFER, ANSWER):
        clean["sdp"] = _check_sdp(payload.get("sdp"))
    elif kind == CANDIDATE:
        clean["candidate"] = _check_candidate(payload.get("candidate"))
    to = payload.get("to")
    if to is not None:
        if not isinstance(to, str) or not to or len(to) > MAX_ID_CHARS:
            raise ProtocolError(BAD_PAYLOAD, "'to' must be a member id string")
        clean["to"] = to
    return clean


def relayed(message: dict[str, Any], sender: Member) -> dict[str, Any]:
    """The message as receivers see it: stamped with the sender's id and name."""
    out = {key: value for key, value in message.items() if key != "to"}
    out["from"] = sender.id
    out["name"] = sender.name
    return out


def join_ack(me: Member, room: str, others: list[Member], capacity: int,
             offers: Sequence[dict[str, Any]] = (), ice_servers: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """The acknowledgement of a successful ``join``.

    ``members`` lists who was there before; by the offerer rule the joiner sends an
    offer to each of them and they wait for it. ``offers`` are the exception: messages
    (``relayed`` form) of a member who offered while alone, a classic client that offers
    on joining. That offer reached nobody and its sender waits for an answer; offering to
    it instead makes a browser roll its offer back, and Chromium then rejects our data
    channel. So the joiner answers these offers and does not offer to their senders.
    ``ice_servers`` (a server started with ``--turn-server``) are TURN servers with
    credentials for this member (``signaling.turn.TurnGrant``), as ``iceServers``.
    """
    ack = {
        "ok": True,
        "id": me.id,
        "name": me.name,
        "room": room,
        "members": [m.to_payload() for m in others],
        "capacity": capacity,
        "offers": list(offers),
    }
    if ice_servers is not None:
        ack["iceServers"] = ice_servers
    return ack


class Refusal(ProtocolError):
    """A failed acknowledgement as a client reads it: the server's ``code`` and ``error``
    (empty and "join refused" when it sent none that make sense)."""


@dataclass(frozen=True)
class JoinAck:
    """A successful ``join`` acknowledgement as a client reads it (see ``join_ack``)."""

    me: Member
    others: list[Member]
    """Who was there before, in the order they joined: the joiner offers to each of them,
    except to those whose offers it answers."""
    offers: list[dict[str, Any]]
    """Offers that reached nobody, and their candidates, in ``relayed`` form: to answer."""
    ice_servers: list[IceServer] = field(default_factory=list)
    """The STUN and TURN servers the server hands out, checked and bounded (``read_ice_servers``)."""
    ice_dropped: list[str] = field(default_factory=list)
    """What of the server's ``iceServers`` was dropped, a line each, to log."""

    @property
    def offerers(self) -> set[str]:
        """The ids of the members whose offers ``offers`` carries."""
        return {message["from"] for message in self.offers if message["type"] == OFFER}


def parse_join_ack(payload: Any, default_name: str = "") -> JoinAck:
    """Read the server's answer to ``join`` as a client, all of it at once: who we are, who was
    there before, and the offers to answer. ``Refusal`` when the server refused; ProtocolError
    when it answered what no server of ours would. The server may be anyone's, so its answer
    is checked and bounded too."""
    if not isinstance(payload, dict) or not payload.get("ok"):
        raise _refusal(payload)
    me = Member.from_payload(payload, default_name)
    members = payload.get("members", [])
    if not isinstance(members, list):
        raise ProtocolError(BAD_PAYLOAD, "'members' must be a list")
    others = [Member.from_payload(member) for member in members]
    if len({member.id for member in others}) < len(others):
        # Each listing would begin a call of its own, replacing the last under the same id.
        raise ProtocolError(BAD_PAYLOAD, "'members' lists a member twice")
    ice_servers, ice_dropped = read_ice_servers(payload.get("iceServers"))
    return JoinAck(me, others, parse_pending_offers(payload, others), ice_servers, ice_dropped)


def _refusal(payload: Any) -> Refusal:
    code = payload.get("code") if isinstance(payload, dict) else None
    reason = payload.get("error", "join refused") if isinstance(payload, dict) else None
    return Refusal(code if isinstance(code, str) and len(code) <= MAX_CODE_CHARS else "",
                   reason[:MAX_REASON_CHARS] if isinstance(reason, str) else "join refused")


def parse_pending_offers(ack: Any, members: list[Member]) -> list[dict[str, Any]]:
    """Read a join acknowledgement's ``offers`` (see ``join_ack``) as a client: the offers
    to answer and their candidates, as ``message`` events would bring them.

    The server may be anyone's: an item is kept only if it is an offer with an SDP or a
    candidate, checked as ``parse_message`` checks them, from one of ``members`` (whose
    name it then carries), a candidate only after an offer of its member; anything else is
    dropped, and at most ``MAX_PENDING_MESSAGES`` items are read. No ``offers`` (an older
    server) is no offers.
    """
    offers = ack.get("offers") if isinstance(ack, dict) else None
    if not isinstance(offers, list):
        return []
    names = {member.id: member.name for member in members}
    kept = []
    offered: set[str] = set()
    for item in offers[:MAX_PENDING_MESSAGES]:
        try:
            message = _pending_message(item, names)
        except ProtocolError:
            continue
        if message["type"] == OFFER:
            offered.add(message["from"])
        if message["from"] in offered:  # a candidate counts only after its member's offer
            kept.append(message)
    return kept


def _pending_message(item: Any, names: dict[str, str]) -> dict[str, Any]:
    _require_dict(item, "offers item")
    sender = item.get("from")
    if not isinstance(sender, str) or sender not in names:
        raise ProtocolError(BAD_PAYLOAD, "'from' must be a member listed in the ack")
    if item.get("type") == OFFER:
        clean: dict[str, Any] = {"type": OFFER, "sdp": _check_sdp(item.get("sdp"))}
    elif item.get("type") == CANDIDATE and "candidate" in item:
        clean = {"type": CANDIDATE, "candidate": _check_candidate(item["candidate"])}
    else:
        raise ProtocolError(UNKNOWN_TYPE, "an offers item is an offer or a candidate")
    return relayed(clean, Member(id=sender, name=names[sender]))


def parse_relayed(payload: Any) -> dict[str, Any]:
    """Read a ``message`` event as a client: checked as ``parse_message`` checks what a client
    sends (the server that relays it may be anyone's, or a classic one that checks nothing),
    with the ``from`` and ``name`` our server stamps on it. Only those fields survive; a
    classic server stamps neither, so both may be missing. ``name`` is bounded but may hold
    control characters: the server is the judge of names, and names are escaped wherever
    they are shown."""
    _require_dict(payload, MESSAGE)
    clean = parse_message({key: value for key, value in payload.items() if key != "to"})
    if payload.get("from") is not None:
        clean["from"] = _member_id(payload["from"], "from")
    if payload.get("name") is not None:
        clean["name"] = _member_name(payload["name"])
    return clean


def _member_id(value: Any, key: str = "id") -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(BAD_PAYLOAD, f"'{key}' must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise ProtocolError(BAD_PAYLOAD, f"'{key}' longer than {MAX_ID_CHARS} characters")
    return value


def _member_name(value: Any) -> str:
    """A name the server gave (None: none); bounded, but it may hold control characters:
    the server is the judge of names, and names are escaped wherever they are shown."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise ProtocolError(BAD_NAME, f"'name' must be a string of at most {MAX_NAME_CHARS} characters")
    return value


# What a client sends in ``message`` (the join payload is ``JoinRequest``'s)

def offer_message(sdp: str, to: Optional[str]) -> dict[str, Any]:
    """An SDP offer to member ``to`` (None: to whoever is in the room)."""
    return _addressed({"type": OFFER, "sdp": sdp}, to)


def answer_message(sdp: str, to: Optional[str]) -> dict[str, Any]:
    """The SDP answer to member ``to``'s offer."""
    return _addressed({"type": ANSWER, "sdp": sdp}, to)


def candidate_message(candidate: Optional[dict[str, Any]], to: Optional[str] = None) -> dict[str, Any]:
    """A trickled candidate as a browser's ``RTCIceCandidate.toJSON()`` gives it; one whose
    ``candidate`` is ``""`` (or None) ends the candidates."""
    return _addressed({"type": CANDIDATE, "candidate": candidate}, to)


def bye_message(to: str) -> dict[str, Any]:
    """Hang up on member ``to`` now."""
    return _addressed({"type": BYE}, to)


def for_classic_server(message: dict[str, Any]) -> Optional[dict[str, Any]]:
    """``message`` as a server of the classic pattern takes it: without ``to`` (it knows no
    member ids and relays to the whole room); None for a ``bye``, which classic clients do not
    know (the data channel closing tells them)."""
    if message["type"] == BYE:
        return None
    return {key: value for key, value in message.items() if key != "to"}


def _addressed(message: dict[str, Any], to: Optional[str]) -> dict[str, Any]:
    if to is not None:
        message["to"] = to
    return message


def _check_room(room: Any) -> str:
    if not isinstance(room, str) or not ROOM_PATTERN.fullmatch(room):  # match() lets 'a\n' in
        raise ProtocolError(
            BAD_ROOM,
            "room name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return room


def _check_sdp(sdp: Any) -> str:
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ProtocolError(BAD_PAYLOAD, "'sdp' must be an SDP string starting with 'v=0'")
    if len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise ProtocolError(TOO_LARGE, f"SDP larger than {MAX_SDP_BYTES} bytes")
    return sdp


def _check_candidate(candidate: Any) -> Optional[dict[str, Any]]:
    """A trickled candidate as browsers send it, or None / empty for end of candidates."""
    if candidate is None:
        return None
    _require_dict(candidate, CANDIDATE)
    text = candidate.get("candidate", "")
    if not isinstance(text, str):
        raise ProtocolError(BAD_PAYLOAD, "'candidate.candidate' must be a string")
    if len(text) > MAX_CANDIDATE_BYTES:
        raise ProtocolError(TOO_LARGE, f"candidate larger than {MAX_CANDIDATE_BYTES} bytes")
    mid = candidate.get("sdpMid")
    index = candidate.get("sdpMLineIndex")
    ufrag = candidate.get("usernameFragment")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 64):
        raise ProtocolError(BAD_PAYLOAD, "'candidate.sdpMid' must be a string")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024):
        raise ProtocolError(BAD_PAYLOAD, "'candidate.sdpMLineIndex' must be a small integer")
    if ufrag is not None and (not isinstance(ufrag, str) or len(ufrag) > 256):
        raise ProtocolError(BAD_PAYLOAD, "'candidate.usernameFragment' must be a string")
    return {"candidate": text, "sdpMid": mid, "sdpMLineIndex": index, "usernameFragment": ufrag}


def _require_dict(payload: Any, what: str) -> None:
    if not isinstance(payload, dict):
        raise ProtocolError(BAD_PAYLOAD, f"{what} payload must be an object")
