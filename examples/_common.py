"""What every example shares: its command line, running it, and one task per connected peer.

Nothing here is needed to write a bot; it only keeps the examples short.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Awaitable, Callable, Coroutine, Optional

import cv2  # noqa: F401  -- before av (pulled in by peer): see the OpenCV notes in docs/api.md
import numpy as np

import peer
from signaling.text import printable


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every example takes; add your own, then ``parse_args()``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--room", required=True, help="room to join")
    parser.add_argument("--server", default=peer.DEFAULT_SERVER, help="signaling server URL (default %(default)s)")
    parser.add_argument("--ice-host", action="append", default=[], metavar="ADDRESS",
                        help="local address ICE may use (repeatable); 127.0.0.1 keeps calls on this machine")
    parser.add_argument("--name", default=parser.prog.removesuffix(".py"), help="name the others see")
    return parser


def options(args: argparse.Namespace) -> dict[str, Any]:
    """``peer.join()`` keywords from the common flags."""
    return {"server": args.server, "name": args.name, "ice_hosts": args.ice_host}


def run(main: Callable[[argparse.Namespace], Coroutine[Any, Any, Optional[int]]], args: argparse.Namespace) -> None:
    """Run ``main(args)`` until it returns or Ctrl-C; errors for people as one line."""
    try:
        code = asyncio.run(main(args)) or 0
    except KeyboardInterrupt:
        code = 0
    except peer.PeerError as error:
        print(f"{args.name}: {error}", file=sys.stderr)
        code = error.exit_code
    sys.exit(code)


class PerPeer:
    """One task per member, cancelled (and awaited) when it goes or the block ends.

        async with PerPeer() as tasks:
            tasks.start(member, work(member))
            tasks.stop(member)
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task] = {}
        self._running: set[asyncio.Task] = set()

    def start(self, member: peer.Member, work: Awaitable[Any]) -> None:
        self.stop(member)
        task = self._tasks[member.id] = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def stop(self, member: peer.Member) -> None:
        task = self._tasks.pop(member.id, None)
        if task is not None:
            task.cancel()

    async def __aenter__(self) -> "PerPeer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        # Also wait for those stopped earlier and still finishing (closing a file, say).
        await asyncio.gather(*self._running, return_exceptions=True)


async def send_back(args: argparse.Namespace, transform: Callable[[np.ndarray], np.ndarray], doing: str,
                    on_chat: Optional[Callable[[peer.Room, peer.ChatMessage], None]] = None) -> None:
    """Send every connected peer its video back through ``transform``: the pattern of the
    echo and filter bots.

    ``transform`` runs on a worker thread (OpenCV releases the GIL), so the event loop keeps
    the network going meanwhile; ``latest=True`` makes a slow transform skip frames instead
    of falling behind. A room publishes one video track, so with more than one peer each sees
    all the processed pictures side by side.
    """
    source = peer.FrameSource(fps=args.fps, size=(320, 240))
    processed = {}  # member id -> its newest picture, processed

    async def process(room: peer.Room, member: peer.Member) -> None:
        try:
            async for picture in room.frames(member, latest=True):
                processed[member.id] = await asyncio.to_thread(transform, picture)
                source.push(mosaic(list(processed.values())))
        finally:
            processed.pop(member.id, None)

    async with peer.join(args.room, video=source, **options(args)) as room, PerPeer() as per_peer:
        print(f"{args.name}: {doing} in room {args.room}; Ctrl-C to stop", flush=True)
        async for event in room.events():
            if isinstance(event, peer.Connected):
                print(f"{doing} {printable(event.member.name)}", flush=True)
                per_peer.start(event.member, process(room, event.member))
            elif isinstance(event, (peer.CallEnded, peer.PeerLeft)):
                per_peer.stop(event.member)
            elif isinstance(event, peer.ChatMessage) and on_chat is not None:
                on_chat(room, event)


def mosaic(pictures: list[np.ndarray], height: int = 240) -> np.ndarray:
    """Pictures side by side at one height (one picture is returned as it is)."""
    if len(pictures) == 1:
        return pictures[0]
    return np.hstack([cv2.resize(p, (max(2, round(p.shape[1] * height / p.shape[0]) // 2 * 2), height))
                      for p in pictures])
