"""How video is encoded: which codec is preferred, and the encoders' bitrates, in one place.

Written against aiortc 1.16.0. Its VP8 (libvpx) and H.264 (libx264, through PyAV) encoders
take their bitrate limits from module constants, ``aiortc.codecs.vpx`` and
``aiortc.codecs.h264``'s ``DEFAULT_BITRATE`` (where an encoder starts), ``MIN_BITRATE`` and
``MAX_BITRATE`` (the range REMB, the receiver's estimate of what the path carries, moves it
in); there is no ``setParameters``. Those constants are set here and nowhere else: on import,
to the values below (aiortc 1.16.0's own, written down so that a new aiortc cannot change what
we send unnoticed), and by ``set_bitrate`` when a bitrate is asked for: by ``ask``, for a
room as long as it is open (a bot that joins one room after another gets what it asks each time).

The H.264 encoder's frame rate is one too (``set_frame_rate``). Being module constants, they
are **process-wide**: every encoder made after ``set_bitrate``
in this process (every connection of every room) takes the newest setting; one started
before keeps its start value but is clamped to the new range at the next REMB. A process
that hosts bots wanting different bitrates has to run them in processes of their own.

A room's video is encoded once for all its connections (``peer.media.encoding``): REMB from
each receiver reaches that one encoder, which aims at the lowest estimate of the receivers of
its codec, clamped by the same constants (``--bitrate`` stays the most it sends).

The codec is per connection: ``prefer`` puts the codec asked for first in what a connection
offers and answers, the others after it, so a peer that cannot do it still gets a call.
"""

from __future__ import annotations

import fractions
import re
from typing import Iterator, Optional

import av
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.codecs import get_encoder, h264, vpx
from aiortc.codecs.base import Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

CODECS = {"vp8": "video/VP8", "h264": "video/H264"}
"""``--codec`` names and the MIME types they stand for."""

DEFAULT_FRAME_RATE = 30
"""aiortc 1.16.0's ``h264.MAX_FRAME_RATE``."""
DEFAULTS = {vpx: (250_000, 500_000, 1_500_000), h264: (500_000, 1_000_000, 3_000_000)}
"""Minimum, start and maximum bitrate (bits/s) of each encoder module when none is asked for."""

MIN_RATE = 100_000
MAX_RATE = 10_000_000
"""The bitrates ``--bitrate`` takes: below 100 kbit/s a picture is mush; above 10 Mbit/s
is more than a call needs, and more than aiortc's pacing-free sender should burst."""

_RATE = re.compile(r"(\d+(?:\.\d+)?)([kKmM]?)")


def parse_bitrate(text: str) -> int:
    """``500k``, ``2M``, ``1.5M`` or ``800000`` as bits per second (k and M are powers of 1000);
    ValueError with a sentence for people when it is not one, or out of bounds."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a bitrate: {text!r} (examples: 500k, 2M)")
    return check_bitrate(int(float(match.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[match.group(2).lower()]))


def check_bitrate(rate: int) -> int:
    """``rate`` (bits/s) if it is within the bounds we send at, else ValueError."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"bitrate {rate} bit/s is out of bounds: give one from 100k to 10M")
    return rate


def set_bitrate(rate: Optional[int]) -> None:
    """Encoders made from now on in this process start at ``rate`` bits/s and never go above it;
    REMB may lower it down to the encoder's usual floor (or ``rate``, if lower). None puts
    aiortc 1.16.0's defaults back. Process-wide: see the module's docstring."""
    for module, (low, start, high) in DEFAULTS.items():
        if rate is not None:
            low, start, high = min(low, rate), rate, rate
        for name, value in zip(("MIN_BITRATE", "DEFAULT_BITRATE", "MAX_BITRATE"), (low, start, high)):
            setattr(module, name, value)


def set_frame_rate(fps: int) -> None:
    """Tell the H.264 encoders made from now on in this process that frames come ``fps`` times a
    second. libx264 spreads its bitrate over the rate it is told (aiortc tells it
    ``h264.MAX_FRAME_RATE``, 30), not the rate frames come at: at 15 fps it sent a third of the
    bitrate asked. (aiortc's VP8 encoder keeps to the bitrate whatever the rate.) Process-wide."""
    h264.MAX_FRAME_RATE = fps


H264_PRESET = "veryfast"
"""libx264's speed preset for our H.264. aiortc 1.16.0 sets none, so libx264 runs its default,
``medium``: measured here 19.8 ms to encode a 640x480 frame, against 2.0 ms with ``veryfast``
(1.1 ms with ``ultrafast``, whose pictures are visibly worse at the same bitrate). At 30 fps
``medium`` spends most of each frame's 33 ms, and all of it is the call's delay."""


class FastH264Encoder(h264.H264Encoder):
    """aiortc 1.16.0's H.264 encoder with libx264 at ``H264_PRESET``.

    aiortc makes its libx264 context inside ``_encode_frame`` and only when there is none
    (first frame, or the size or bitrate moved by more than a tenth, when it drops the old
    one): this makes it first, in the same cases and with the same settings plus the preset,
    so aiortc's method finds one ready and only encodes."""

    def _encode_frame(self, frame: av.VideoFrame, force_keyframe: bool) -> Iterator[bytes]:
        codec = self.codec
        if codec is not None and (frame.width != codec.width or frame.height != codec.height
                                  or abs(self.target_bitrate - (codec.bit_rate or 0)) > 0.1 * (codec.bit_rate or 0)):
            self.buffer_data, self.buffer_pts, self.codec = b"", None, None
        if self.codec is None:
            self.codec = self._context(frame)
        return super()._encode_frame(frame, force_keyframe)

    def _context(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = frame.width, frame.height
        codec.bit_rate = self.target_bitrate
        codec.pix_fmt = "yuv420p"
        codec.framerate = fractions.Fraction(h264.MAX_FRAME_RATE, 1)
        codec.time_base = fractions.Fraction(1, h264.MAX_FRAME_RATE)
        codec.options = {"level": "31", "tune": "zerolatency", "preset": H264_PRESET}
        codec.profile = "Baseline"
        return codec


def make_encoder(mime_type: str) -> Encoder:
    """The encoder we send ``mime_type`` video with: aiortc's, H.264's made faster."""
    if mime_type.lower() == CODECS["h264"].lower():
        return FastH264Encoder()
    return get_encoder(RTCRtpCodecParameters(mimeType=mime_type, clockRate=90000, payloadType=0))


_asked: dict[object, tuple[Optional[int], Optional[int]]] = {}
"""The bitrate and frame rate each open room asked for (None: not asked), oldest first."""


def ask(room: object, rate: Optional[int], fps: Optional[int]) -> None:
    """Set the bitrate and H.264's frame rate ``room`` asks for, if any, until ``release``:
    each is the newest open room's that asked for it, else the default."""
    if rate is not None or fps is not None:
        _asked[room] = (rate, fps)
        _apply()


def release(room: object) -> None:
    """``room`` is closed: what it asked for goes (an earlier room's or the defaults come back)."""
    if _asked.pop(room, None) is not None:
        _apply()


def _apply() -> None:
    rates = [rate for rate, _ in _asked.values() if rate is not None]
    rates_of_frames = [fps for _, fps in _asked.values() if fps is not None]
    set_bitrate(rates[-1] if rates else None)
    set_frame_rate(rates_of_frames[-1] if rates_of_frames else DEFAULT_FRAME_RATE)


def preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """What aiortc can send of video, ``codec`` first (with its retransmission codec), the rest
    in aiortc's order after it."""
    wanted = CODECS[codec].lower()
    available = RTCRtpSender.getCapabilities("video").codecs
    return sorted(available, key=lambda c: c.mimeType.lower() != wanted)  # stable: keeps the order within


def prefer(pc: RTCPeerConnection, codec: Optional[str]) -> None:
    """Make ``codec`` the first of every video transceiver of ``pc`` (None: aiortc's order, or
    the other side's when answering). Called before ``createOffer``, and before ``createAnswer``
    when the remote offer was already taken: aiortc negotiates an answer's codecs in
    ``setRemoteDescription`` (its ``_codecs``, in the offer's order), so those are reordered
    too. aiortc sends with the first codec of that list, and the answer lists them in it."""
    if codec is None:
        return
    wanted = CODECS[codec].lower()
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(preferences(codec))
            transceiver._codecs = _first(transceiver._codecs, wanted)


def _first(codecs: list, mime_type: str) -> list:
    """``codecs`` with those of ``mime_type`` first, each followed by its rtx, as they were."""
    main = [c for c in codecs if c.mimeType.lower() != "video/rtx"]
    main.sort(key=lambda c: c.mimeType.lower() != mime_type)
    ordered = []
    for codec in main:
        ordered.append(codec)
        ordered += [c for c in codecs
                    if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") == codec.payloadType]
    return ordered


set_bitrate(None)
set_frame_rate(DEFAULT_FRAME_RATE)
