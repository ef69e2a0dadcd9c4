"""Remote sound as plain samples: ``peer.AudioFrame`` and the conversion from PyAV's frames.

aiortc's Opus decoder gives PyAV frames whose sample format (planar ``s16p``/``fltp`` or
packed ``s16``), layout and rate are the decoder's business; a bot or a speaker wants one
shape it can count on. ``Converter`` turns each frame into ``int16`` samples shaped
(samples, channels) at a rate and layout of its choice (the frame's own, by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import av
import numpy as np


@dataclass(frozen=True, eq=False)
class AudioFrame:
    """Some milliseconds of one member's sound (20 ms from our peers and browsers).

    ``samples`` is ``int16`` shaped (samples, channels), channels interleaved as they are
    played (``samples[:, 0]`` is the left one of stereo); ``pts`` is when it starts in the
    sender's time, in seconds (None when the sender gave no time)."""

    samples: np.ndarray = field(repr=False)
    sample_rate: int
    channels: int
    layout: str
    pts: Optional[float]

    @property
    def duration(self) -> float:
        """Seconds of sound in this frame."""
        return len(self.samples) / self.sample_rate


class Converter:
    """PyAV audio frames to ``int16`` (samples, channels) arrays, at ``rate`` and ``layout``
    (None keeps the frame's own). One per stream: the resampler inside keeps the state that
    makes consecutive frames join without a click, and is made again when the stream's
    format changes (a renewed decoder), which PyAV's resampler refuses to take."""

    def __init__(self, rate: Optional[int] = None, layout: Optional[str] = None) -> None:
        self.rate = rate
        self.layout = layout
        self._resampler: Optional[av.AudioResampler] = None
        self._source: Optional[tuple[str, str, int]] = None

    def __call__(self, frame: av.AudioFrame) -> np.ndarray:
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if source != self._source:
            self._source = source
            self._resampler = av.AudioResampler(format="s16", layout=self.layout or frame.layout.name,
                                                rate=self.rate or frame.sample_rate)
        assert self._resampler is not None
        channels = len(av.AudioLayout(self.layout or frame.layout.name).channels)
        parts = [out.to_ndarray().reshape(-1, channels) for out in self._resampler.resample(frame)]
        return np.concatenate(parts) if parts else np.zeros((0, channels), np.int16)

    def frame(self, frame: av.AudioFrame) -> AudioFrame:
        """``frame`` as a ``peer.AudioFrame`` at the converter's rate and layout."""
        samples = self(frame)
        layout = self.layout or frame.layout.name
        pts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base is not None else None
        return AudioFrame(samples, self.rate or frame.sample_rate, samples.shape[1], layout, pts)
