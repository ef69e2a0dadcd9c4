"""ICE settings: which local addresses to offer, and which STUN/TURN servers to use.

aiortc asks ``aioice.ice.get_host_addresses`` for host candidates and leaves loopback out,
so a call between two processes on one machine with no network finds no path. Choosing the
addresses here is how ``--ice-host 127.0.0.1`` keeps a call on the machine.

aioice looks that function up in its module, for the whole process. So it is replaced, once,
by one that reads a context variable: each call sets it in its own task, and two rooms in one
process with different addresses keep their own.

aioice also drops a TURN allocation that fails without a word: a wrong password or a TURN
server that does not answer left a relay-only call failing with nothing to say why. Its
``relayed_candidate`` is wrapped the same way, to log the TURN server's refusal in one line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import aioice.ice
import aioice.stun
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from signaling.text import printable
from signaling.turn import IceServer, check_ice_url, ice_server

from .errors import PeerError

logger = logging.getLogger(__name__)

_chosen: ContextVar[Optional[tuple[str, ...]]] = ContextVar("peer_ice_host_addresses", default=None)
_aioice_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _chosen.get()
    if chosen is None:
        return _aioice_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


aioice.ice.get_host_addresses = _get_host_addresses

_aioice_relayed_candidate = aioice.ice.relayed_candidate
_turn_faults_told: set[tuple[Any, str]] = set()
"""The TURN faults logged as warnings already: each is said once a process, then at debug
level (every connection of every call gathers again)."""


GATHER_TIMEOUT = 5.0
"""Seconds aioice gives a TURN allocation (``get_component_candidates``) before it cancels it."""


async def _relayed_candidate(**options: Any) -> Any:
    started = time.monotonic()
    try:
        return await _aioice_relayed_candidate(**options)
    except (aioice.stun.TransactionError, OSError) as error:  # OSError: refused, unreachable, TLS
        _tell_turn_fault(options.get("turn_server"), turn_fault(error))
        raise
    except asyncio.CancelledError:
        if time.monotonic() - started >= GATHER_TIMEOUT - 0.1:  # aioice's timeout, not a close
            _tell_turn_fault(options.get("turn_server"), f"no answer within {GATHER_TIMEOUT:g} s "
                                                         "(is it running, and its port open?)")
        raise


def _tell_turn_fault(server: Any, fault: str) -> None:
    told = (server, fault) in _turn_faults_told
    _turn_faults_told.add((server, fault))
    where = ":".join(map(str, server)) if isinstance(server, tuple) else server
    (logger.debug if told else logger.warning)("no relay from the TURN server %s: %s", where, fault)


aioice.ice.relayed_candidate = _relayed_candidate


def turn_fault(error: BaseException) -> str:
    """What a failed TURN allocation means, for people. The reason phrase is the TURN
    server's, so it is bounded and escaped."""
    if isinstance(error, aioice.stun.TransactionFailed):
        code = error.response.attributes.get("ERROR-CODE")
        if isinstance(code, tuple) and code and code[0] == 401:
            return ("it refused the credentials (401 Unauthorized: wrong or expired; from a signaling server, "
                    "its --turn-secret must be coturn's static-auth-secret)")
        if isinstance(code, tuple) and len(code) == 2:
            return f"it refused ({code[0]} {printable(str(code[1])[:100])})"
        return "it refused"
    if isinstance(error, aioice.stun.TransactionTimeout):
        return "no answer (is it running, and its port open?)"
    return printable(str(error)[:200]) or type(error).__name__


def use_host_addresses(addresses: Optional[Sequence[str]]) -> None:
    """Make ICE gather host candidates on exactly ``addresses`` (None or none: aioice's own
    choice) in the current task, and in the tasks it starts from now on."""
    _chosen.set(tuple(addresses) if addresses else None)


class IceConfigError(PeerError, ValueError):
    """ICE settings that cannot work: a URL aiortc cannot use, TURN without credentials,
    relay-only with no TURN server. Also a ``ValueError``."""

    exit_code = 2


@dataclass(frozen=True)
class IceSettings:
    """What a peer tells ICE. With no STUN given none is used: aiortc's default public
    STUN server costs 10 s per negotiation where it cannot be reached.

    The servers are ``stun`` and ``turn`` (the flags, with ``turn_user`` and ``turn_password``
    for every ``turn`` URL) and ``servers`` (a config file's, or those the signaling server
    hands out: see ``offered``). URLs are checked when the settings are made (IceConfigError,
    one line). aiortc gathers from the first STUN and the first TURN URL it can use, in
    that order. ``relay_only`` allows relayed candidates only: the TURN path or none.
    Credentials are left out of the ``repr``."""

    host_addresses: tuple[str, ...] = ()
    stun: tuple[str, ...] = ()
    turn: tuple[str, ...] = ()
    turn_user: Optional[str] = field(default=None, repr=False)
    turn_password: Optional[str] = field(default=None, repr=False)
    relay_only: bool = False
    servers: tuple[IceServer, ...] = ()

    def __post_init__(self) -> None:
        try:
            for url in self.stun:
                _check_scheme(url, "STUN", ("stun",))
            for url in self.turn:
                _check_scheme(url, "TURN", ("turn", "turns"))
            if self.turn:
                ice_server(self.turn, self.turn_user, self.turn_password)
        except ValueError as error:
            raise IceConfigError(str(error)) from None
        if self.has_servers:  # the signaling server's are never taken: it must be these
            self.check_relay()

    @property
    def has_servers(self) -> bool:
        """Whether any STUN or TURN server is set."""
        return bool(self.stun or self.turn or self.servers)

    @property
    def has_turn(self) -> bool:
        return bool(self.turn) or any(server.turn for server in self.servers)

    def offered(self, servers: Sequence[IceServer]) -> "IceSettings":
        """These settings with the servers the signaling server hands out (its join
        acknowledgement's, checked) when they name none of their own; unchanged when they do:
        servers a person chose are never replaced by the server's."""
        return self if self.has_servers else replace(self, servers=tuple(servers))

    def check_relay(self) -> None:
        """IceConfigError when ``relay_only`` has no TURN server to relay through."""
        if self.relay_only and not self.has_turn:
            raise IceConfigError("--relay-only needs a TURN server: give --turn URL (with --turn-user and "
                                 "--turn-password, or PEER_TURN_USER and PEER_TURN_PASSWORD), --ice-config FILE, "
                                 "or join a signaling server started with --turn-server")

    def configuration(self) -> RTCConfiguration:
        servers = [RTCIceServer(urls=url) for url in self.stun]
        servers += [RTCIceServer(urls=url, username=self.turn_user, credential=self.turn_password) for url in self.turn]
        servers += [RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential)
                    for server in self.servers]
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL)

    def apply(self) -> None:
        """Gather on these host addresses in the current task (see ``use_host_addresses``)."""
        use_host_addresses(self.host_addresses)


def _check_scheme(url: str, kind: str, schemes: tuple[str, ...]) -> None:
    """ValueError unless ``url`` is a usable ICE URL of one of ``schemes``."""
    if check_ice_url(url).partition(":")[0].lower() not in schemes:
        raise ValueError(f"{url!r} is given as a {kind} server: a {kind} URL starts with {' or '.join(s + ':' for s in schemes)}")
