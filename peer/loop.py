"""The event loop a peer runs on: uvloop where it is installed, asyncio's own otherwise.

A data channel's speed is Python work per packet on the event loop (``peer.sctp``): uvloop's
loop (libuv, in C) runs that work's timers, callbacks and UDP sends for less, measured by
bench/transfer.py at some 15 % less CPU per megabyte on each side. The peer's CLI runs on it;
a program using the API gets it with ``peer.run(main())`` in place of ``asyncio.run(main())``
(or with ``asyncio.run(main(), loop_factory=peer.new_event_loop)`` on Python 3.12+). uvloop has
no Windows build: there, and wherever it is missing, both fall back to asyncio's loop.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop, or asyncio's where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``new_event_loop`` makes (on Python 3.10, which has no
    ``asyncio.Runner``, asyncio's loop)."""
    if sys.version_info < (3, 11):
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
