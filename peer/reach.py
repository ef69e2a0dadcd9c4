"""Whether a negotiation can still find a network path, from a snapshot of its ICE checks.

Sans-I/O: ``peer.aiortc_fixes.ice_checks`` reads the snapshot from aioice, ``peer.connection``
takes one a few times a second and asks ``verdict``. aioice itself gives up only when every
check has failed, and a check fails after its seventh STUN transmission goes unanswered: 63.5 s
(its retransmission constants are module globals, shared by TURN allocation and every check of
the process, so they are left alone). A working path answers the first check within a round
trip; with 100 ms each way and 5 % loss each way, one of the first four transmissions (sent
within 3.5 s) is answered but once in ten thousand. So ``NO_PATH_AFTER`` seconds of checks
with none answered is no path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from .events import CANDIDATE_TYPES, NoPath

NO_PATH_AFTER = 5.0
"""Seconds of ICE checks without one answered (counted since the last new pair) that mean no path."""


@dataclass(frozen=True)
class IceChecks:
    """What aioice's check list says of one connection at one moment."""

    started: bool
    """The checks have begun (aioice's ``connect()``: both descriptions are in)."""
    pairs: int
    succeeded: int
    """Pairs that answered (or were nominated): a path exists."""
    ours: tuple[str, ...]
    """Our candidates' types (``candidate_types``)."""
    theirs: tuple[str, ...]


def candidate_types(types: Iterable[str]) -> tuple[str, ...]:
    """The distinct candidate types among ``types``, host first, relay last."""
    present = set(types)
    order = list(CANDIDATE_TYPES)
    return tuple(sorted(present, key=lambda kind: order.index(kind) if kind in order else len(order)))


def verdict(checks: Optional[IceChecks], waited: float, patience: float = NO_PATH_AFTER) -> Optional[NoPath]:
    """``NoPath`` when ``checks`` show there is none: checks began, and none answered in
    ``waited`` seconds of checking (``patience`` or more). Every pair failed waits too: the other
    side's checks may yet come (``peer.ice_checks``); so does no pair at all: a browser trickles
    its candidates after its description. None while a path may still turn up, or once one has."""
    if checks is None or not checks.started or checks.succeeded:
        return None
    if waited < patience:  # also when every pair failed: the other side's checks may yet come
        return None
    return NoPath(ours=checks.ours, theirs=checks.theirs, pairs=checks.pairs)
