"""Remote sound played on a speaker: every member of a room mixed on one output device.

The device is opened through ``miniaudio``, which bundles its own C library and talks to
PulseAudio, PipeWire, ALSA, CoreAudio or WASAPI itself: PyAV's Linux wheel bundles an
alsa-lib that finds no ALSA configuration (``av.open("default", format="alsa")`` fails with
EIO), and ``sounddevice`` needs the system's libportaudio2, which pip cannot install.

miniaudio asks for samples on a thread of its own, whenever the device needs them. Each
remote track fills a ``JitterBuffer`` from the event loop; the device's thread takes from
every buffer and sums them. The buffers hold a little (``TARGET``) to ride over uneven
arrival and never more than ``CAP``: what a long call gains by clock drift or a burst after a
network stall is dropped, oldest first, so the delay stays low for hours. Both sides hold a
buffer's lock only to move a few kilobytes in memory: the loop never waits on the device.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, AsyncIterator, Callable, Generator, Optional

import av
import numpy as np

from ..errors import MediaError
from .audio import Converter
from .devices import SPEAKER, SoundServerSilent, answered, close_device, find_sound_device, quiet_alsa
from .microphone import LOST_AFTER

logger = logging.getLogger(__name__)

RATE = 48000
"""What the device is asked for: Opus's own rate, so our peers' sound needs no resampling."""
CHANNELS = 2
LAYOUT = "stereo"
TARGET = 0.04
"""Seconds a buffer fills before it plays (again, after running dry): two 20 ms frames."""
CAP = 0.2
"""Seconds a buffer holds at most; above, the oldest sound is dropped down to ``TARGET``."""
WINDOW = 1.0
"""Seconds over which a buffer that never ran below ``TARGET`` sheds what it had too much."""
PERIOD_MS = 20
PERIODS = 2
"""The device asks for ``PERIOD_MS`` at a time and holds ``PERIODS`` of them: 40 ms more of
delay. 10 ms periods starved (the device took 3 to 15 % less than real time) on a loaded 2-core
machine, where the callback's thread waits for the GIL."""

NO_OUTPUT = "cannot play the sound others send: no sound output found (no sound server or device); the call goes on"
LOST = "the speaker stopped playing (unplugged, or the sound server went away); the call goes on without sound"
BACK = "the speaker plays again"


class JitterBuffer:
    """One track's sound waiting for the device: ``push`` from the event loop, ``pull`` from
    the device's thread. Samples are ``int16`` shaped (samples, channels).

    It plays once ``target`` samples wait, and after running dry waits for ``target`` again
    (silence meanwhile: one gap, not a stutter of tiny ones); while it waits it keeps only the
    newest ``target`` (a device that starts late must not start late in the sound too). Over
    ``cap`` it drops the oldest down to ``target``, and when it held more than ``target`` all
    through a ``window`` of playing (a burst after a stall, a sender's clock a little fast)
    it drops that excess: a delay gained once is not kept for the rest of the call.
    ``level`` (samples waiting), ``delay`` (seconds the chunk now playing waited),
    ``underruns`` and ``dropped`` (samples) say how it goes."""

    def __init__(self, channels: int = CHANNELS, rate: int = RATE, target: float = TARGET, cap: float = CAP,
                 window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.channels = channels
        self.rate = rate
        self.target = int(target * rate)
        self.cap = max(int(cap * rate), self.target)
        self.window = int(window * rate)
        self.level = 0
        self.delay = 0.0
        self.underruns = 0
        self.dropped = 0
        self._clock = clock
        self._chunks: deque[tuple[np.ndarray, float]] = deque()
        self._offset = 0
        """Samples of the first chunk already played or dropped."""
        self._playing = False
        self._lowest = 0
        """The lowest level after a pull in this window; ``_pulled`` samples of it so far."""
        self._pulled = 0
        self._lock = threading.Lock()

    def push(self, samples: np.ndarray) -> None:
        """Add sound that just arrived (never blocks on the device: the lock is held for list work only)."""
        if samples.ndim != 2 or samples.shape[1] != self.channels or samples.dtype != np.int16:
            raise ValueError(f"expected int16 samples shaped (n, {self.channels}), got {samples.dtype} {samples.shape}")
        if not len(samples):
            return
        with self._lock:
            self._chunks.append((samples, self._clock()))
            self.level += len(samples)
            if self.level > (self.cap if self._playing else self.target):
                self._drop(self.level - self.target)

    def pull(self, count: int) -> Optional[np.ndarray]:
        """The next ``count`` samples, padded with silence on running dry; None when there is
        nothing to play (still filling up to the target)."""
        with self._lock:
            if not self._playing:
                if self.level < self.target:
                    return None
                self._playing = True
                self._lowest, self._pulled = self.level, 0
            out = np.zeros((count, self.channels), np.int16)
            done = 0
            while done < count and self._chunks:
                chunk, arrived = self._chunks[0]
                if self._offset == 0:
                    self.delay = self._clock() - arrived
                take = min(count - done, len(chunk) - self._offset)
                out[done:done + take] = chunk[self._offset:self._offset + take]
                done += take
                self._consume(take)
            if done < count:
                self._playing = False
                self.underruns += 1
            else:
                self._shed(count)
            return out

    def _shed(self, pulled: int) -> None:
        """At the end of each window, drop what stayed above the target all through it."""
        self._lowest = min(self._lowest, self.level)
        self._pulled += pulled
        if self._pulled >= self.window:
            if self._lowest > self.target:
                self._drop(self._lowest - self.target)
            self._lowest, self._pulled = self.level, 0

    def _drop(self, count: int) -> None:
        self.dropped += count
        while count > 0:
            take = min(count, len(self._chunks[0][0]) - self._offset)
            self._consume(take)
            count -= take

    def _consume(self, count: int) -> None:
        """``count`` samples of the first chunk are gone (at most what is left of it)."""
        self.level -= count
        self._offset += count
        if self._offset == len(self._chunks[0][0]):
            self._chunks.popleft()
            self._offset = 0


def mix(buffers: tuple[JitterBuffer, ...], count: int, channels: int = CHANNELS) -> np.ndarray:
    """``count`` samples of every buffer summed, clipped to int16 (silence where none plays)."""
    total = np.zeros((count, channels), np.int32)
    for buffer in buffers:
        samples = buffer.pull(count)
        if samples is not None:
            total += samples
    return np.clip(total, -32768, 32767).astype(np.int16)


class Speaker:
    """Plays the frames of every track it ``follow``s, mixed, on one output device: the
    default one, or the playback device called ``device`` (miniaudio's name for it, as
    ``python -m peer --list-devices`` prints it).

    The device opens when the first track comes (no stream runs while nobody speaks) and
    closes with ``close()``. Where it cannot open (no sound server, no device, no such name)
    ``on_problem`` is told once, in one line for people, and the tracks are left unplayed. A
    device that stops playing mid-call (unplugged, its sound server gone) is told the same way,
    once, and again when it plays again.
    """

    def __init__(self, device: Optional[str] = None, on_problem: Optional[Callable[[str], None]] = None,
                 on_sound: Optional[Callable[[np.ndarray], None]] = None) -> None:
        self.device = device
        self.problem: Optional[str] = None
        """Why nothing plays, once that is known."""
        self.buffers: tuple[JitterBuffer, ...] = ()
        """One a track playing; replaced whole, so the device's thread reads a consistent one."""
        self._on_problem = on_problem or logger.warning
        self._on_sound = on_sound
        """Told each block put in to play: the microphone's ducking (``LocalMedia.playing``) hears of it."""
        self._opening: Optional[asyncio.Future] = None
        self._closing: Optional[asyncio.Future] = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._told = False
        self._asked_at = 0.0
        """When the device's thread last asked for sound: miniaudio says nothing when a device goes."""
        self._lost = False

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called: it plays nothing more."""
        return self._closed

    def follow(self, frames: AsyncIterator[av.AudioFrame]) -> None:
        """Play ``frames`` (PyAV's, any format, layout and rate) until they end."""
        if self._closed:
            return
        task = asyncio.ensure_future(self._play(frames))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop playing and close the device. Safe to call twice, also at once: each waits for
        the one closing (two closing a device at the same time abort the process in libpulse)."""
        self._closed = True
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._opening is not None:
            device = await asyncio.shield(self._opening)
            self._opening = None
            if device is not None:
                await asyncio.to_thread(close_device, device)  # waits for the device's thread to finish a period

    async def _play(self, frames: AsyncIterator[av.AudioFrame]) -> None:
        if self._opening is None:
            self._opening = asyncio.ensure_future(asyncio.to_thread(self._open_device))
        if await asyncio.shield(self._opening) is None:
            if self.problem is not None and not self._told:
                self._told = True
                self._on_problem(self.problem)
            return
        buffer = JitterBuffer()
        convert = Converter(RATE, LAYOUT)
        self.buffers += (buffer,)
        try:
            async for frame in frames:
                samples = convert(frame)
                buffer.push(samples)
                self._check_device()
                if self._on_sound is not None:
                    self._on_sound(samples)
        finally:
            self.buffers = tuple(b for b in self.buffers if b is not buffer)

    def _check_device(self) -> None:
        """Say once when the device stops asking for sound (it asks every 20 ms while it works),
        and when it asks again."""
        lost = time.monotonic() - self._asked_at > LOST_AFTER
        if lost != self._lost:
            self._lost = lost
            self._on_problem(LOST if lost else BACK)

    def _open_device(self) -> Any:
        """The started playback device, or None with ``problem`` set. Blocks (a sound server
        is asked, which may never answer): runs on a worker thread."""
        try:
            return answered(self._open, close_device)
        except SoundServerSilent as error:
            self.problem = f"cannot play the sound others send: {error}; the call goes on"
            return None

    def _open(self) -> Any:
        import miniaudio

        quiet_alsa()
        try:
            device_id = None
            if self.device is not None:
                try:
                    device_id = find_sound_device(SPEAKER, self.device).handle
                except MediaError as error:
                    self.problem = f"{error} The sound others send is not played; the call goes on"
                    return None
            device = miniaudio.PlaybackDevice(output_format=miniaudio.SampleFormat.SIGNED16, nchannels=CHANNELS,
                                              sample_rate=RATE, buffersize_msec=PERIOD_MS, callback_periods=PERIODS,
                                              device_id=device_id, app_name="peer")
        except (miniaudio.MiniaudioError, OSError) as error:
            logger.debug("no playback device: %s", error)
            self.problem = NO_OUTPUT
            return None
        if device.backend == "Null":  # miniaudio's stand-in that plays to nowhere
            device.close()
            self.problem = NO_OUTPUT
            return None
        generator = self._generate()
        next(generator)
        device.start(generator)
        logger.debug("playing remote sound on %s through %s", self.device or "the default output", device.backend)
        return device

    def _generate(self) -> Generator[bytes, int, None]:
        """What the device's thread runs: sent how many samples it wants, it yields them."""
        self._asked_at = time.monotonic()
        count = yield b""
        while True:
            self._asked_at = time.monotonic()
            count = yield mix(self.buffers, count).tobytes()
