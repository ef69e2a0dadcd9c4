"""Data channel: a file's transfer rate and a chat line's round trip, ours beside bare aiortc.

    python bench/transfer.py [--rounds 5] [--size 50M] [--quick]

Four child processes on 127.0.0.1, two of each kind, alive for the whole run; rounds alternate.
**Ours**: two peers joined with ``peer.join`` to our signaling server (in this process); the
sender's ``room.send_file`` of a file of random bytes, timed until it returns (the receiver has
written it to its downloads folder, checked its sha256 and confirmed), then this process checks
the saved file's sha256 itself. **Bare aiortc**: two ``RTCPeerConnection``s, SDP over the pipes,
the simplest correct transfer: a text header with the size, the file in 16 KiB messages paced
by ``bufferedAmount`` (pause above 1 MiB, resume on ``bufferedamountlow`` at 256 KiB), the
receiver writing each to its file and answering the sha256 when all bytes are in.

CPU per MB: the CPU time (user and system, from /proc) each process used during the transfer,
per megabyte: on a machine shared with other work, the cost that sets the rate when the CPU is
the limit, which the rate itself shows only through the noise.

Round trip: a line of chat sent, echoed by the other side, received (ours: ``send_text`` and
the room's events; bare: channel callbacks), ``ROUND_TRIPS`` times a round: median and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import harness  # noqa: E402

SCRIPT = Path(__file__).resolve()
ROOM = "bench-transfer"
SIZE = 50 * 1000 * 1000
QUICK_SIZE = 2 * 1000 * 1000
ROUND_TRIPS = 200
QUICK_ROUND_TRIPS = 20
BARE_CHUNK = 16 * 1024
BARE_HIGH = 1024 * 1024
BARE_LOW = 256 * 1024
TIMEOUT = 300.0


# Children: ours ------------------------------------------------------------------------

async def ours_child(link: harness.Link, options: argparse.Namespace, rest: list[str]) -> None:
    """One peer of ours: ``send`` files and chat lines on the parent's word, or (with
    ``--downloads``) take files and echo chat."""
    import peer
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--downloads")
    args = parser.parse_args(rest)
    receiving = args.downloads is not None
    async with peer.join(ROOM, server=args.url, name="receiver" if receiving else "sender",
                         ice_hosts=[harness.LOCAL], downloads=args.downloads) as room:
        await room.wait_for_peer(timeout=60)
        if receiving:
            await _ours_receive(room, link)
        else:
            await _ours_send(room, link)


async def _ours_receive(room: Any, link: harness.Link) -> None:
    import peer
    link.send("ready")
    async for event in room.events(history=False):
        if isinstance(event, peer.ChatMessage):
            room.send_text(event.text)
        elif isinstance(event, peer.FileReceived):
            link.send("received", path=str(event.path), sha256=event.sha256)
        elif isinstance(event, peer.FileFailed):
            link.send("error", error=f"{event.name}: {event.reason}")


async def _ours_send(room: Any, link: harness.Link) -> None:
    link.send("ready")
    while True:
        order = await link.receive()
        if order["do"] == "file":
            start = time.perf_counter()
            sha256 = await room.send_file(order["path"])
            link.send("sent", seconds=time.perf_counter() - start, sha256=sha256)
        elif order["do"] == "chat":
            times = []
            for number in range(order["count"]):
                text = f"ping {number}"
                start = time.perf_counter()
                room.send_text(text)
                await room.wait_for_message(lambda got, text=text: got == text)
                times.append(time.perf_counter() - start)
            link.send("chat", times=times)


# Children: bare aiortc -----------------------------------------------------------------

async def bare_sender(link: harness.Link, options: argparse.Namespace, rest: list[str]) -> None:
    """Bare aiortc offering a ``bulk`` and a ``chat`` channel, sending on the parent's word."""
    pc = harness.bare_connection()
    bulk = pc.createDataChannel("bulk")
    chat = pc.createDataChannel("chat")
    replies: asyncio.Queue = asyncio.Queue()
    bulk.on("message", replies.put_nowait)
    chat.on("message", replies.put_nowait)
    drained = asyncio.Event()
    bulk.bufferedAmountLowThreshold = BARE_LOW
    bulk.on("bufferedamountlow", drained.set)
    await harness.bare_offer(pc, link)
    while bulk.readyState != "open" or chat.readyState != "open":
        await asyncio.sleep(0.01)
    link.send("ready")
    while True:
        order = await link.receive()
        if order["do"] == "file":
            start = time.perf_counter()
            sha256 = await _bare_send_file(bulk, Path(order["path"]), drained)
            answer = await replies.get()
            link.send("sent", seconds=time.perf_counter() - start, sha256=sha256, answer=answer)
        elif order["do"] == "chat":
            times = []
            for number in range(order["count"]):
                start = time.perf_counter()
                chat.send(f"ping {number}")
                await replies.get()
                times.append(time.perf_counter() - start)
            link.send("chat", times=times)


async def _bare_send_file(channel: Any, path: Path, drained: asyncio.Event) -> str:
    digest = hashlib.sha256()
    channel.send(f"start {path.stat().st_size}")
    with open(path, "rb") as file:
        while chunk := file.read(BARE_CHUNK):
            while channel.bufferedAmount > BARE_HIGH:
                drained.clear()
                await drained.wait()
            channel.send(chunk)
            digest.update(chunk)
    return digest.hexdigest()


async def bare_receiver(link: harness.Link, options: argparse.Namespace, rest: list[str]) -> None:
    """Bare aiortc answering: echoes chat, writes what comes on ``bulk`` to ``--output``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    output = Path(parser.parse_args(rest).output)
    pc = harness.bare_connection()
    state: dict[str, Any] = {}

    def on_bulk(channel: Any, message: Any) -> None:
        if isinstance(message, str):
            state.update(left=int(message.split()[1]), file=open(output, "wb"), digest=hashlib.sha256())
        else:
            state["file"].write(message)
            state["digest"].update(message)
            state["left"] -= len(message)
        if state["left"] == 0:
            state["file"].close()
            channel.send(state["digest"].hexdigest())

    def on_datachannel(channel: Any) -> None:
        if channel.label == "chat":
            channel.on("message", channel.send)
        else:
            channel.on("message", lambda message: on_bulk(channel, message))

    pc.on("datachannel", on_datachannel)
    await harness.bare_answer(pc, link)
    link.send("ready")
    await link.receive()  # until the parent goes


# The parent -------------------------------------------------------------------------------

class Pair:
    """A sender and a receiver child; the receiver saves files under ``folder``."""

    def __init__(self, sender: harness.Child, receiver: harness.Child, folder: Path, bare: bool) -> None:
        self.sender, self.receiver, self.folder, self.bare = sender, receiver, folder, bare
        self.cpu = (0.0, 0.0)
        """CPU seconds the sender and the receiver used for the last file."""

    async def send_file(self, path: Path, sha256: str) -> float:
        """Seconds for ``path`` to arrive, after checking the copy saved is whole."""
        before = self.sender.usage().cpu_seconds, self.receiver.usage().cpu_seconds
        self.sender.send({"do": "file", "path": str(path)})
        sent = await self.sender.expect("sent", TIMEOUT)
        if self.bare:
            saved, confirmed = self.folder / "bare.bin", sent["answer"]
        else:
            received = await self.receiver.expect("received", TIMEOUT)
            saved, confirmed = Path(received["path"]), received["sha256"]
        self.cpu = (self.sender.usage().cpu_seconds - before[0], self.receiver.usage().cpu_seconds - before[1])
        actual = await asyncio.to_thread(_sha256, saved)
        saved.unlink()
        if not sent["sha256"] == confirmed == actual == sha256:
            raise RuntimeError(f"{'bare' if self.bare else 'ours'}: the file arrived damaged")
        return float(sent["seconds"])

    async def chat(self, count: int) -> list[float]:
        self.sender.send({"do": "chat", "count": count})
        return [t * 1000 for t in (await self.sender.expect("chat", TIMEOUT))["times"]]

    async def stop(self) -> None:
        await asyncio.gather(self.sender.stop(), self.receiver.stop())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def start_ours(url: str, folder: Path) -> Pair:
    receiver = await harness.Child.start(SCRIPT, "ours", "--url", url, "--downloads", str(folder))
    sender = await harness.Child.start(SCRIPT, "ours", "--url", url)
    await asyncio.gather(receiver.expect("ready"), sender.expect("ready"))
    return Pair(sender, receiver, folder, bare=False)


async def start_bare(folder: Path) -> Pair:
    sender = await harness.Child.start(SCRIPT, "bare-sender")
    receiver = await harness.Child.start(SCRIPT, "bare-receiver", "--output", str(folder / "bare.bin"))
    await harness.pass_descriptions(sender, receiver)
    await asyncio.gather(sender.expect("ready"), receiver.expect("ready"))
    return Pair(sender, receiver, folder, bare=True)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def measure(rounds: int, seconds: float, quick: bool, size: Optional[int] = None) -> list[harness.Row]:
    """The rows of this bench: file transfer rate, chat round trip median and p99 (``seconds``
    is unused: a round is one file and ROUND_TRIPS lines)."""
    size = size or (QUICK_SIZE if quick else SIZE)
    rounds = 1 if quick else rounds
    trips = QUICK_ROUND_TRIPS if quick else ROUND_TRIPS
    rate = harness.Row(f"data channel file transfer, {size / 1e6:g} MB", "MB/s", higher_is_better=True)
    sender_cpu = harness.Row("CPU per MB, sender", "ms")
    receiver_cpu = harness.Row("CPU per MB, receiver", "ms")
    median = harness.Row("chat round trip, median", "ms")
    worst = harness.Row("chat round trip, p99", "ms")
    signaling, url = await harness.server()
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        folder = Path(tmp)
        source = folder / "payload.bin"
        source.write_bytes(os.urandom(size))
        sha256 = _sha256(source)
        pairs: list[Pair] = []
        try:
            ours = await start_ours(url, folder / "ours")
            pairs.append(ours)
            bare = await start_bare(folder)
            pairs.append(bare)

            async def transfer(pair: Pair) -> float:
                rate = size / await pair.send_file(source, sha256) / 1e6
                for row, seconds in zip((sender_cpu, receiver_cpu), pair.cpu):
                    (row.bare if pair.bare else row.ours).append(seconds * 1000 / (size / 1e6))
                return rate

            await harness.alternate(rounds, lambda: transfer(ours), lambda: transfer(bare), rate)
            for _ in range(rounds):
                for pair, ours_side in ((ours, True), (bare, False)):
                    times = await pair.chat(trips)
                    (median.ours if ours_side else median.bare).append(statistics.median(times))
                    (worst.ours if ours_side else worst.bare).append(p99(times))
        finally:
            await asyncio.gather(*(pair.stop() for pair in pairs))
            await signaling.stop()
    return [rate, sender_cpu, receiver_cpu, median, worst]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.0, help="unused (a round is one file)")
    parser.add_argument("--size", default=None, help="file size, e.g. 50M (default 50M, 2M with --quick)")
    parser.add_argument("--quick", action="store_true", help="one round of a small file: seconds")
    args = parser.parse_args()
    from peer.transfer import parse_size
    size = parse_size(args.size) if args.size else None
    rows = asyncio.run(measure(args.rounds, args.seconds, args.quick, size))
    print(harness.format_table(rows))


if __name__ == "__main__":
    if not harness.run_child({"ours": ours_child, "bare-sender": bare_sender, "bare-receiver": bare_receiver}):
        main()
