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
from dataclasses import dataclass
from typing import Optional, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

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


@dataclass(frozen=True)
class IceSettings:
    """What a peer tells ICE. With no STUN given none is used: aiortc's default public
    STUN server costs 10 s per negotiation where it cannot be reached."""

    host_addresses: tuple[str, ...] = ()
    stun: tuple[str, ...] = ()
    turn: tuple[str, ...] = ()
    turn_user: Optional[str] = None
    turn_password: Optional[str] = None
    relay_only: bool = False

    def configuration(self) -> RTCConfiguration:
        servers = [RTCIceServer(urls=url) for url in self.stun]
        servers += [RTCIceServer(urls=url, username=self.turn_user, credential=self.turn_password) for url in self.turn]
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL)

    def apply(self) -> None:
        """Gather on these host addresses in the current task (see ``use_host_addresses``)."""
        use_host_addresses(self.host_addresses)
