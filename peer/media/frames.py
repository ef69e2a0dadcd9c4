"""Frames you make, published as a video track: push numpy arrays, peers see them at a set rate."""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Optional

import av
import numpy as np
from aiortc import VideoStreamTrack

_CLOCK = 90000


class FrameSource(VideoStreamTrack):
    """A video track fed with BGR numpy arrays (height x width x 3, uint8).

    ``push()`` replaces the picture; ``recv()`` hands the newest one at ``fps``, so a
    producer slower or faster than the rate never builds delay. Until the first push,
    peers see black at ``size``.
    """

    def __init__(self, fps: float = 30, size: tuple[int, int] = (640, 480)) -> None:
        super().__init__()
        self.fps = fps
        self._picture: np.ndarray = np.zeros((size[1], size[0], 3), np.uint8)
        self._start: Optional[float] = None
        self._count = 0

    def push(self, picture: np.ndarray) -> None:
        if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
            raise ValueError("push a height x width x 3 uint8 BGR array")
        self._picture = picture

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        self._count += 1
        delay = self._start + self._count / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(self._picture, format="bgr24")
        frame.pts = int(self._count * _CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, _CLOCK)
        return frame
