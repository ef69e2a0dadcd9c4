"""ICE settings: which local addresses to offer, and which STUN/TURN servers to use.

aiortc asks ``aioice.ice.get_host_addresses`` for host candidates and leaves loopback out,
so a call between two processes on one machine with no network finds no path. Choosing the
addresses here is how ``--ice-host 127.0.0.1`` keeps a call on the machine.

aioice looks that function up in its module, for the whole process. So it is replaced, once,
by one that reads a context variable: each call sets it in its own task, and two rooms in one
process with different addresses keep their own.

aioice also drops a TURN allocation that fails without a word: a wrong password or a TURN
server that does not answer left a relay-only call failing with nothing to say why. And aiortc
hands aioice only the first TURN URL of a configuration: ``turn:...?transport=tcp`` after
``turn:...`` (for a network that blocks UDP) or a second TURN server was never tried. Its
``relayed_candidate`` is wrapped the same way: every TURN URL of the call's settings (a context
variable, as above) is tried at once, the first allocation made is the relay, the others are
released, and each refusal is logged in one line.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import aioice.ice
import aioice.stun
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcicetransport import parse_stun_turn_uri

from signaling.text import printable
from signaling.turn import IceServer, check_ice_url, ice_server

from . import ice_checks  # noqa: F401  -- installs its fix of aioice's controlled agent
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
_turn_choices: ContextVar[tuple[dict[str, Any], ...]] = ContextVar("peer_turn_choices", default=())
"""Every TURN URL of the current call's settings, as ``relayed_candidate``'s options."""
_turn_faults_told: set[tuple[Any, str]] = set()
"""The TURN faults logged as warnings already: each is said once a process, then at debug
level (every connection of every call gathers again)."""


GATHER_TIMEOUT = 5.0
"""Seconds aioice gives a TURN allocation (``get_component_candidates``) before it cancels it."""


MAX_TURN_TRIES = 8
"""TURN URLs tried at once for one connection: each is a socket and an allocation, and the
servers may come from a signaling server that is anyone's."""


async def _relayed_candidate(**options: Any) -> Any:
    """aioice's, for every TURN URL of the call at once (``_turn_choices``; the one aiortc
    chose first): the first allocation made wins, those made after it are released. The
    last fault is raised when none is made."""
    def where(choice: dict[str, Any]) -> tuple[Any, ...]:
        return choice["turn_server"], choice["turn_ssl"], choice["turn_transport"]

    choices = [options] + [dict(options, **choice) for choice in _turn_choices.get() if where(choice) != where(options)]
    choices = choices[:MAX_TURN_TRIES]
    if len(choices) == 1:
        return await _one_relay(options)
    attempts = [asyncio.ensure_future(_one_relay(choice)) for choice in choices]
    winner: Optional[asyncio.Future] = None
    try:
        pending: set[asyncio.Future] = set(attempts)
        while pending:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            winner = next((a for a in attempts if a.done() and not a.cancelled() and a.exception() is None), None)
            if winner is not None:
                return winner.result()
        raise attempts[0].exception() or RuntimeError("no TURN allocation")
    finally:
        for attempt in attempts:
            attempt.cancel()
            if attempt is not winner and attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                attempt.result()[1].transport.close()  # an allocation made too late: released


async def _one_relay(options: Any) -> Any:
    """aioice's relayed candidate from one TURN URL; a fault is logged (``_tell_turn_fault``)."""
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


UNKNOWN_ISSUER = (18, 19, 20, 21)
"""OpenSSL's verify codes for a certificate chain that ends at no CA the trust store holds
(self-signed, self-signed in the chain, issuer not found, the first one alone)."""


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
    if isinstance(error, ssl.SSLCertVerificationError):  # turns: checks the certificate as any TLS client does
        why = printable(str(error.verify_message or "certificate verify failed")[:100])
        if error.verify_code in UNKNOWN_ISSUER:
            why += "; for a private CA, set SSL_CERT_FILE to its certificate: see the README"
        return f"its TLS certificate is not trusted ({why})"
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
    hands out: see ``offered``). URLs, those of ``servers`` too, are checked when the settings
    are made (IceConfigError, one line). Every TURN URL is tried at once (``_relayed_candidate``); of the STUN URLs
    aiortc asks the first. ``relay_only`` allows relayed candidates only: the TURN path or none.
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
            for server in self.servers:  # made by hand (the API) they are unchecked yet
                ice_server(server.urls, server.username, server.credential)
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
        """Gather on these host addresses, and try every TURN URL, in the current task and
        those it starts (see ``use_host_addresses`` and ``_relayed_candidate``)."""
        use_host_addresses(self.host_addresses)
        _turn_choices.set(turn_choices(self.configuration().iceServers or []))


def _check_scheme(url: str, kind: str, schemes: tuple[str, ...]) -> None:
    """ValueError unless ``url`` is a usable ICE URL of one of ``schemes``."""
    if check_ice_url(url).partition(":")[0].lower() not in schemes:
        raise ValueError(f"{url!r} is given as a {kind} server: a {kind} URL starts with {' or '.join(s + ':' for s in schemes)}")


def turn_choices(servers: Sequence[RTCIceServer]) -> tuple[dict[str, Any], ...]:
    """Every TURN URL of ``servers``, in order, as aioice's ``relayed_candidate`` options
    (what aiortc's ``connection_kwargs`` makes of the first)."""
    choices = []
    for server in servers:
        for url in [server.urls] if isinstance(server.urls, str) else server.urls:
            parsed = parse_stun_turn_uri(url)
            if parsed["scheme"] in ("turn", "turns"):
                choices.append({"turn_server": (parsed["host"], parsed["port"]), "turn_ssl": parsed["scheme"] == "turns",
                                "turn_transport": parsed["transport"], "turn_username": server.username,
                                "turn_password": server.credential})
    return tuple(choices)
