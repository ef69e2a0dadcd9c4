"""Write remote media to a file (mp4 or webm, chosen by the extension) on a worker thread.

aiortc's ``MediaRecorder`` encodes on the event loop; an x264 encode of every frame there
would delay the network. Here the loop only queues frames and a thread encodes and muxes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Optional, Union

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

logger = logging.getLogger(__name__)

_CODECS = {".mp4": ("libx264", "aac"), ".webm": ("libvpx", "libopus"), ".mkv": ("libx264", "libopus")}
_VIDEO_TIME_BASE = Fraction(1, 90000)
_STOP = object()


class Recorder:
    """Record the tracks added before ``start()`` into one file."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in _CODECS:
            raise ValueError(f"cannot record to {self.path.name}: use a .mp4, .webm or .mkv file")
        self._tracks: list[MediaStreamTrack] = []
        self._queue: queue.Queue = queue.Queue(maxsize=120)
        self._tasks: list[asyncio.Task] = []
        self._thread: Optional[threading.Thread] = None
        self.frames_written = 0
        self._start: Optional[float] = None
        self._last_video_pts = -1

    def add_track(self, track: MediaStreamTrack) -> None:
        if track.kind not in [t.kind for t in self._tracks]:
            self._tracks.append(track)

    def start(self) -> None:
        if self._thread is not None or not self._tracks:
            return
        kinds = [t.kind for t in self._tracks]
        self._thread = threading.Thread(target=self._write, args=(kinds,), name=f"recorder {self.path.name}", daemon=True)
        self._thread.start()
        self._tasks = [asyncio.ensure_future(self._pull(t)) for t in self._tracks]

    async def stop(self) -> None:
        """Finish the file; safe to call twice or before ``start()``."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._finish)

    def _finish(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    async def _pull(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                self._queue.put_nowait((track.kind, frame))
            except queue.Full:
                logger.debug("recorder behind: %s frame dropped", track.kind)

    def _write(self, kinds: list[str]) -> None:
        """Encode and mux until told to stop. Streams are added once every track has
        shown a frame (or after a while), since a container takes no new stream after
        its first packet and the video size is known only from a frame."""
        container = av.open(str(self.path), mode="w")
        streams: dict = {}
        waiting: list = []
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if not streams:
                    waiting.append(item)
                    seen = {kind for kind, _ in waiting}
                    if len(seen) < len(kinds) and len(waiting) < 200:
                        continue
                    firsts: dict = {}
                    for kind, frame in waiting:
                        firsts.setdefault(kind, frame)
                    streams = {kind: self._add_stream(container, kind, frame) for kind, frame in firsts.items()}
                    items, waiting = waiting, []
                else:
                    items = [item]
                for kind, frame in items:
                    self._encode(container, streams[kind], kind, frame)
            for stream in streams.values():
                for packet in stream.encode(None):
                    container.mux(packet)
        except Exception:
            logger.exception("recording to %s failed", self.path)
        finally:
            container.close()

    def _encode(self, container, stream, kind: str, frame) -> None:
        if kind == "video":
            if frame.time is None:
                return
            self._start = frame.time if self._start is None else self._start
            pts = int((frame.time - self._start) / _VIDEO_TIME_BASE)
            if pts <= self._last_video_pts:
                return
            frame.pts, frame.time_base = pts, _VIDEO_TIME_BASE
            self._last_video_pts = pts
            self.frames_written += 1
        else:
            frame.pts = None
        for packet in stream.encode(frame):
            container.mux(packet)

    def _add_stream(self, container, kind: str, frame):
        video_codec, audio_codec = _CODECS[self.path.suffix.lower()]
        if kind == "video":
            stream = container.add_stream(video_codec, rate=30)
            stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
            stream.codec_context.time_base = _VIDEO_TIME_BASE
            return stream
        return container.add_stream(audio_codec, rate=48000)
