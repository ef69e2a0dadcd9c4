"""Files over a data channel: flow control, progress, a sha256 check, no partial file left posing as whole.

Everything of one transfer travels on one channel (``files``), so metadata and chunks keep
their order: a JSON ``start``, binary chunks, a JSON ``end`` with the sha256; the receiver
answers ``received`` (or ``failed``) once the file is checked and in place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

from aiortc import RTCDataChannel

from .errors import TransferError

logger = logging.getLogger(__name__)

CHUNK = 16 * 1024
"""Below the 64 KiB message size every WebRTC stack accepts."""
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
CONFIRM_TIMEOUT = 30.0

Progress = Callable[[int, int], None]


class FileSender:
    """Sends files one at a time on a channel, pausing while the channel's buffer is full."""

    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self._lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self._confirmation: Optional[asyncio.Future] = None
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("close", self._on_close)

    async def send(self, path: Path, progress: Optional[Progress] = None) -> str:
        """Send ``path``; return its sha256 once the receiver has confirmed it."""
        async with self._lock:
            size = path.stat().st_size
            loop = asyncio.get_running_loop()
            self._confirmation = loop.create_future()
            self._send(json.dumps({"type": "start", "name": path.name, "size": size}))
            digest = hashlib.sha256()
            done = 0
            with concurrent.futures.ThreadPoolExecutor(1) as reader, open(path, "rb") as file:
                while block := await loop.run_in_executor(reader, file.read, 64 * CHUNK):
                    for start in range(0, len(block), CHUNK):
                        await self._room_in_buffer()
                        chunk = block[start:start + CHUNK]
                        self._send(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, size)
            sha256 = digest.hexdigest()
            self._send(json.dumps({"type": "end", "sha256": sha256}))
            try:
                reply = await asyncio.wait_for(self._confirmation, CONFIRM_TIMEOUT)
            except asyncio.TimeoutError:
                raise TransferError(f"{path.name}: the receiver did not confirm within {CONFIRM_TIMEOUT:g} s") from None
            if reply.get("type") != "received" or reply.get("sha256") != sha256:
                raise TransferError(f"{path.name}: the receiver refused it ({reply.get('reason', 'checksum mismatch')})")
            return sha256

    def on_reply(self, reply: dict[str, Any]) -> None:
        if self._confirmation is not None and not self._confirmation.done():
            self._confirmation.set_result(reply)

    def _send(self, data: Any) -> None:
        if self.channel.readyState != "open":
            raise TransferError("the peer left during the transfer")
        self.channel.send(data)

    async def _room_in_buffer(self) -> None:
        while self.channel.bufferedAmount > HIGH_WATER:
            self._drained.clear()
            if self.channel.readyState != "open":
                raise TransferError("the peer left during the transfer")
            try:
                await asyncio.wait_for(self._drained.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def _on_close(self) -> None:
        self._drained.set()
        if self._confirmation is not None and not self._confirmation.done():
            self._confirmation.set_exception(TransferError("the peer left during the transfer"))


class FileReceiver:
    """Writes incoming files into ``directory`` on a thread, as ``NAME.part`` until checked."""

    def __init__(self, directory: Path, reply: Callable[[dict[str, Any]], None],
                 on_progress: Callable[[str, int, int], None], on_done: Callable[[Path, str], None],
                 on_failed: Callable[[str, str], None]) -> None:
        self.directory = directory
        self._reply = reply
        self._on_progress = on_progress
        self._on_done = on_done
        self._on_failed = on_failed
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="file-writer")
        self._file: Any = None
        self._part: Optional[Path] = None
        self._name = ""
        self._size = 0
        self._done = 0
        self._digest = hashlib.sha256()

    def on_message(self, message: Any) -> None:
        if isinstance(message, bytes):
            self._on_chunk(message)
            return
        try:
            header = json.loads(message)
        except ValueError:
            return
        kind = header.get("type")
        if kind == "start":
            self._start(str(header.get("name", "file")), int(header.get("size", 0)))
        elif kind == "end":
            self._end(str(header.get("sha256", "")))

    def abort(self, reason: str) -> None:
        """The transfer stopped half-way (the sender left): remove the partial file."""
        if self._part is None:
            return
        name, part, file = self._name, self._part, self._file
        self._part = self._file = None
        self._writer.submit(_discard, file, part)
        self._on_failed(name, f"{reason} after {self._done} of {self._size} bytes; nothing was saved")

    def shutdown(self, reason: str) -> None:
        """Abort what is in flight; the writer thread finishes its queue, then ends."""
        self.abort(reason)
        self._writer.shutdown(wait=False)

    def _start(self, name: str, size: int) -> None:
        self.abort("a new transfer began")
        self._name = _safe_name(name)
        self._size, self._done = size, 0
        self._digest = hashlib.sha256()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._part = self.directory / f".{self._name}.part"
        self._file = self._writer.submit(open, self._part, "wb")  # a future: the loop never waits on disk

    def _on_chunk(self, chunk: bytes) -> None:
        if self._part is None:
            return
        self._digest.update(chunk)
        self._done += len(chunk)
        self._writer.submit(_write, self._file, chunk)
        self._on_progress(self._name, self._done, self._size)

    def _end(self, sha256: str) -> None:
        if self._part is None:
            return
        name, part, file = self._name, self._part, self._file
        self._part = self._file = None
        actual = self._digest.hexdigest()
        if actual != sha256 or self._done != self._size:
            self._writer.submit(_discard, file, part)
            self._reply({"type": "failed", "reason": "checksum mismatch"})
            self._on_failed(name, "the file arrived damaged (sha256 mismatch); nothing was saved")
            return
        finished = asyncio.wrap_future(self._writer.submit(_finish, file, part, self.directory, name))

        def done(future: asyncio.Future) -> None:
            if future.exception() is not None:
                self._reply({"type": "failed", "reason": "could not save the file"})
                self._on_failed(name, f"could not save it: {future.exception()}")
                return
            self._reply({"type": "received", "sha256": actual})
            self._on_done(future.result(), actual)

        finished.add_done_callback(done)


def _safe_name(name: str) -> str:
    """A plain file name: no directories, no hidden or empty names."""
    base = os.path.basename(name.replace("\\", "/")).lstrip(".").strip()
    return base[:200] or "file"


def _write(file: concurrent.futures.Future, chunk: bytes) -> None:
    file.result().write(chunk)


def _discard(file: concurrent.futures.Future, part: Path) -> None:
    file.result().close()
    part.unlink(missing_ok=True)


def _finish(file: concurrent.futures.Future, part: Path, directory: Path, name: str) -> Path:
    """Close and move into place under a name that overwrites nothing."""
    file.result().close()
    stem, suffix = os.path.splitext(name)
    final, number = directory / name, 1
    while final.exists():
        number += 1
        final = directory / f"{stem} ({number}){suffix}"
    part.rename(final)
    return final
