"""Mouth-to-ear delay of a call, microphone to speaker, ours beside bare aiortc.

    python bench/latency.py [--seconds 30] [--rounds 2] [--long 180]

Starts a PulseAudio of its own (tests/soundserver.py, PROBE_CONFIG; Debian's ``pulseaudio`` and
``pulseaudio-utils`` must be installed) whose ``mic`` and ``speaker`` sinks are the left and
right channel of one stereo null sink, ``probe``. Clicks (10 ms bursts of 1 to 4.5 kHz, every 500 ms) are played
into ``mic``; a peer captures them from ``mic.monitor``, the default microphone, and sends them
through a call to a peer playing on ``speaker``, the default output. ``probe.monitor`` then holds
in one recording, on one clock, each click as it entered the microphone (left) and as the
speaker played it (right): the gap between them is the delay a listener would hear.

Ours: two ``python -m peer`` processes and our signaling server on 127.0.0.1. The baseline: two
processes of bare aiortc exchanging SDP through this one's pipes, capturing and playing with
miniaudio as plainly as can be (PyAV cannot reach PulseAudio here): every captured block is
sent as it comes, and every frame received is appended to one FIFO the device plays from,
silence when it is empty. Rounds alternate, so machine noise hits both alike.

Before the rounds, a calibration: with no call, PulseAudio's own loopback module takes
``mic.monitor`` straight to ``speaker`` asking for CALIBRATION_MS; what the probe measures of
it says how far the measure itself can be trusted.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import signal
import statistics
import sys
import threading
from pathlib import Path
from typing import Any, Generator, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import av  # noqa: E402
import miniaudio  # noqa: E402
import numpy as np  # noqa: E402
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from peer.ice import use_host_addresses  # noqa: E402
from signaling import SignalingServer  # noqa: E402
from soundserver import MIC, PROBE, PROBE_CONFIG, RATE, SPEAKER, SoundServer  # noqa: E402

LOCAL = "127.0.0.1"
EVERY = 0.5
"""Seconds between clicks."""
TONES = tuple(range(1000, 5000, 500))
"""Each click a burst of the next of these frequencies (Hz), round and round: a click heard is
told from the others up to len(TONES) * EVERY = 4 s of delay, however much it grows."""
BURST = int(0.01 * RATE)
"""10 ms: every other tone in TONES then falls on a null of a tone's spectrum (multiples of 100 Hz)."""
WARM_UP = 3.0
"""Seconds of call after both sides connected before recording: the playback device opens
with the first sound received, and its first second is PulseAudio starting the stream."""
CALIBRATION_MS = 40
HEARD = 0.02
"""A click on the speaker's side is one whose tone reaches this level (the click is 0.5)."""
LIMIT_MS = 150


def clicks(seconds: float) -> np.ndarray:
    """``seconds`` of clicks, one every EVERY seconds, mono float at RATE."""
    out = np.zeros(int(seconds / EVERY) * int(EVERY * RATE), np.float32)
    t = np.arange(BURST) / RATE
    for number, at in enumerate(range(0, len(out), int(EVERY * RATE))):
        out[at:at + BURST] = 0.5 * np.sin(2 * np.pi * TONES[number % len(TONES)] * t)
    return out


def envelope(samples: np.ndarray, frequency: float) -> np.ndarray:
    """How much of ``frequency`` the last BURST samples held, at each sample: a burst of it
    rises from its onset to its peak over BURST samples, a burst of another tone of TONES stays
    near zero."""
    turned = samples * np.exp(-2j * np.pi * frequency * np.arange(len(samples)) / RATE)
    total = np.concatenate(([0], np.cumsum(turned)))
    return np.abs(total[BURST:] - total[:-BURST])


def onset(level: np.ndarray) -> int:
    """Where ``level`` first reaches 30 % of its peak."""
    return int(np.argmax(level >= 0.3 * level.max()))


def delays(recording: np.ndarray) -> list[tuple[float, Optional[float]]]:
    """For each click on the microphone's channel: (when, in seconds into the recording; its
    delay to the speaker's channel in ms, or None where it was not heard).

    A click's tone is the one strongest on the microphone's channel; on each channel its onset
    is where the envelope of that tone first reaches 30 % of its peak (the same measure on both
    sides, so its own lag cancels): on the microphone's around the click, on the speaker's in the
    len(TONES) * EVERY after it (where the next click of that tone has not yet come)."""
    mouth, ear = recording[:, 0], recording[:, 1]
    found: list[tuple[float, Optional[float]]] = []
    span = len(TONES) * int(EVERY * RATE) - BURST
    start = 0
    while len(loud := np.flatnonzero(np.abs(mouth[start:]) > 0.25)):
        first = start + int(loud[0])
        start = first + int(EVERY * RATE) // 2
        if first < BURST or first + span > len(ear):
            continue
        near = mouth[first - BURST:first + 2 * BURST]
        tone = max(TONES, key=lambda frequency: float(envelope(near, frequency).max()))
        said = first - BURST + onset(envelope(near, tone))
        heard = envelope(ear[said:said + span], tone)
        if heard.max() < HEARD * BURST / 2:
            found.append((first / RATE, None))
        else:
            found.append((first / RATE, onset(heard) / RATE * 1000))
    return found


def summary(found: list[tuple[float, Optional[float]]]) -> dict[str, Any]:
    values = sorted(delay for _, delay in found if delay is not None)
    if not values:
        return {"clicks": len(found), "heard": 0}
    return {"clicks": len(found), "heard": len(values), "median": statistics.median(values),
            "p95": values[min(len(values) - 1, int(0.95 * len(values)))], "max": values[-1]}


async def record(sound: SoundServer, seconds: float) -> np.ndarray:
    """``seconds`` of clicks on the probe, both channels, while clicks play into the microphone
    (and the seconds after the last in which it can still be heard)."""
    seconds += len(TONES) * EVERY
    # play() returns once the player took the last of its input, some 2 s before the clicks end:
    # about when the recording, which starts a second late, has what it needs.
    playing = asyncio.ensure_future(asyncio.to_thread(sound.play, clicks(seconds + 2), MIC))
    try:
        return await asyncio.to_thread(sound.record, seconds, PROBE + ".monitor", 2)
    finally:
        player = await playing
        player.kill()
        player.wait()


async def wait_for_line(process: asyncio.subprocess.Process, text: str, timeout: float = 30) -> str:
    """Read ``process``'s output until a line holds ``text``; the line."""
    assert process.stdout is not None
    while line := (await asyncio.wait_for(process.stdout.readline(), timeout)).decode(errors="replace"):
        if text in line:
            return line
    raise RuntimeError(f"the process ended before saying {text!r}")


def drain(process: asyncio.subprocess.Process) -> asyncio.Task:
    """Read (and drop) the rest of ``process``'s output, so that it never blocks on a full pipe."""
    async def read() -> None:
        assert process.stdout is not None
        while await process.stdout.read(65536):
            pass
    return asyncio.ensure_future(read())


async def start(sound: SoundServer, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, env=dict(sound.env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def finish(*processes: asyncio.subprocess.Process, how: int = signal.SIGINT) -> None:
    """End ``processes`` by ``how`` (SIGINT: how a person makes a peer leave), killed after 10 s."""
    for process in processes:
        if process.returncode is None:
            process.send_signal(how)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), 10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


async def ours(sound: SoundServer, url: str, seconds: float, round_: int, warm_up: float) -> np.ndarray:
    """Two CLI peers: ``mouth`` sends the microphone, ``ear`` plays on the speaker."""
    common = ["-m", "peer", "--room", f"latency{round_}", "--server", url, "--ice-host", LOCAL,
              "--video", "none", "--no-window", "--quiet"]
    mouth = await start(sound, *common, "--name", "mouth", "--audio", "mic", "--no-audio-out")
    ear = await start(sound, *common, "--name", "ear", "--audio", "none")
    drains: list[asyncio.Task] = []
    try:
        await asyncio.gather(wait_for_line(mouth, "connected to"), wait_for_line(ear, "connected to"))
        drains += [drain(mouth), drain(ear)]
        await asyncio.sleep(warm_up)
        return await record(sound, seconds)
    finally:
        await finish(mouth, ear)
        await asyncio.gather(*drains)


async def baseline(sound: SoundServer, seconds: float, warm_up: float) -> np.ndarray:
    """Two bare-aiortc processes (``--baseline send`` and ``--baseline receive``), SDP through our pipes."""
    sender = await start(sound, __file__, "--baseline", "send")
    receiver = await start(sound, __file__, "--baseline", "receive")
    drains: list[asyncio.Task] = []
    try:
        for source, sink in ((sender, receiver), (receiver, sender)):
            description = await wait_for_line(source, '"sdp"')
            assert sink.stdin is not None
            sink.stdin.write(description.encode())
            await sink.stdin.drain()
        await wait_for_line(receiver, "playing")
        drains += [drain(sender), drain(receiver)]
        await asyncio.sleep(warm_up)
        return await record(sound, seconds)
    finally:
        await finish(sender, receiver, how=signal.SIGKILL)  # nothing of theirs to save
        await asyncio.gather(*drains)


async def calibrate(sound: SoundServer, seconds: float) -> np.ndarray:
    """The probe measuring PulseAudio's loopback from the microphone's sink straight to the speaker."""
    module = sound.pactl("load-module", "module-loopback", f"source={MIC}.monitor", f"sink={SPEAKER}",
                         f"latency_msec={CALIBRATION_MS}").stdout.strip()
    try:
        await asyncio.sleep(1)
        return await record(sound, seconds)
    finally:
        sound.pactl("unload-module", module)


async def measure(args: argparse.Namespace) -> None:
    sound = SoundServer("pulseaudio", PROBE_CONFIG)
    server = SignalingServer()
    port = await server.start(LOCAL, 0)
    url = f"http://{LOCAL}:{port}"
    results: dict[str, list[list[tuple[float, Optional[float]]]]] = {"ours": [], "baseline": []}
    try:
        calibration = summary(delays(await calibrate(sound, min(args.seconds, 10))))
        for round_ in range(args.rounds):
            results["ours"].append(delays(await ours(sound, url, args.seconds, round_, args.warm_up)))
            results["baseline"].append(delays(await baseline(sound, args.seconds, args.warm_up)))
        long = {}
        if args.long:
            long["ours"] = delays(await ours(sound, url, args.long, args.rounds, args.warm_up))
            long["baseline"] = delays(await baseline(sound, args.long, args.warm_up))
    finally:
        await server.stop()
        sound.stop()
    report(calibration, results, long, args)


def row(name: str, found: list[tuple[float, Optional[float]]]) -> dict[str, Any]:
    figures = summary(found)
    line = f"| {name} | {figures['heard']}/{figures['clicks']} |"
    if figures["heard"]:
        line += f" {figures['median']:.1f} | {figures['p95']:.1f} | {figures['max']:.1f} |"
    else:
        line += " - | - | - |"
    print(line)
    return figures


def report(calibration: dict[str, Any], results: dict[str, list[list[tuple[float, Optional[float]]]]],
           long: dict[str, list[tuple[float, Optional[float]]]], args: argparse.Namespace) -> None:
    print(f"calibration, PulseAudio's loopback asked for {CALIBRATION_MS} ms: "
          + (f"median {calibration['median']:.1f} ms, p95 {calibration['p95']:.1f}, max {calibration['max']:.1f} "
             f"({calibration['heard']}/{calibration['clicks']} clicks)" if calibration["heard"] else "nothing heard"))
    print(f"\nmouth to ear, {args.seconds:g} s rounds, ms:\n")
    print("| run | clicks heard | median | p95 | max |\n| --- | --- | --- | --- | --- |")
    medians: dict[str, list[float]] = {"ours": [], "baseline": []}
    for round_ in range(args.rounds):
        for name in ("ours", "baseline"):
            figures = row(f"{name} {round_ + 1}", results[name][round_])
            if figures["heard"]:
                medians[name].append(figures["median"])
    if medians["ours"] and medians["baseline"]:
        ours_, base = statistics.median(medians["ours"]), statistics.median(medians["baseline"])
        print(f"\nmedian of medians: ours {ours_:.1f} ms, baseline {base:.1f} ms, ratio {ours_ / base:.2f}; "
              f"ours {'under' if ours_ < LIMIT_MS else 'OVER'} {LIMIT_MS} ms")
    if long:
        print(f"\nlong run, {args.long:g} s: first and last 30 s, ms:\n")
        print("| run | clicks heard | median | p95 | max |\n| --- | --- | --- | --- | --- |")
        for name, found in long.items():
            end = found[-1][0] if found else 0
            row(f"{name}, first 30 s", [click for click in found if click[0] < 30])
            row(f"{name}, last 30 s", [click for click in found if click[0] >= end - 30])
            row(f"{name}, all", found)


# The baseline: bare aiortc, miniaudio for the devices, in the plainest way that works.

def baseline_peer(role: str) -> None:
    asyncio.run(send() if role == "send" else receive())


async def send() -> None:
    pc = await peer_connection()
    track = Captured()
    pc.addTrack(track)
    device = miniaudio.CaptureDevice(miniaudio.SampleFormat.SIGNED16, 1, RATE, buffersize_msec=20)
    device.start(track.receiver())
    await pc.setLocalDescription(await pc.createOffer())
    print(json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}), flush=True)
    answer = json.loads(await asyncio.to_thread(sys.stdin.readline))
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    await asyncio.Event().wait()


async def receive() -> None:
    pc = await peer_connection()
    pc.on("track", lambda track: asyncio.ensure_future(play(track)))
    offer = json.loads(await asyncio.to_thread(sys.stdin.readline))
    await pc.setRemoteDescription(RTCSessionDescription(**offer))
    await pc.setLocalDescription(await pc.createAnswer())
    print(json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}), flush=True)
    await asyncio.Event().wait()


async def peer_connection() -> RTCPeerConnection:
    use_host_addresses([LOCAL])  # aioice leaves loopback out otherwise (FIELD-NOTES)
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class Captured(MediaStreamTrack):
    """What the microphone captured, each block a frame as it comes."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.blocks: asyncio.Queue[bytes] = asyncio.Queue()
        self.pts = 0

    def receiver(self) -> Generator[None, bytearray, None]:
        """What miniaudio's thread sends each block it captured."""
        def receive() -> Generator[None, bytearray, None]:
            while True:
                block = yield
                self.loop.call_soon_threadsafe(self.blocks.put_nowait, bytes(block))

        next(generator := receive())
        return generator

    async def recv(self) -> av.AudioFrame:
        samples = np.frombuffer(await self.blocks.get(), "<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.pts, fractions.Fraction(1, RATE)
        self.pts += samples.shape[1]
        return frame


async def play(track: Any) -> None:
    """Every frame received, from when the device first asks for sound, into one FIFO; the
    device takes from it, silence when it is empty."""
    fifo = bytearray()
    lock = threading.Lock()

    asked = False

    def generate() -> Generator[bytes, int, None]:
        nonlocal asked
        count = yield b""
        asked = True
        while True:
            with lock:
                out = bytes(fifo[:count * 4])
                del fifo[:count * 4]
            count = yield out + bytes(count * 4 - len(out))

    device = miniaudio.PlaybackDevice(miniaudio.SampleFormat.SIGNED16, 2, RATE, buffersize_msec=20,
                                      callback_periods=2)
    next(generator := generate())
    device.start(generator)
    first = True
    while True:
        frame = await track.recv()  # aiortc decodes Opus to 48 kHz stereo s16
        if not asked:  # PulseAudio starts the stream a second or two late: what came before is not kept
            continue
        with lock:
            fifo += frame.to_ndarray().tobytes()
        if first:
            print("playing", flush=True)
            first = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="length of each round (default 30)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of ours then the baseline (default 2)")
    parser.add_argument("--long", type=float, default=0, help="then one long run of each, SECONDS (e.g. 180)")
    parser.add_argument("--warm-up", type=float, default=WARM_UP,
                        help=f"seconds of call before each recording (default {WARM_UP:g})")
    parser.add_argument("--baseline", choices=["send", "receive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline_peer(args.baseline)
    else:
        asyncio.run(measure(args))


if __name__ == "__main__":
    main()
