"""An ICE agent waits for the other side's checks before it gives up.

aioice 0.13 declares ICE failed the moment every pair on its own check list has failed, even
when the other agent's checks have not arrived yet. One pair
fails at once in a common case: a browser's host candidate on the machine's network address
(192.0.2.2, say) answers from another one (127.0.0.1: its socket is bound to every address
and the kernel picks the reply's source), and aioice fails that check for the mismatch. A
moment later the browser's own check arrives, aioice learns a peer-reflexive candidate and
its pair succeeds, DTLS completes and media flows, but aiortc has already turned the
connection to ``failed`` and never back: a call that works, which our side counts as lost.

So an agent whose every pair has failed waits up to ``PATIENCE`` seconds from the start of
its checks for one the other side starts (a triggered check puts a new pair on its list,
which then succeeds or fails on its own), and only then fails; either side may be the one
whose pairs fail first (a browser that offered controls; one that answered is controlled).
``peer.reach`` says "no network path" after as long. Written against aioice 0.13.0 (its
private ``_check_list``, ``_check_list_done`` and ``_check_list_maybe_fail``); with another
aioice whose parts differ, nothing is changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import aioice.ice
from aioice.ice import CandidatePair, Connection

from .reach import NO_PATH_AFTER

logger = logging.getLogger(__name__)

PATIENCE = NO_PATH_AFTER
"""Seconds from the start of its checks an agent waits for the other side's: as long as
``peer.reach`` waits before it says there is no path, so that neither gives up first."""


def _all_failed(connection: Connection) -> bool:
    pairs = connection._check_list
    return bool(pairs) and all(pair.state == CandidatePair.State.FAILED for pair in pairs)


def _patient(maybe_fail: Callable[[Connection], None]) -> Callable[[Connection], None]:
    def check_list_maybe_fail(self: Connection) -> None:
        started = getattr(self, "_peer_checks_started", None)
        if started is not None and not self._check_list_done and _all_failed(self):
            waited = time.monotonic() - started
            if waited < PATIENCE:
                asyncio.get_running_loop().call_later(PATIENCE - waited, check_list_maybe_fail, self)
                return
        maybe_fail(self)
    return check_list_maybe_fail


def _timed(connect: Callable[[Connection], Any]) -> Callable[[Connection], Any]:
    async def timed_connect(self: Connection) -> None:
        self._peer_checks_started = time.monotonic()  # type: ignore[attr-defined]
        await connect(self)
    return timed_connect


def _install() -> None:
    parts = ("_check_list", "_check_list_done", "_check_list_maybe_fail")
    probe = Connection(ice_controlling=False)
    if not all(hasattr(probe, part) for part in parts):
        logger.warning("aioice %s is not the one this fix was written for: an ICE agent "
                       "may give up before the other side's checks arrive", getattr(aioice, "__version__", "?"))
        return
    Connection._check_list_maybe_fail = _patient(Connection._check_list_maybe_fail)  # type: ignore[method-assign, assignment]
    Connection.connect = _timed(Connection.connect)  # type: ignore[method-assign, assignment]


_install()
