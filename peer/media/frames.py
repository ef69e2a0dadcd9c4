"""Frames you make, published as a video track: push numpy arrays, peers see them at a set rate."""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Optional

import av
import numpy as np
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

_CLOCK = 90000
_TIME_BASE = fractions.Fraction(1, _CLOCK)


class FrameSource(VideoStreamTrack):
    """A video track fed with BGR numpy arrays (height x width x 3, uint8).

    A pushed picture goes out as soon as the encoder asks for the next frame, at most
    ``fps`` times a second; when nothing new comes, the last picture is repeated at ``fps``
    so the stream never stalls. Until the first push, peers see black at ``size``.
    """

    def __init__(self, fps: float = 30, size: tuple[int, int] = (640, 480)) -> None:
        super().__init__()
        self.fps = fps
        self._picture: np.ndarray = np.zeros((size[1], size[0], 3), np.uint8)
        self._fresh = asyncio.Event()
        # Our own clock, None until the first frame (VideoStreamTrack's, a float, is not used).
        self._start: Optional[float] = None  # type: ignore[assignment]
        self._last = 0.0
        self._last_pts = -1

    def push(self, picture: np.ndarray) -> None:
        if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
            raise ValueError("push a height x width x 3 uint8 BGR array")
        self._picture = picture
        self._fresh.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError  # stopped: whatever reads this track (a relay) ends too
        period = 1 / self.fps
        if self._start is None:
            self._start = self._last = time.monotonic() - period
        # never faster than fps ...
        await asyncio.sleep(max(0.0, self._last + period / 2 - time.monotonic()))
        # ... and a new picture goes at once; without one, repeat the last after a period
        try:
            await asyncio.wait_for(self._fresh.wait(), max(0.0, self._last + period - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        self._fresh.clear()
        self._last = time.monotonic()
        frame = av.VideoFrame.from_ndarray(self._picture, format="bgr24")
        self._last_pts = max(self._last_pts + 1, int((self._last - self._start) * _CLOCK))
        frame.pts, frame.time_base = self._last_pts, _TIME_BASE
        return frame
