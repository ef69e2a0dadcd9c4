"""A server node among several on one Redis: the relaying between nodes, and the node's duties.

Events go between nodes through python-socketio's own ``AsyncRedisManager`` (Redis
pub/sub): an emit to members (the relay names them, never rooms) reaches them on any node.
``RedisManager`` keeps our one-process fast path (``signaling.fastpath.DirectManager``) for
the delivery on each node, sends an event for one member of this node without a trip
through Redis, and changes the library's reconnecting: it retried after 1, 2, 4... up to
60 s, so a node whose Redis came back after a minute stayed deaf to the others for another.

``Node`` is what a node owes the others and itself, once a second: renew its liveness key,
sweep the members of dead nodes out of their rooms (telling the rooms), and notice Redis
going (joins are refused: ``RedisStore.healthy``) and coming back (its members are put
back, then joins are taken again). The room state itself is ``signaling.redis_store``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import socketio

from .fastpath import DirectManager
from .protocol import Member
from .redis_store import NODE_TTL, RENEW_EVERY, RedisStore, connect
from .store import StoreUnavailable, redacted

logger = logging.getLogger("signaling")

CHANNEL = "signaling"
"""The Redis pub/sub channel the nodes' events go through."""
RESUBSCRIBE_EVERY = 0.5
"""Seconds between tries to subscribe again while Redis is gone."""


class RedisManager(socketio.AsyncRedisManager, DirectManager):
    """python-socketio's Redis client manager, delivering on this node as ``DirectManager``
    does. ``listening``: subscribed to the channel now (events of other nodes reach ours)."""

    connected: bool
    """The library's: a Redis client is made (not whether Redis answers)."""

    def __init__(self, url: str) -> None:
        super().__init__(url=url, channel=CHANNEL)
        self.listening = False

    async def emit(self, event: str, data: Any, namespace: Optional[str] = None, room: Optional[Any] = None,
                   skip_sid: Any = None, callback: Any = None, to: Optional[Any] = None, **kwargs: Any) -> None:
        target = to or room
        members = [target] if isinstance(target, str) else target or []
        if callback is None and members and all(self.is_connected(sid, namespace or "/") for sid in members):
            # members of this node (the relay names members, never rooms): nobody else needs it
            await DirectManager.emit(self, event, data, namespace or "/", room=target, skip_sid=skip_sid)
            return
        await super().emit(event, data, namespace=namespace or "/", room=room, skip_sid=skip_sid,
                           callback=callback, to=to, **kwargs)

    def _redis_connect(self) -> None:
        """The library's, with our clients (``redis_store.connect``): publishing is a command
        like any other, the subscription waits."""
        self.redis = connect(self.redis_url)
        self.pubsub = connect(self.redis_url, subscriber=True).pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _publish(self, data: Any) -> Any:
        """Once: while Redis is gone the node says so (``Node``), not a line per event."""
        try:
            if not self.connected:
                self._redis_connect()
            return await self.redis.publish(self.channel, self.json.dumps(data))
        except Exception as error:
            self.connected = False
            logger.debug("could not publish %s to Redis: %s", data.get("event"), error)

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                self.listening = True
                async for message in self._messages():
                    yield message
            except Exception as error:
                logger.debug("not subscribed to Redis: %s", error)
            self.listening = False
            await asyncio.sleep(RESUBSCRIBE_EVERY)

    async def _messages(self) -> AsyncIterator[dict[str, Any]]:
        """The subscription's messages (and the answers to our PINGs, which the library's
        ``_listen`` passes over). A subscriber only reads: a connection whose path died with
        no reset (a NAT entry dropped) would wait for ever, the node deaf to the others and
        healthy by every other sign. So each second of quiet sends a PING, and a connection
        silent for ``NODE_TTL`` seconds raises: the node subscribes again, on a new one."""
        heard = time.monotonic()
        while True:
            message = await self.pubsub.get_message(timeout=RENEW_EVERY)
            if message is not None:
                heard = time.monotonic()
                if isinstance(message.get("data"), bytes):  # our JSON module (``FastJSON``) reads text
                    message["data"] = message["data"].decode("utf-8", "replace")
                yield message
            elif time.monotonic() - heard > NODE_TTL:
                raise ConnectionError("the subscription to the nodes' events went silent")
            else:
                await self.pubsub.ping()


class Node:
    """One node's duties (see the module). ``departed`` tells the rooms of members taken
    out of them (by a sweep, or found gone after an outage); ``drop`` disconnects members
    that could not be put back into their rooms (they filled meanwhile: they rejoin)."""

    def __init__(self, store: RedisStore, manager: RedisManager,
                 departed: Callable[[list[tuple[str, Member]]], Awaitable[None]],
                 drop: Callable[[list[str]], Awaitable[None]]) -> None:
        self.store = store
        self.manager = manager
        self._departed = departed
        self._drop = drop
        self._task: Optional[asyncio.Task] = None
        self._up_since = 0.0
        self._said_lost = False
        self._emptied = False
        """Redis lost its data since our last restore: kept until a restore has used the news
        (the turn that heard it may fail before, its subscription not back yet)."""

    async def start(self) -> None:
        """Check Redis (``StoreUnavailable`` when it does not answer), then serve."""
        await self.store.ping()
        await self.store.renew()
        self.store.healthy = True
        self._up_since = time.monotonic()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, within: float) -> None:
        """Stop serving; the other nodes need not wait for our key to expire. Unless Redis
        does not answer within ``within`` seconds (a stop keeps its time, whatever Redis
        does): then they sweep our members, as a dead node's."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            await asyncio.wait_for(self.store.retire(), within)
        except (StoreUnavailable, asyncio.TimeoutError):
            pass
        await self.store.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                await self._serve_once()
            except StoreUnavailable as error:
                self._lost(error.cause)
            except Exception:  # one bad turn must not end the node's duties
                logger.exception("node upkeep failed")

    async def _serve_once(self) -> None:
        was_healthy = self.store.healthy
        self._emptied |= not await self.store.renew()
        if not self.manager.listening:
            # Events between nodes do not flow (yet): joins stay refused until they do.
            self.store.healthy = False
            raise StoreUnavailable("not subscribed to the nodes' events")
        if not was_healthy or self._emptied or self.store.lapsed:
            emptied = self._emptied
            gone, lost = await self.store.restore(emptied=emptied)
            self._emptied = False
            # After Redis lost its data: joins one turn later, once every node has put its
            # members back (a seat taken before could be one of theirs).
            self.store.healthy = not emptied
            self._up_since = time.monotonic()
            if self._said_lost and self.store.healthy:
                logger.info("Redis at %s is back: joins accepted again", redacted(self.store.url))
                self._said_lost = False
            await self._departed(gone)
            await self._drop(lost)
        elif time.monotonic() - self._up_since >= NODE_TTL:
            # Only after every node had the time to renew its key since we, or Redis, came up.
            await self._departed(await self.store.sweep())

    def _lost(self, cause: str) -> None:
        """Said once an outage (every turn of it fails)."""
        if not self._said_lost:
            logger.warning("lost Redis at %s: new joins refused until it is back (%s)", redacted(self.store.url), cause)
            self._said_lost = True
