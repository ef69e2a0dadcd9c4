"""``peer.AudioSource``: sound a bot makes, sent as an audio track.

The bot pushes samples when it has them; the track hands the call a 20 ms frame every 20 ms
by the clock, with silence where nothing was pushed, so the receivers' clock keeps going
through pauses. What is pushed waits in a queue of bounded length: ``push`` waits while the
queue is full (before anyone is connected, or when the bot makes sound faster than it is
played), so a bot can never fill memory, and the sound it pushed is sent in order, none lost.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

FRAME_SECONDS = 0.02
"""The length of a frame: Opus's."""
MIN_RATE, MAX_RATE = 8000, 192000


class AudioSource(MediaStreamTrack):
    """An audio track of the samples pushed into it: ``await source.push(samples)``.

    ``samples`` is a numpy array: mono as ``(n,)`` or ``(n, 1)``, stereo as ``(n, 2)``; int16,
    or float in -1..1 (clipped). At most ``buffer`` seconds wait to be sent: ``push`` waits
    for room. ``push`` after ``stop()`` (the room closed) drops the samples.
    """

    kind = "audio"

    def __init__(self, sample_rate: int = 48000, channels: int = 1, buffer: float = 0.5) -> None:
        super().__init__()
        if not isinstance(sample_rate, int) or not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(f"sample_rate must be a whole number of Hz from {MIN_RATE} to {MAX_RATE}, "
                             f"not {sample_rate!r}")
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 (mono) or 2 (stereo), not {channels!r}")
        if not FRAME_SECONDS <= buffer <= 60:
            raise ValueError(f"buffer must be from {FRAME_SECONDS} to 60 seconds, not {buffer!r}")
        self.sample_rate = sample_rate
        self.channels = channels
        self._frame = int(sample_rate * FRAME_SECONDS)
        self._capacity = max(self._frame, int(sample_rate * buffer))
        self._chunks: deque[np.ndarray] = deque()
        """Pushed samples not sent yet, int16, ``(n, channels)`` each."""
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()
        self._pts = 0
        self._start: float = 0.0

    def _as_int16(self, samples: np.ndarray) -> np.ndarray:
        """``samples`` as int16 of shape ``(n, channels)``, or a ValueError saying what is wrong."""
        if not isinstance(samples, np.ndarray):
            raise ValueError(f"push() takes a numpy array, not {type(samples).__name__}")
        if samples.ndim == 1 and self.channels == 1:
            samples = samples.reshape(-1, 1)
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            wanted = "(n,) or (n, 1)" if self.channels == 1 else "(n, 2)"
            raise ValueError(f"push() takes samples of shape {wanted} for {self.channels} channel(s), "
                             f"not {samples.shape}")
        if samples.dtype == np.int16:
            return samples
        if samples.dtype.kind != "f":
            raise ValueError(f"push() takes int16 samples, or float ones from -1 to 1, not {samples.dtype}")
        if not np.all(np.isfinite(samples)):
            raise ValueError("push() takes finite samples: these hold NaN or infinity")
        return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)

    async def push(self, samples: np.ndarray) -> None:
        """Queue ``samples`` to be sent, waiting while the queue is full. Raises ValueError for
        samples of a wrong shape or type (see the class)."""
        pending = self._as_int16(samples)
        while len(pending) and self.readyState == "live":
            while self._queued >= self._capacity and self.readyState == "live":
                self._room.clear()
                await self._room.wait()
            chunk, pending = pending[:self._capacity - self._queued], pending[self._capacity - self._queued:]
            if self.readyState == "live":
                self._chunks.append(chunk.copy())
                self._queued += len(chunk)

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms, when it is due: what was pushed, then silence."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._pts == 0:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(self._start + self._pts / self.sample_rate - time.monotonic())
        samples = np.zeros((self._frame, self.channels), np.int16)
        filled = 0
        while filled < self._frame and self._chunks:
            chunk = self._chunks[0]
            taken = min(len(chunk), self._frame - filled)
            samples[filled:filled + taken] = chunk[:taken]
            filled += taken
            if taken == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[taken:]
        self._queued -= filled
        self._room.set()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16",
                                           layout="mono" if self.channels == 1 else "stereo")
        frame.sample_rate, frame.pts = self.sample_rate, self._pts
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self._pts += self._frame
        return frame

    def stop(self) -> None:
        super().stop()
        self._chunks.clear()
        self._queued = 0
        self._room.set()
