"""ICE settings: which local addresses to offer, and which STUN/TURN servers to use.

aiortc asks ``aioice.ice.get_host_addresses`` for host candidates and leaves loopback out,
so a call between two processes on one machine with no network finds no path. Choosing the
addresses here is how ``--ice-host 127.0.0.1`` keeps a call on the machine.

aioice looks that function up in its module, for the whole process. So it is replaced, once,
by one that reads a context variable: each call sets it in its own task, and two rooms in one
process with different addresses keep their own.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from signaling.turn import IceServer, check_ice_url, ice_server

from .errors import PeerError

_chosen: ContextVar[Optional[tuple[str, ...]]] = ContextVar("peer_ice_host_addresses", default=None)
_aioice_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _chosen.get()
    if chosen is None:
        return _aioice_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


aioice.ice.get_host_addresses = _get_host_addresses


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
