"""STUN and TURN servers as the wire and the command line carry them, and TURN credentials
the signaling server hands out. No I/O.

Three sides use it. The signaling server (``--turn-server URL --turn-secret S``) gives every
member that joins a TURN server with credentials of its own, made with coturn's
``use-auth-secret`` scheme (``turn_credentials``): a username ``EXPIRY:MEMBER-ID`` and a
password that is the base64 HMAC-SHA1 of it under the secret coturn shares. Nobody keeps a
user list, and a password leaked from one peer's memory stops working at its expiry. The
peer's flags, environment and config file give URLs checked here (``check_ice_url``), each
fault in one line. And the peer reads the servers a join acknowledgement carries with
``read_ice_servers``, as hostile input: the server may be anyone's, so what it says is
bounded in count and length, and a server it names that aiortc could not use is dropped
rather than left to fail every call.

Credentials are never part of a ``repr`` (``IceServer``): a log line or traceback that shows
settings does not show passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

SCHEMES = ("stun", "turn", "turns")
TURN_SCHEMES = ("turn", "turns")
MAX_ICE_SERVERS = 8
"""Servers read from a join acknowledgement; more are ignored. A browser gathers from each,
and our peer from each TURN URL (``peer.ice``, at most 8): a hostile list costs a socket each."""
MAX_URLS = 4
"""URLs of one server read from a join acknowledgement (UDP, TCP, TLS, and one more)."""
MAX_URL_CHARS = 256
MAX_CREDENTIAL_CHARS = 256
"""A username or credential: coturn's are some 50 characters."""
DEFAULT_TTL = 24 * 3600
"""Seconds a handed-out TURN credential works: a day covers a long call (coturn checks it
again at every refresh of an allocation, so a call outliving it loses its relay)."""
MAX_TTL = 7 * 24 * 3600

_URL = re.compile(r"(?P<host>[^:?]*)(?::(?P<port>[^?]*))?(?:\?(?P<query>.*))?", re.DOTALL)
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class IceServer:
    """One entry of a WebRTC ``iceServers`` list: its URLs and, for TURN, the username and
    credential, which its ``repr`` leaves out."""

    urls: tuple[str, ...]
    username: Optional[str] = field(default=None, repr=False)
    credential: Optional[str] = field(default=None, repr=False)

    @property
    def turn(self) -> bool:
        """Whether this server relays (a ``turn:`` or ``turns:`` URL)."""
        return any(is_turn(url) for url in self.urls)

    def to_payload(self) -> dict[str, Any]:
        """The browser's ``RTCIceServer`` form, as a join acknowledgement carries it."""
        payload: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            payload["username"] = self.username
        if self.credential is not None:
            payload["credential"] = self.credential
        return payload


def is_turn(url: str) -> bool:
    return url.partition(":")[0].lower() in TURN_SCHEMES


def check_ice_url(url: Any) -> str:
    """``url`` if aiortc can use it: ``stun:HOST[:PORT]``, ``turn:HOST[:PORT][?transport=udp|tcp]``
    or ``turns:HOST[:PORT][?transport=tcp]`` (TLS). Else ValueError with one line that quotes
    it and says what is wrong (never what precedes an ``@``: a password written into the URL).
    aiortc's own parser takes less than it says (no IPv6 address, no ``stuns:``, a scheme in
    lower case only, a port in ASCII digits), and a URL it cannot parse ends the task of every
    call that has it; a host name with an empty label or one over 63 characters fails every
    lookup: that is what this checks."""
    if not isinstance(url, str) or not url:
        raise ValueError("an ICE server URL must be a non-empty string")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"ICE server URL longer than {MAX_URL_CHARS} characters: {_quoted(url)[:40]}...")
    scheme, colon, rest = url.partition(":")
    if not colon or scheme not in SCHEMES:
        extra = " (aiortc has no STUN over TLS: use stun:)" if scheme.lower() == "stuns" else \
            " (in lower case: aiortc reads no other)" if scheme.lower() in SCHEMES else ""
        raise ValueError(f"{_quoted(url)}: an ICE server URL starts with stun:, turn: or turns:{extra}")
    if rest.startswith("//"):
        raise ValueError(f"{_quoted(url)}: no '//' after {scheme}: (it is {scheme}:HOST:PORT)")
    match = _URL.fullmatch(rest)
    assert match is not None  # every string matches: the parts are checked one by one
    host, port, query = match["host"], match["port"], match["query"]
    if host.startswith("[") or (port is not None and ":" in port):
        raise ValueError(f"{_quoted(url)}: aiortc takes no IPv6 address in an ICE server URL; use a host name")
    if not _HOST.fullmatch(host) or any(len(label) > 63 or not label for label in host.split(".")):
        raise ValueError(f"{_quoted(url)}: no valid host name or IPv4 address after {scheme}:")
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{_quoted(url)}: the port must be a number from 1 to 65535")
    _check_query(url, scheme, query)
    return url


def shown_url(url: str) -> str:
    """``url`` as a message may show it: less what comes before an ``@``. No ICE URL has one,
    and one written ``turn:USER:PASSWORD@HOST`` holds a password that must not be printed."""
    scheme, colon, rest = url.partition(":")
    return f"{scheme}{colon}...@{rest.rpartition('@')[2]}" if "@" in rest else url


def _quoted(url: str) -> str:
    return repr(shown_url(url))


def _check_query(url: str, scheme: str, query: Optional[str]) -> None:
    if query is None:
        return
    if scheme == "stun":
        raise ValueError(f"{_quoted(url)}: a stun: URL takes no '?' part")
    key, _, transport = query.partition("=")
    if key != "transport" or transport not in ("udp", "tcp"):
        raise ValueError(f"{_quoted(url)}: the only '?' part is ?transport=udp or ?transport=tcp")
    if scheme == "turns" and transport != "tcp":
        raise ValueError(f"{_quoted(url)}: turns: is TLS over TCP; it takes no ?transport=udp")


def ice_server(urls: Sequence[str], username: Optional[str] = None, credential: Optional[str] = None) -> IceServer:
    """An ``IceServer`` whose URLs are checked (``check_ice_url``) and which, if it relays,
    has a username and a credential; ValueError (one line) otherwise."""
    if not urls:
        raise ValueError("an ICE server needs at least one URL")
    checked = tuple(check_ice_url(url) for url in urls)
    for name, value in (("username", username), ("credential", credential)):
        if value is not None and (not isinstance(value, str) or len(value) > MAX_CREDENTIAL_CHARS
                                  or not _utf8(value)):
            raise ValueError(f"the {name} of {checked[0]} must be a string of at most {MAX_CREDENTIAL_CHARS} characters"
                             " (Unicode text)")
    server = IceServer(checked, username, credential)
    if server.turn and (not username or not credential):
        raise ValueError(f"the TURN server {checked[0]} needs a username and a credential (password)")
    return server


def _utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8, as aioice encodes TURN credentials: JSON carries lone
    surrogates (``"\\ud800"``), which fail there inside aioice's allocation, without a word."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_ice_servers(payload: Any) -> tuple[list[IceServer], list[str]]:
    """The ``iceServers`` of a join acknowledgement, as a client reads it: the servers kept,
    and a line for each thing dropped. At most ``MAX_ICE_SERVERS`` servers of ``MAX_URLS``
    URLs each are read; a server that is not an object, a URL aiortc could not use, TURN
    without credentials, a string too long: dropped. None (an older server, or one with no
    TURN to give) is no servers."""
    if payload is None:
        return [], []
    if not isinstance(payload, list):
        return [], ["'iceServers' is not a list"]
    kept: list[IceServer] = []
    dropped = [f"{len(payload) - MAX_ICE_SERVERS} servers past the first {MAX_ICE_SERVERS}"] \
        if len(payload) > MAX_ICE_SERVERS else []
    for item in payload[:MAX_ICE_SERVERS]:
        try:
            kept.append(read_ice_server(item))
        except ValueError as error:
            dropped.append(str(error)[:MAX_URL_CHARS])
    return kept, dropped


def read_ice_server(item: Any) -> IceServer:
    """An ``RTCIceServer`` object (``{urls, username?, credential?}``, ``urls`` a URL or a
    list of at most ``MAX_URLS``) as an ``IceServer``, checked (``ice_server``); ValueError
    otherwise. Other keys are not read."""
    if not isinstance(item, dict):
        raise ValueError("an ICE server is not an object with urls, username and credential")
    urls = item.get("urls")
    urls = [urls] if isinstance(urls, str) else urls
    if not isinstance(urls, list) or len(urls) > MAX_URLS:
        raise ValueError(f"an ICE server's 'urls' is not a URL or a list of at most {MAX_URLS}")
    return ice_server(urls, item.get("username"), item.get("credential"))


def turn_credentials(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """coturn's ``use-auth-secret`` credentials (its "TURN REST API"): the username
    ``EXPIRY:USER``, EXPIRY in Unix seconds, and the password base64(HMAC-SHA1(secret,
    username)). coturn started with ``--use-auth-secret --static-auth-secret=SECRET`` checks
    both and refuses the username once EXPIRY has passed."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class TurnGrant:
    """What the signaling server hands every member that joins: its TURN URLs with fresh
    credentials for that member (``servers_for``)."""

    urls: tuple[str, ...]
    secret: str = field(repr=False)
    ttl: int = DEFAULT_TTL

    def servers_for(self, member_id: str, now: float) -> list[dict[str, Any]]:
        """The acknowledgement's ``iceServers`` for ``member_id``, valid ``ttl`` seconds from ``now``."""
        username, password = turn_credentials(self.secret, member_id, self.ttl, now)
        return [IceServer(self.urls, username, password).to_payload()]
