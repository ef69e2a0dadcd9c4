"""Write media to a file (mp4, webm or mkv, chosen by the extension) on a worker thread.

aiortc's ``MediaRecorder`` encodes on the event loop; an x264 encode of every frame there
would delay the network. Here the loop only queues frames and a thread encodes and muxes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, AsyncIterable, Optional, Sequence, Union

import av

logger = logging.getLogger(__name__)

_CODECS = {".mp4": ("libx264", "aac"), ".webm": ("libvpx", "libopus"), ".mkv": ("libx264", "libopus")}
_VIDEO_TIME_BASE = Fraction(1, 90000)
_STOP = object()
_STREAMS_AFTER = 200
"""Frames to hold back while waiting for every expected kind to show one."""

Frame = Union[av.VideoFrame, av.AudioFrame]


class Recorder:
    """Frames written to it, video and audio, go into one file.

    ``kinds`` names what will come ("video", "audio"): a container takes no new stream
    after its first packet, so the file starts once each kind has shown a frame (or at
    ``stop()``, with what came). No frame at all, no file. The recorder sets the ``pts`` of
    the video frames it is given, so give each recorder frames of its own.
    """

    def __init__(self, path: Union[str, Path], kinds: Sequence[str] = ("video",)) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in _CODECS:
            raise ValueError(f"cannot record to {self.path.name}: use a .mp4, .webm or .mkv file")
        self.kinds = tuple(kinds)
        self.frames_written = 0
        """Video frames in the file so far."""
        self.file_started = False
        """Whether the file exists (some frame, video or audio, arrived)."""
        self._queue: queue.Queue = queue.Queue(maxsize=120)
        self._following: set[asyncio.Task] = set()
        self._stopping: Optional[asyncio.Task] = None
        self._finished = asyncio.Event()
        self._start: Optional[float] = None
        self._last_video_pts = -1
        self._thread = threading.Thread(target=self._write, name=f"recorder {self.path.name}", daemon=True)
        self._thread.start()

    def write(self, frame: Frame) -> None:
        """Queue a frame for the file; dropped (never waited for) when the encoder is behind,
        ignored once stopped. A video frame is placed by its own time (pts and time_base),
        or by when it was written."""
        if self._stopping is not None:
            return
        at = frame.time if isinstance(frame, av.VideoFrame) and frame.time is not None else time.monotonic()
        try:
            self._queue.put_nowait((frame, at))
        except queue.Full:
            logger.debug("recorder behind: a frame dropped")

    def follow(self, frames: AsyncIterable[Frame]) -> None:
        """Write every frame ``frames`` yields. Once all it follows have ended, the recorder
        finishes the file by itself."""
        if self._stopping is not None:
            return

        async def pull() -> None:
            async for frame in frames:
                self.write(frame)

        task = asyncio.ensure_future(pull())
        self._following.add(task)
        task.add_done_callback(self._followed)

    async def stop(self) -> None:
        """Finish the file; safe to call twice, or from several tasks at once."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    async def wait(self) -> None:
        """Until the file is finished: ``stop()``, or the end of all it follows."""
        await self._finished.wait()

    def _followed(self, task: asyncio.Task) -> None:
        self._following.discard(task)
        if not self._following and not task.cancelled():
            asyncio.ensure_future(self.stop())

    async def _stop(self) -> None:
        following = list(self._following)
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._finish)
        self._finished.set()

    def _finish(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _write(self) -> None:
        """Encode and mux until told to stop."""
        container = None
        streams: dict = {}
        waiting: list[tuple[Frame, float]] = []
        try:
            while (item := self._queue.get()) is not _STOP:
                if container is None:
                    waiting.append(item)
                    if len({_kind(frame) for frame, _ in waiting}) < len(set(self.kinds)) \
                            and len(waiting) < _STREAMS_AFTER:
                        continue
                    container, streams = self._open(waiting)
                    items, waiting = waiting, []
                else:
                    items = [item]
                self._encode_all(container, streams, items)
            if container is None and waiting:  # stopped before every kind showed up
                container, streams = self._open(waiting)
                self._encode_all(container, streams, waiting)
            if container is not None:  # None: no frame came, no file
                for stream in streams.values():
                    container.mux(stream.encode(None))
        except Exception:
            logger.exception("recording to %s failed", self.path)
        finally:
            if container is not None:
                container.close()

    def _open(self, waiting: list[tuple[Frame, float]]) -> tuple[Any, dict]:
        """The file, with a stream for each kind among the first frames."""
        firsts: dict[str, Frame] = {}
        for frame, _ in waiting:
            firsts.setdefault(_kind(frame), frame)
        container = av.open(str(self.path), mode="w")
        self.file_started = True
        return container, {kind: self._add_stream(container, kind, frame) for kind, frame in firsts.items()}

    def _encode_all(self, container, streams: dict, items: list[tuple[Frame, float]]) -> None:
        for frame, at in items:
            if _kind(frame) in streams:
                self._encode(container, streams[_kind(frame)], frame, at)

    def _encode(self, container, stream, frame: Frame, at: float) -> None:
        if isinstance(frame, av.VideoFrame):
            self._start = at if self._start is None else self._start
            pts = int((at - self._start) / _VIDEO_TIME_BASE)
            if pts <= self._last_video_pts:
                return
            frame.pts, frame.time_base = pts, _VIDEO_TIME_BASE
            self._last_video_pts = pts
            self.frames_written += 1
        else:
            frame.pts = None
        container.mux(stream.encode(frame))  # the encoder scales a frame of another size

    def _add_stream(self, container, kind: str, frame: Frame):
        video_codec, audio_codec = _CODECS[self.path.suffix.lower()]
        if kind == "video":
            assert isinstance(frame, av.VideoFrame)  # kind is _kind(frame)
            stream = container.add_stream(video_codec, rate=30)
            # yuv420p needs even sizes
            stream.width, stream.height, stream.pix_fmt = frame.width // 2 * 2, frame.height // 2 * 2, "yuv420p"
            stream.codec_context.time_base = _VIDEO_TIME_BASE
            return stream
        return container.add_stream(audio_codec, rate=48000)


def _kind(frame: Frame) -> str:
    return "audio" if isinstance(frame, av.AudioFrame) else "video"
