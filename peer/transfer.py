"""Files over a data channel: flow control, progress, a sha256 check, no partial file left posing as whole.

Everything of one transfer travels on one channel (``files``), so metadata and chunks keep
their order: a JSON ``start``; the receiver answers ``accept`` (or ``failed``) once it has
decided to take the file; binary chunks; a JSON ``end`` with the sha256; the receiver answers
``received`` (or ``failed``) once the file is checked and in place.

Everything the other side sends is hostile until checked: each message is parsed into a typed
value (``peer.wire.parse_files``; the messages are defined there, this module does the I/O), a
file is taken only when the ``Downloads`` policy and quotas say so, no more bytes are written
than were announced, and each transfer writes into a temporary file of its own: the only path
it ever removes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import logging
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Union

from aiortc import RTCDataChannel

from signaling.protocol import Member

from . import sctp
from .errors import TransferError
from .wire import Accept, End, Failed, Received, Reply, Start, encode_files, is_count

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
"""The largest chunk sent: the 64 KiB message size every WebRTC stack accepts (RFC 8841 6.1
assumes it of a peer that announces none; aiortc and Chrome announce 256 KiB, Firefox 1 GB),
less where the other side announces less. Fewer, larger messages cost less per byte on both
sides (bench/transfer.py); larger ones would stall other channels' messages longer."""
READ_BLOCK = 1024 * 1024
"""What the sender reads (and hashes) at a time, on its thread."""
WRITE_BLOCK = 1024 * 1024
"""What the receiver gathers before handing it to its writer thread, which hashes and writes it:
one hand-over per chunk cost more on the event loop than the writing itself."""
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
CONFIRM_TIMEOUT = 30.0
ASK_TIMEOUT = 60.0
"""How long a receiver may take to decide on a file: time for a person to answer a question."""
ACCEPT_TIMEOUT = ASK_TIMEOUT + 15.0
"""How long a sender waits for that decision (a little longer, so the receiver's answer wins)."""
DEFAULT_MAX_PER_PEER = 2 * 10**9
DEFAULT_MAX_TOTAL = 4 * 10**9
BLOCK = 4096
"""The least a file costs on disk: what each file counts at least against the quotas, so that
a flood of empty files is bounded too."""
MAX_NAME_BYTES = 200
"""Room for ``.NAME.RANDOM.part`` and ``NAME (NN)`` within the 255 bytes file systems allow."""
MAX_NUMBERED = 1000
"""``NAME (2)`` up to ``NAME (1000)``; beyond that the file is refused rather than searched for."""

Progress = Callable[[int, int], None]


# File names

_UNSAFE = re.compile(r'[<>:"|?*]')
"""Not allowed in Windows names (``a:b`` would even write a hidden stream there)."""


def safe_name(name: str) -> str:
    """A plain file name to save under: no directories, no hidden name, no character of
    Unicode category C (controls such as terminal escapes, format characters such as
    right-to-left overrides, private-use and unassigned ones) nor line separators, at most
    MAX_NAME_BYTES of UTF-8."""
    visible = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in "\u2028\u2029")
    base = os.path.basename(_UNSAFE.sub("_", visible).replace("\\", "/")).strip(" .")
    if len(base.encode()) > MAX_NAME_BYTES:
        stem, suffix = os.path.splitext(base)
        if len(suffix.encode()) > 20:
            stem, suffix = base, ""
        stem = stem.encode()[:MAX_NAME_BYTES - len(suffix.encode())].decode("utf-8", "ignore")
        base = stem + suffix
    return base or "file"


# Sizes for people

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?)?B?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GB``, ``64KiB``, ``1000`` as bytes (K, M, G, T are powers of 1000,
    as in the sizes the peer prints; Ki, Mi, Gi, Ti powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 500M, 2G, 64KiB)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def human_size(size: int) -> str:
    """1.2 MB: powers of 1000, as the progress bar counts."""
    if size < 1000:
        return f"{size} bytes"
    value = size / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


# What a receiver takes

@dataclass(frozen=True)
class FileOffer:
    """A file someone wants to send: what an ``accept_files`` policy decides on. ``name`` is
    the one it would be saved under (made safe), ``size`` the most that will be written."""

    sender: Member
    name: str
    size: int


AcceptPolicy = Union[bool, Callable[[FileOffer], Union[bool, Awaitable[bool]]]]


class Downloads:
    """What a session does with files offered to it: where they go, which it takes (``accept``:
    True, False, or a function of the ``FileOffer``, maybe async), and how much in all. One
    object serves every call of a session, so the total quota counts them all."""

    def __init__(self, directory: Optional[Union[str, Path]] = None, accept: Optional[AcceptPolicy] = None, *,
                 max_per_peer: int = DEFAULT_MAX_PER_PEER, max_total: int = DEFAULT_MAX_TOTAL) -> None:
        if accept is None:
            accept = directory is not None
        if accept is not False and directory is None:
            raise ValueError("accepting files needs a downloads directory")
        if not is_count(max_per_peer) or not is_count(max_total):
            raise ValueError("download quotas are whole numbers of bytes")
        self.directory = Path(directory) if directory is not None else None
        self.accept = accept
        self.max_per_peer = max_per_peer
        self.max_total = max_total
        self.taken = 0
        """Bytes taken from everyone so far: files saved, and files on their way."""

    def over_quota(self, size: int, from_peer: int) -> Optional[str]:
        """Why ``size`` more bytes, from a peer that has had ``from_peer``, are too much; None if not."""
        cost = _cost(size)
        if cost > self.max_per_peer - from_peer:
            return (f"over the quota per peer ({human_size(self.max_per_peer)}, "
                    f"{human_size(max(0, self.max_per_peer - from_peer))} left)")
        if cost > self.max_total - self.taken:
            return (f"over the total quota ({human_size(self.max_total)}, "
                    f"{human_size(max(0, self.max_total - self.taken))} left)")
        return None

    async def decide(self, offer: FileOffer) -> bool:
        if isinstance(self.accept, bool):
            return self.accept
        answer = self.accept(offer)
        if inspect.isawaitable(answer):
            answer = await answer
        return bool(answer)


def _cost(size: int) -> int:
    return max(size, BLOCK)


# Sending

class FileSender:
    """Sends files one at a time on a channel, pausing while the channel's buffer is full."""

    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self._lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self._reply: Optional[asyncio.Future] = None
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("close", self._on_close)
        sctp.tune(channel.transport)  # the files channel is on every connection between peers of ours

    async def send(self, path: Path, progress: Optional[Progress] = None) -> str:
        """Send ``path`` once the receiver accepts it; return its sha256 once the receiver has
        confirmed it. TransferError when it refuses, fails or leaves."""
        async with self._lock:
            size = path.stat().st_size
            self._expect_reply()
            self._send(encode_files(Start(path.name, size)))
            answer = await self._answer(f"{path.name}: the receiver did not answer within {ACCEPT_TIMEOUT:g} s",
                                        ACCEPT_TIMEOUT)
            if not isinstance(answer, Accept):
                raise TransferError(f"{path.name}: the receiver refused it ({_reason(answer)})")
            self._expect_reply()
            sha256 = await self._stream(path, size, progress)
            self._send(encode_files(End(sha256)))
            answer = await self._answer(f"{path.name}: the receiver did not confirm within {CONFIRM_TIMEOUT:g} s",
                                        CONFIRM_TIMEOUT)
            if not isinstance(answer, Received) or answer.sha256 != sha256:
                raise TransferError(f"{path.name}: the receiver refused it ({_reason(answer, 'checksum mismatch')})")
            return sha256

    def on_reply(self, reply: Reply) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(reply)

    def _expect_reply(self) -> None:
        """From now on the receiver's next reply is kept (also one that comes during streaming:
        a ``failed`` there stops the transfer at once)."""
        self._reply = asyncio.get_running_loop().create_future()

    async def _answer(self, timeout_message: str, timeout: float) -> Reply:
        assert self._reply is not None  # _expect_reply() came first, under the lock
        try:
            reply = await asyncio.wait_for(self._reply, timeout)
        except asyncio.TimeoutError:
            raise TransferError(timeout_message) from None
        finally:
            self._reply = None
        if reply is None:
            raise TransferError("the peer left during the transfer")
        return reply

    async def _stream(self, path: Path, size: int, progress: Optional[Progress]) -> str:
        """Send the file's bytes in chunks of ``chunk_size``; return the sha256 of what was
        sent. Read and hashed on a thread."""
        loop = asyncio.get_running_loop()
        digest = hashlib.sha256()
        done = 0
        chunk_size = self.chunk_size()
        assert self._reply is not None  # _expect_reply() came first, under the lock
        with concurrent.futures.ThreadPoolExecutor(1) as reader, open(path, "rb") as file:
            while block := await loop.run_in_executor(reader, _read_hashed, file, digest, READ_BLOCK):
                for start in range(0, len(block), chunk_size):
                    await self._room_in_buffer()
                    if self._reply.done():
                        raise TransferError(f"{path.name}: the receiver gave up ({_reason(self._reply.result())})")
                    chunk = block[start:start + chunk_size]
                    self._send(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, size)
        return digest.hexdigest()

    def chunk_size(self) -> int:
        """CHUNK, or the largest message the other side announced (``a=max-message-size``) if
        smaller; aiortc refuses to send more than that (0 means no limit)."""
        announced = getattr(self.channel.transport, "_remote_max_message_size", None)
        if isinstance(announced, int) and 0 < announced < CHUNK:
            return announced
        return CHUNK

    def _send(self, data: Any) -> None:
        """Send ``data``; TransferError when the peer left, or when it announced an
        ``a=max-message-size`` too small for it (aiortc raises ValueError, which would end the
        sending to everyone after this receiver, and the CLI's sending task)."""
        if self.channel.readyState != "open":
            raise TransferError("the peer left during the transfer")
        try:
            self.channel.send(data)
        except ValueError as error:
            raise TransferError(f"the receiver takes no message this large ({error})") from None

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
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(None)  # the peer left


def _read_hashed(file: Any, digest: Any, size: int) -> bytes:
    """Up to ``size`` bytes of ``file``, added to ``digest``: on the reader thread."""
    block = file.read(size)
    digest.update(block)
    return block


def _reason(reply: Optional[Reply], otherwise: str = "no reason given") -> str:
    if reply is None:
        return "the peer left"
    return reply.reason if isinstance(reply, Failed) else otherwise


# Receiving

@dataclass
class _Incoming:
    """A transfer accepted and under way."""

    name: str
    size: int
    part: concurrent.futures.Future
    """Its ``_Part``, created on the writer thread."""
    done: int = 0
    pending: list[bytes] = field(default_factory=list)
    """Chunks not yet handed to the writer thread (less than WRITE_BLOCK in all)."""
    pending_bytes: int = 0

    def hand_over(self) -> list[bytes]:
        """The chunks gathered so far, to write; none are kept."""
        chunks, self.pending, self.pending_bytes = self.pending, [], 0
        return chunks


class FileReceiver:
    """Takes the files one peer sends, one at a time: asks ``downloads`` whether to, then writes
    each (on a thread) into a temporary file of its own, checked and renamed at the end."""

    def __init__(self, downloads: Downloads, sender: Callable[[], Member], reply: Callable[[Reply], None],
                 on_progress: Callable[[str, int, int], object], on_done: Callable[[Path, str], object],
                 on_failed: Callable[[str, str], object]) -> None:
        self.downloads = downloads
        self.taken = 0
        """Bytes taken from this peer (the per-peer quota)."""
        self._sender = sender
        self._reply = reply
        self._on_progress = on_progress
        self._on_done = on_done
        self._on_failed = on_failed
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="file-writer")
        self._deciding: Optional[asyncio.Task] = None
        self._incoming: Optional[_Incoming] = None

    def on_message(self, message: Union[Start, End, bytes]) -> None:
        """A message from the sender, checked by ``wire.parse_files``."""
        if isinstance(message, bytes):
            self._on_chunk(message)
        elif isinstance(message, Start):
            self.abort("a new transfer began")
            offer = FileOffer(self._sender(), safe_name(message.name), message.size)
            self._deciding = asyncio.ensure_future(self._decide(offer))
        elif isinstance(message, End):
            self._end(message.sha256)

    def abort(self, reason: str) -> None:
        """The transfer stopped half-way (the sender left): remove its temporary file."""
        if self._deciding is not None:
            self._deciding.cancel()
            self._deciding = None
        incoming = self._take()
        if incoming is not None:
            self._on_failed(incoming.name,
                            f"{reason} after {incoming.done} of {incoming.size} bytes; nothing was saved")

    def shutdown(self, reason: str) -> None:
        """Abort what is in flight; the writer thread finishes its queue, then ends."""
        self.abort(reason)
        self._writer.shutdown(wait=False)

    async def _decide(self, offer: FileOffer) -> None:
        if self.downloads.accept is False:
            self._reply(Failed("not accepting files"))
            return
        refusal = self.downloads.over_quota(offer.size, self.taken)
        if refusal is None:
            if not await self._ask(offer):
                self._reply(Failed("declined"))
                return
            refusal = self.downloads.over_quota(offer.size, self.taken)  # others may have come meanwhile
        if refusal is not None:
            self._reply(Failed(refusal))
            self._on_failed(offer.name, f"refused: {refusal}")
            return
        self._deciding = None
        self.taken += _cost(offer.size)
        self.downloads.taken += _cost(offer.size)
        assert self.downloads.directory is not None  # Downloads accepts nothing without one
        part = self._writer.submit(_Part, self.downloads.directory, offer.name)
        self._incoming = _Incoming(offer.name, offer.size, part)
        self._reply(Accept())

    async def _ask(self, offer: FileOffer) -> bool:
        """The policy's answer; no answer in time, or a policy that fails, is a no."""
        try:
            return await asyncio.wait_for(self.downloads.decide(offer), ASK_TIMEOUT)
        except asyncio.TimeoutError:
            logger.info("no decision on %s from %s within %g s: refused", offer.name, offer.sender.name, ASK_TIMEOUT)
        except Exception:
            logger.exception("the accept_files policy failed on %s from %s: refused", offer.name, offer.sender.name)
        return False

    def _on_chunk(self, chunk: bytes) -> None:
        incoming = self._incoming
        if incoming is None:
            logger.debug("a chunk with no transfer accepted: dropped")
            return
        if incoming.done + len(chunk) > incoming.size:
            self._fail(f"it sent more than the {incoming.size} bytes announced",
                       f"more than the {incoming.size} bytes announced")
            return
        incoming.done += len(chunk)
        incoming.pending.append(chunk)
        incoming.pending_bytes += len(chunk)
        if incoming.pending_bytes >= WRITE_BLOCK:
            self._writer.submit(_write, incoming.part, incoming.hand_over())
        self._on_progress(incoming.name, incoming.done, incoming.size)

    def _end(self, sha256: str) -> None:
        incoming = self._incoming
        if incoming is None:
            return
        if incoming.done != incoming.size:
            self._fail("the file arrived damaged (sha256 mismatch)", "checksum mismatch")
            return
        self._incoming = None
        finished = asyncio.wrap_future(self._writer.submit(_finish, incoming.part, incoming.hand_over(),
                                                           incoming.name, sha256))

        def done(future: asyncio.Future) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                self._release(incoming)
                if isinstance(error, _Damaged):
                    self._reply(Failed("checksum mismatch"))
                    self._on_failed(incoming.name, "the file arrived damaged (sha256 mismatch); nothing was saved")
                    return
                self._reply(Failed("could not save the file"))
                self._on_failed(incoming.name, f"could not save it: {error}")
                return
            self._reply(Received(sha256))
            self._on_done(future.result(), sha256)

        finished.add_done_callback(done)

    def _fail(self, reason: str, reply: str) -> None:
        """End the transfer under way: its file removed, the sender told, the app too."""
        incoming = self._take()
        assert incoming is not None  # called only with a transfer under way
        self._reply(Failed(reply))
        self._on_failed(incoming.name, f"{reason}; nothing was saved")

    def _take(self) -> Optional[_Incoming]:
        """The transfer under way, no longer: its temporary file goes, its bytes are not counted."""
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            self._writer.submit(_discard, incoming.part)
            self._release(incoming)
        return incoming

    def _release(self, incoming: _Incoming) -> None:
        self.taken -= _cost(incoming.size)
        self.downloads.taken -= _cost(incoming.size)


class _Part:
    """One transfer's own temporary file, created exclusively under a name nobody else has: the
    only path a transfer writes or removes. Used on the writer thread only."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        handle, path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
        self.path = Path(path)
        self.file = os.fdopen(handle, "wb")
        self.digest = hashlib.sha256()
        """Of every byte received, written or not."""
        self.error: Optional[OSError] = None
        """The first write that failed (a full disk): the file is then refused at the end."""

    def write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.digest.update(chunk)
        if self.error is None:
            try:
                self.file.writelines(chunks)
            except OSError as error:
                self.error = error

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

    def finish(self, chunks: list[bytes], name: str, sha256: str) -> Path:
        """Write the last ``chunks``, check the whole against ``sha256`` (``_Damaged`` if it
        differs), close and give the file its name; removed if any of that fails."""
        try:
            self.write(chunks)
            self.file.close()
            if self.digest.hexdigest() != sha256:
                raise _Damaged(sha256)
            if self.error is not None:
                raise self.error
            return _claim(self.path, name)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise


def _claim(part: Path, name: str) -> Path:
    """Give ``part`` the first free name of NAME, NAME (2), ...: never over a file, not even one
    another transfer puts there at the same moment (a hard link fails if the name exists)."""
    stem, suffix = os.path.splitext(name)
    for number in range(1, MAX_NUMBERED + 1):
        final = part.parent / (name if number == 1 else f"{stem} ({number}){suffix}")
        try:
            os.link(part, final)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (FAT, some shares): hold the name with an empty file
            try:
                os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            try:
                os.replace(part, final)
            except BaseException:
                final.unlink(missing_ok=True)  # the empty file was ours
                raise
            return final
        part.unlink()
        return final
    raise FileExistsError(f"{name} and {MAX_NUMBERED - 1} numbered copies exist already")


class _Damaged(Exception):
    """What arrived does not have the sha256 the sender announced."""


def _write(part: concurrent.futures.Future, chunks: list[bytes]) -> None:
    part.result().write(chunks)


def _discard(part: concurrent.futures.Future) -> None:
    if part.exception() is None:  # a temporary file that could not be made needs no removing
        part.result().discard()


def _finish(part: concurrent.futures.Future, chunks: list[bytes], name: str, sha256: str) -> Path:
    return part.result().finish(chunks, name, sha256)
