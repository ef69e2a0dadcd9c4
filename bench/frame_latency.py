"""Frame latency: a picture's way from the sender's hand to the receiver's, ours beside bare aiortc.

    python bench/frame_latency.py [--rounds 1] [--seconds 30] [--long 60] [--quick] [--plot docs/frame-latency.svg]
                                  [--only 640x480:vp8 ...]

Two processes on 127.0.0.1, one sending and one receiving video at 30 fps, at 640x480 and
1280x720, in VP8 and H.264. The sender draws each picture (a moving pattern, so that frames
take several packets as a camera's do), stamps its number into the top left
(``harness.stamp``) and notes the time (``harness.now()``, CLOCK_MONOTONIC, one clock for every
process of the machine) as it hands the picture to the stack; the receiver reads the number
back where the frame reaches the application, as a BGR numpy array, and notes the time. After
``WARM_UP`` seconds from the first frame, ``--seconds`` of frames are counted; both children
send their notes to this process, which pairs them by number: the delay of each frame received.

Ours: the bot API, ``peer.join`` in each child with our signaling server in this process; the
sender pushes pictures into a ``peer.FrameSource``, the receiver reads ``room.frames(member,
latest=False)`` (every frame, in order). The baseline: bare aiortc in two processes, SDP over
this process's pipes (``harness.bare_offer``/``bare_answer``): a ``VideoStreamTrack`` whose
``recv()`` paces at 30 fps with ``next_timestamp()`` and stamps the picture it returns, the
receiver ``recv()``ing the remote track in a loop. Both ask for the codec by putting it first in
the offer. Rounds alternate ours and bare.

Rows: median and p99 of each round, per size and codec; and "flat over 60 s": a ``--long``
second run at 640x480 VP8, the median of its first and of its last ``FLAT_WINDOW`` seconds.
``--plot PATH`` draws the distribution of every delay measured (ours beside bare, per size and
codec) with matplotlib (``pip install -e '.[bench]'``). ``--quick`` (CI's smoke test): one
second of 640x480 VP8 a side, the flat rows from that second.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional, Sequence

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import numpy as np  # noqa: E402

import harness  # noqa: E402
from harness import LOCAL, Child, Link, Row  # noqa: E402

SCRIPT = Path(__file__).resolve()
FPS = 30
CONFIGS = ((640, 480, "vp8"), (640, 480, "h264"), (1280, 720, "vp8"), (1280, 720, "h264"))
QUICK_CONFIGS = ((640, 480, "vp8"),)
WARM_UP = 2.0
"""Seconds from the first frame received before frames count: the first frames are a keyframe
and the encoder's start."""
LONG = 60.0
FLAT_WINDOW = 10.0
MIMES = {"vp8": "video/VP8", "h264": "video/H264"}
STAMPS = 1 << harness.BITS


@dataclass
class Run:
    """What one side measured in one round: each frame's delay (ms) and when it arrived (s)."""

    delays: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    sent: int = 0
    waits: list[float] = field(default_factory=list)
    """Ours only: how long each picture taken waited in FrameSource after its push (ms)."""

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.delays, q)) if self.delays else float("nan")

    def window(self, start: float, end: float) -> list[float]:
        """The delays of the frames that arrived from ``start`` to ``end`` seconds into the run."""
        if not self.arrivals:
            return []
        first = self.arrivals[0]
        return [d for d, t in zip(self.delays, self.arrivals) if start <= t - first < end]


# Pictures -------------------------------------------------------------------------------

_patterns: dict[tuple[int, int], np.ndarray] = {}


def picture(number: int, width: int, height: int) -> np.ndarray:
    """Picture ``number`` of a pattern that moves 8 pixels a frame, stamped with the number."""
    pattern = _patterns.get((width, height))
    if pattern is None:
        y, x = np.mgrid[0:height, 0:2 * width]
        rng = np.random.default_rng(1)
        pattern = (128 + 60 * np.sin(x / 23.0)[..., None] * np.cos(y / 17.0)[..., None] * np.array([1, 0.5, -1])
                   + rng.integers(-20, 20, (height, 2 * width, 3))).clip(0, 255).astype(np.uint8)
        _patterns[(width, height)] = pattern
    shift = number * 8 % width
    out = np.ascontiguousarray(pattern[:, shift:shift + width])
    harness.stamp(out, number % STAMPS)
    return out


async def stamped_frames(frames: AsyncIterator[np.ndarray], seconds: float, warm_up: float) -> list[list[float]]:
    """[stamp, time] of each frame that came in ``seconds`` after ``warm_up`` from the first."""
    notes: list[list[float]] = []
    start: Optional[float] = None
    async for bgr in frames:
        now = harness.now()
        if start is None:
            start = now
        if now - start >= warm_up + seconds:
            break
        if now - start >= warm_up:
            notes.append([harness.read_stamp(bgr), now])
    return notes


def options(rest: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--codec", choices=sorted(MIMES), required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warm-up", type=float, required=True)
    parser.add_argument("--server", default="")
    parser.add_argument("--room", default="")
    return parser.parse_args(rest)


# Ours: the bot API ----------------------------------------------------------------------

async def ours_send(link: Link, _: argparse.Namespace, rest: list[str]) -> None:
    import peer
    o = options(rest)
    sent: list[list[float]] = []
    taken: list[list[float]] = []

    class Noted(peer.FrameSource):
        """Notes when each picture is taken from it (by the relay to the connections' encoders,
        which keeps the newest frame for each): how long a pushed picture waited in FrameSource."""

        async def recv(self) -> Any:
            frame = await super().recv()
            if sent and (not taken or taken[-1][0] != sent[-1][0]):
                taken.append([sent[-1][0], harness.now()])
            return frame

    source = Noted(fps=FPS, size=(o.width, o.height))

    async def produce() -> None:
        start = harness.now()
        for number in range(1 << 30):
            await asyncio.sleep(max(0.0, start + number / FPS - harness.now()))
            bgr = picture(number, o.width, o.height)
            sent.append([number, harness.now()])
            source.push(bgr)

    async with peer.join(o.room, server=o.server, name="sender", video=source, codec=o.codec, ice_hosts=[LOCAL]):
        producing = asyncio.ensure_future(produce())
        await link.receive()  # stop
        producing.cancel()
        link.send("sent", notes=sent, taken=taken)


async def ours_receive(link: Link, _: argparse.Namespace, rest: list[str]) -> None:
    import peer
    o = options(rest)
    async with peer.join(o.room, server=o.server, name="receiver", codec=o.codec, ice_hosts=[LOCAL]) as room:
        member = await room.wait_for_peer(timeout=60)
        notes = await stamped_frames(room.frames(member, latest=False), o.seconds, o.warm_up)
        link.send("received", notes=notes)
        await link.receive()  # stop


# Bare aiortc ----------------------------------------------------------------------------

def stamping_track(width: int, height: int, sent: list[list[float]]) -> Any:
    """A VideoStreamTrack of stamped pictures at 30 fps (``next_timestamp`` paces it)."""
    import av
    from aiortc import VideoStreamTrack

    class Stamping(VideoStreamTrack):
        async def recv(self) -> av.VideoFrame:
            pts, time_base = await self.next_timestamp()
            number = len(sent)
            frame = av.VideoFrame.from_ndarray(picture(number, width, height), format="bgr24")
            frame.pts, frame.time_base = pts, time_base
            sent.append([number, harness.now()])
            return frame

    return Stamping()


async def bare_send(link: Link, _: argparse.Namespace, rest: list[str]) -> None:
    from aiortc import RTCRtpSender
    o = options(rest)
    sent: list[list[float]] = []
    pc = harness.bare_connection()
    transceiver = pc.addTransceiver(stamping_track(o.width, o.height, sent), direction="sendonly")
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences(sorted(codecs, key=lambda c: c.mimeType != MIMES[o.codec]))
    await harness.bare_offer(pc, link)
    await link.receive()  # stop
    link.send("sent", notes=sent)
    await pc.close()


async def bare_receive(link: Link, _: argparse.Namespace, rest: list[str]) -> None:
    o = options(rest)
    pc = harness.bare_connection()
    track: asyncio.Future = asyncio.get_running_loop().create_future()
    pc.on("track", lambda t: t.kind == "video" and not track.done() and track.set_result(t))
    await harness.bare_answer(pc, link)
    remote = await asyncio.wait_for(track, 60)

    async def frames() -> AsyncIterator[np.ndarray]:
        while True:
            yield (await remote.recv()).to_ndarray(format="bgr24")

    link.send("received", notes=await stamped_frames(frames(), o.seconds, o.warm_up))
    await link.receive()  # stop
    await pc.close()


# The parent -----------------------------------------------------------------------------

def pair(sent: list[list[float]], received: list[list[float]]) -> Run:
    """Each frame received with the latest frame sent before it under the same stamp."""
    by_stamp: dict[int, list[float]] = {}
    for number, at in sent:
        by_stamp.setdefault(int(number) % STAMPS, []).append(at)
    run = Run(sent=len(sent))
    for stamp, arrived in received:
        times = [at for at in by_stamp.get(int(stamp), []) if at <= arrived]
        if times:
            run.delays.append((arrived - max(times)) * 1000)
            run.arrivals.append(arrived)
    return run


async def one_round(ours: bool, width: int, height: int, codec: str, seconds: float, warm_up: float,
                    server: str, room: str) -> Run:
    """One call of ``seconds`` (after ``warm_up``): the receiver's frames paired with the sender's."""
    args = ["--width", str(width), "--height", str(height), "--codec", codec, "--seconds", str(seconds),
            "--warm-up", str(warm_up), "--server", server, "--room", room]
    side = "ours" if ours else "bare"
    receiver, sender = await asyncio.gather(Child.start(SCRIPT, f"{side}-receive", *args),
                                            Child.start(SCRIPT, f"{side}-send", *args))
    try:
        if not ours:
            await harness.pass_descriptions(sender, receiver)
        received = await receiver.expect("received", timeout=warm_up + seconds + 60)
        sender.send({"kind": "stop"})
        sent = await sender.expect("sent")
        receiver.send({"kind": "stop"})
        run = pair(sent["notes"], received["notes"])
        pushed = {int(number): at for number, at in sent["notes"]}
        run.waits = [(at - pushed[int(number)]) * 1000 for number, at in sent.get("taken", ())]
        return run
    finally:
        await asyncio.gather(sender.stop(), receiver.stop())


@dataclass
class Result:
    rows: list[Row]
    runs: dict[str, dict[str, list[Run]]]
    """Per "WxH CODEC": the runs of "ours" and of "bare"."""


async def collect(rounds: int, seconds: float, long: float, quick: bool,
                  configs: Sequence[tuple[int, int, str]] = ()) -> Result:
    """Every round of every size and codec (``configs``, or all), then the long run; rows and the runs behind them."""
    warm_up = 0.5 if quick else WARM_UP
    signaling, url = await harness.server()
    result = Result([], {})
    try:
        count = 0

        async def both(width: int, height: int, codec: str, span: float) -> tuple[Run, Run]:
            nonlocal count
            count += 1
            ours = await one_round(True, width, height, codec, span, warm_up, url, f"frame-latency-{count}")
            bare = await one_round(False, width, height, codec, span, warm_up, url, "")
            for side, run in (("ours", ours), ("bare", bare)):
                waits = f" (held in FrameSource: median {np.median(run.waits):.1f} ms, p99 " \
                    f"{np.percentile(run.waits, 99):.1f})" if run.waits else ""
                print(f"{width}x{height} {codec} {side}: {len(run.delays)} of {run.sent} frames, median "
                      f"{run.percentile(50):.1f} ms, p99 {run.percentile(99):.1f} ms{waits}", file=sys.stderr)
            return ours, bare

        flat: list[tuple[Run, Run]] = []
        for width, height, codec in configs or (QUICK_CONFIGS if quick else CONFIGS):
            name = f"{width}x{height} {codec.upper().replace('H264', 'H.264')}"
            median, p99 = Row(f"frame latency {name}, median", "ms"), Row(f"frame latency {name}, p99", "ms")
            runs = result.runs.setdefault(name, {"ours": [], "bare": []})
            for _ in range(rounds):
                ours, bare = await both(width, height, codec, seconds)
                runs["ours"].append(ours), runs["bare"].append(bare)
                median.ours.append(ours.percentile(50)), median.bare.append(bare.percentile(50))
                p99.ours.append(ours.percentile(99)), p99.bare.append(bare.percentile(99))
                if quick and (width, codec) == (640, "vp8"):
                    flat.append((ours, bare))
            result.rows += [median, p99]
        if not quick and long > 0:
            flat.append(await both(640, 480, "vp8", long))
        result.rows += flat_rows(flat, long if not quick else seconds)
    finally:
        await signaling.stop()
    return result


def flat_rows(runs: Sequence[tuple[Run, Run]], span: float) -> list[Row]:
    """The median of the first and of the last FLAT_WINDOW seconds (a third of shorter runs)."""
    window = min(FLAT_WINDOW, span / 3)
    first = Row(f"640x480 VP8 over {span:g} s: median of the first {window:.2g} s", "ms")
    last = Row(f"640x480 VP8 over {span:g} s: median of the last {window:.2g} s", "ms")
    for ours, bare in runs:
        for row, start in ((first, 0.0), (last, span - window)):
            row.ours.append(Row.median(ours.window(start, start + window)))
            row.bare.append(Row.median(bare.window(start, start + window)))
    return [first, last]


async def measure(rounds: int, seconds: float, quick: bool) -> list[Row]:
    """The suite's entry (bench/run.py): the rows, with the long run of LONG seconds."""
    return (await collect(rounds, 1.0 if quick else seconds, LONG, quick)).rows


def plot(result: Result, path: Path) -> None:
    """Each size and codec's distribution of delays, ours beside bare (SVG, or PNG by the name)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.runs)
    columns = 2 if len(names) > 1 else 1
    lines = -(-len(names) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(10, 3.2 * lines + 0.6), squeeze=False)
    for ax, name in zip(axes.flat, names):
        sides = {side: [d for run in runs for d in run.delays] for side, runs in result.runs[name].items()}
        top = max((np.percentile(v, 99.5) for v in sides.values() if v), default=100)
        bins = np.linspace(0, top * 1.05, 60)
        for side, label, colour in (("ours", "ours", "tab:blue"), ("bare", "bare aiortc", "tab:orange")):
            values = sides[side]
            if values:
                ax.hist(values, bins=bins, histtype="stepfilled", alpha=0.45, color=colour,
                        label=f"{label}: median {np.median(values):.1f}, p99 {np.percentile(values, 99):.1f} ms")
        ax.set_title(f"{name}, 30 fps")
        ax.set_xlabel("sender's hand to receiver's hand, ms")
        ax.set_ylabel("frames")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    figure.suptitle("Frame latency, two processes on 127.0.0.1 (bench/frame_latency.py)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)  # the format from the name: .svg for the docs


def config(text: str) -> tuple[int, int, str]:
    """``640x480:vp8`` as (640, 480, "vp8")."""
    size, _, codec = text.partition(":")
    width, _, height = size.partition("x")
    if codec not in MIMES or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"not WxH:CODEC (codec one of {', '.join(MIMES)}): {text!r}")
    return int(width), int(height), codec


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--long", type=float, default=LONG, help="seconds of the flat-over-time run (0: none)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--plot", type=Path, help="save the distribution of delays here (SVG)")
    parser.add_argument("--only", action="append", type=config, default=[], metavar="WxH:CODEC",
                        help="measure this size and codec only (640x480:vp8; may be repeated)")
    args = parser.parse_args()
    result = await collect(args.rounds, 1.0 if args.quick else args.seconds, args.long, args.quick, args.only)
    print(harness.format_table(result.rows))
    if args.plot:
        plot(result, args.plot)


if not harness.run_child({"ours-send": ours_send, "ours-receive": ours_receive,
                          "bare-send": bare_send, "bare-receive": bare_receive}) and __name__ == "__main__":
    asyncio.run(main())
