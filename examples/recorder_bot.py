"""Recorder bot: records the video of each peer who joins to its own file.

    python examples/recorder_bot.py --room demo --out recordings

A peer named alice goes to ``recordings/alice.mp4`` (``alice-2.mp4`` if that exists). The
file is finished when the peer leaves, and on Ctrl-C. ``latest=False`` hands every frame;
frames are timed by their arrival, and encoded on a thread of each recording's own so the
event loop never waits for the encoder.
"""

import asyncio
import concurrent.futures
import re
import time
from fractions import Fraction
from pathlib import Path

import _common
import av
import cv2
import peer

MS = Fraction(1, 1000)


class Recording:
    """BGR pictures of one peer to an H.264 .mp4, written on a thread of its own."""

    def __init__(self, path: Path, who: str) -> None:
        self.path, self.who, self.frames = path, who, 0
        path.touch()  # claims the name
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"recording {path.name}")
        self._container = self._stream = self._start = None
        self._last_pts = -1

    async def add(self, picture) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write, picture, time.monotonic())

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)  # after any write in flight
        self._thread.shutdown()
        if self.frames:
            print(f"saved {self.path} ({self.frames} frames of {self.who})", flush=True)
        else:
            self.path.unlink(missing_ok=True)
            print(f"nothing recorded of {self.who}", flush=True)

    def _write(self, picture, arrived: float) -> None:
        if self._container is None:
            self._container = av.open(str(self.path), mode="w")
            self._stream = self._container.add_stream("libx264", rate=30, options={"preset": "veryfast"})
            self._stream.width, self._stream.height = picture.shape[1] // 2 * 2, picture.shape[0] // 2 * 2
            self._stream.pix_fmt, self._stream.codec_context.time_base = "yuv420p", MS
            self._start = arrived
        if picture.shape[:2] != (self._stream.height, self._stream.width):
            picture = cv2.resize(picture, (self._stream.width, self._stream.height))
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        frame.pts, frame.time_base = max(round((arrived - self._start) * 1000), self._last_pts + 1), MS
        self._last_pts = frame.pts
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def _close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()


def file_for(directory: Path, name: str) -> Path:
    stem = re.sub(r"[^\w@.-]+", "_", name).strip("._") or "peer"
    path, number = directory / f"{stem}.mp4", 1
    while path.exists():
        number += 1
        path = directory / f"{stem}-{number}.mp4"
    return path


async def record(room, member, directory: Path) -> None:
    recording = Recording(file_for(directory, member.name), member.name)
    print(f"recording {member.name} to {recording.path}", flush=True)
    try:
        async for picture in room.frames(member, latest=False):  # ends when the peer leaves
            await recording.add(picture)
    finally:  # also when cancelled (Ctrl-C); shielded so that a cancel cannot cut the file short
        await asyncio.shield(recording.close())


async def main(args):
    directory = Path(args.out)
    directory.mkdir(parents=True, exist_ok=True)
    async with peer.join(args.room, **_common.options(args)) as room, _common.PerPeer() as per_peer:
        print(f"{args.name}: recording room {args.room} into {directory}; Ctrl-C to stop", flush=True)
        async for event in room.events():
            if isinstance(event, peer.Connected):
                per_peer.start(event.member, record(room, event.member, directory))
            elif isinstance(event, (peer.CallEnded, peer.PeerLeft)):
                per_peer.stop(event.member)


if __name__ == "__main__":
    parser = _common.parser("Record the video of each peer who joins to its own file.")
    parser.add_argument("--out", default="recordings", metavar="DIR", help="where the files go (default ./recordings)")
    _common.run(main, parser.parse_args())
