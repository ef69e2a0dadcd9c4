"""A reader slower than the sender: a bot taking one frame every 100 ms of a 30 fps stream for a
minute sees the newest frame each time, so the delay from the sender's frame to the frame read
stays flat instead of growing (issue 11). The window reads the same way: ``CallView`` hands
``Room.frames()`` (newest only) to ``Window.show``, which keeps the newest picture per tile
while a write to the window process is under way."""

import cv2  # noqa: F401  -- before av

import asyncio
import statistics
import time
from typing import Optional

import av
import numpy as np
from aiortc import VideoStreamTrack

import peer
from conftest import LOCAL

READ_EVERY = 0.1
MINUTE = 60.0
WINDOW = 10.0
"""The first and the last this many seconds are compared."""
SIZE = (320, 240)
COLUMNS, ROWS = 8, 4
"""The stamp: a 16-bit frame number in the upper two rows of cells, its complement in the lower
two; each cell 40x60 pixels of black or white, which VP8 keeps apart at any bitrate."""


def stamp(number: int) -> np.ndarray:
    bits = [number >> bit & 1 for bit in range(16)]
    bits += [1 - bit for bit in bits]
    cells = np.array(bits, np.uint8).reshape(ROWS, COLUMNS) * 255
    cell_height, cell_width = SIZE[1] // ROWS, SIZE[0] // COLUMNS
    grey = np.kron(cells, np.ones((cell_height, cell_width), np.uint8))
    return np.repeat(grey[:, :, None], 3, axis=2)


def read_stamp(picture: np.ndarray) -> Optional[int]:
    """The frame number in ``picture``, or None where a cell is unclear (its complement disagrees)."""
    cell_height, cell_width = picture.shape[0] // ROWS, picture.shape[1] // COLUMNS
    grey = picture.mean(axis=2)
    bits = [int(grey[row * cell_height + 10:(row + 1) * cell_height - 10,
                     column * cell_width + 8:(column + 1) * cell_width - 8].mean() > 128)
            for row in range(ROWS) for column in range(COLUMNS)]
    if any(bit == complement for bit, complement in zip(bits[:16], bits[16:], strict=True)):
        return None
    return sum(bit << index for index, bit in enumerate(bits[:16]))


class StampedSource(VideoStreamTrack):
    """30 fps of frames, each with its number drawn in; ``sent`` says when each was made."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        number = len(self.sent)
        frame = av.VideoFrame.from_ndarray(stamp(number), format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        self.sent[number] = time.monotonic()
        return frame


def test_the_stamp_reads_back():
    for number in (0, 1, 677, 65535):
        assert read_stamp(stamp(number)) == number
    assert read_stamp(np.full((240, 320, 3), 128, np.uint8)) is None


async def test_a_slow_reader_sees_no_growing_delay(server):
    source = StampedSource()
    delays: list[tuple[float, float]] = []  # (seconds into the reading, delay of the frame read)
    unreadable = 0
    async with peer.join("slow", server=server.url, name="sender", video=source, ice_hosts=[LOCAL]), \
            peer.join("slow", server=server.url, name="reader", ice_hosts=[LOCAL]) as reader:
        member = await reader.wait_for_peer()
        await reader.wait_for_frames(10, member)
        began = time.monotonic()
        async for picture in reader.frames(member, latest=True):
            now = time.monotonic()
            number = read_stamp(picture)
            if number is None or number not in source.sent:
                unreadable += 1
            else:
                delays.append((now - began, now - source.sent[number]))
            if now - began > MINUTE:
                break
            await asyncio.sleep(READ_EVERY)

    assert len(delays) > 400 and unreadable < len(delays) / 20, (len(delays), unreadable)
    first = [delay for at, delay in delays if at < WINDOW]
    last = [delay for at, delay in delays if at > MINUTE - WINDOW]
    summary = f"first 10 s: median {statistics.median(first):.3f} s, max {max(first):.3f} s; " \
              f"last 10 s: median {statistics.median(last):.3f} s, max {max(last):.3f} s"
    assert statistics.median(last) < statistics.median(first) + 0.05, summary
    assert sorted(last)[len(last) * 9 // 10] < 0.5 and max(last) < 1.0, summary
