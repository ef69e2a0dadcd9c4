"""Check that pictures are FFmpeg's testsrc, not just that some frames arrived."""

import cv2  # noqa: F401  -- before av

import itertools
from functools import lru_cache
from pathlib import Path

import av
import numpy as np


def _small(picture: np.ndarray) -> np.ndarray:
    return cv2.resize(picture, (32, 24), interpolation=cv2.INTER_AREA).astype(float).ravel()


@lru_cache(maxsize=4)
def _testsrc(size: str) -> list:
    source = av.open(f"testsrc=size={size}:rate=30", format="lavfi")
    frames = [_small(f.to_ndarray(format="rgb24")) for f in itertools.islice(source.decode(video=0), 600)]
    source.close()
    return frames


def likeness_to_testsrc(picture: np.ndarray, size: str = "640x480", top: float = 1.0) -> float:
    """Best correlation of an RGB picture with any of the first 20 s of testsrc (1.0 = same).
    With ``top`` below 1, only that upper part of both is compared: what the window draws over
    the bottom of a tile (the verification code, the keys' hint) then does not count."""
    rows = max(1, round(24 * top))
    small = _small(picture).reshape(24, 32, 3)[:rows].ravel()
    if small.std() == 0:
        return 0.0
    return max(float(np.corrcoef(small, ref.reshape(24, 32, 3)[:rows].ravel())[0, 1]) for ref in _testsrc(size))


def recorded_frames(path: str) -> list:
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def make_clip(path: Path, seconds: float = 2, size=(320, 240), fps: int = 15) -> Path:
    """A short H.264 file of testsrc, as a media file a person would play."""
    source = av.open(f"testsrc=size={size[0]}x{size[1]}:rate={fps}", format="lavfi")
    with av.open(str(path), mode="w") as output:
        stream = output.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for frame in itertools.islice(source.decode(video=0), int(seconds * fps)):
            frame.pts = None
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    source.close()
    return path
