"""One encode per local video frame for every connection of a room.

In a mesh each member is a connection of its own, and aiortc's ``RTCRtpSender`` encodes
whatever track it is given with an encoder of its own: a camera sent to three members was
encoded three times, which is what kept a room of four on a 2-core machine under 25 fps.
Here one ``SharedEncoder`` reads the local video, encodes each frame once per codec in use
(VP8 and H.264 can both be needed: members choose), and hands the packets to one
``EncodedTrack`` per connection; the sender only puts them into RTP packets.

Written against aiortc 1.16.0's ``RTCRtpSender``, whose private parts it relies on, each of
them checked before it is used (``EncodedTrack.bind``); when aiortc is not as expected the
track sends frames instead and the sender encodes them itself, as before:

- ``_next_encoded_frame`` hands anything that is not a PyAV ``Frame`` to its encoder's
  ``pack()`` instead of ``encode()``. The sender's encoder, the private ``__encoder``
  (``_RTCRtpSender__encoder``, made on the first frame when None), is set beforehand to a
  ``_Packer`` that returns the payloads already made.
- A keyframe request (PLI or FIR) from the receiver calls ``_send_keyframe()``, which only sets
  a private flag that packets ignore: it is replaced, on the sender, by a request to the shared
  encoder, so that any receiver's request gives every receiver of that codec a keyframe.
- REMB (the receiver's estimate of what the path carries) sets ``target_bitrate`` on the
  sender's encoder: the ``_Packer`` passes it on, and the shared encoder takes the lowest
  estimate of the receivers of a codec (the one every path can carry), within the bounds of
  ``peer.media.codecs`` (``--bitrate`` is the most; aiortc's floor, 250 kbit/s for VP8 and
  500 kbit/s for H.264, the least: one member on a poor path, or one claiming to be, lowers the
  picture of every receiver of its codec that far, no further), moving at most once a
  ``BITRATE_GAP`` (each move past a tenth is a keyframe for all of them).
- ``send(parameters)`` starts the sender with ``parameters.codecs[0]``: it is wrapped to learn
  which codec the connection sends.

A connection that starts late (a member joining a running call) or falls behind waits for a
keyframe and asks for one, so it gets a picture at the next frame.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, cast

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError

from ..stats import FrameMeter
from . import codecs

logger = logging.getLogger(__name__)

_ENCODER = "_RTCRtpSender__encoder"
"""aiortc 1.16.0's name of a sender's private encoder."""
MAX_QUEUED = 10
"""Encoded frames a connection may have waiting (a third of a second): more, and it has fallen
behind; it drops them and starts again from a keyframe (a gap in VP8 or H.264's chain of
references would leave the picture broken until one)."""
KEYFRAME_GAP = 0.2
"""Seconds between two keyframes forced by requests at least: every receiver gets each forced
keyframe, so a receiver asking again and again (a lossy path) must not flood the others."""
BITRATE_GAP = 1.0
"""Seconds between two moves of a codec's bitrate at least. aiortc 1.16's encoders start a new
context, whose first frame is a keyframe, when the bitrate moves by more than a tenth: a
receiver whose REMB swings (a hostile one can send one every millisecond) would otherwise give
every receiver of the codec keyframes only. An honest aiortc or browser receiver sends its
estimate about once a second, and moves it by less than a tenth a time."""
MAX_FAILURES = 3
"""Frames in a row a codec's encoder may fail on, made anew after each, before the video of
that codec ends (its receivers' senders stop, as aiortc's do when their encoder fails): one
frame an encoder refuses costs that frame, and a codec that cannot encode here (a PyAV without
libx264) ends the video of those who chose it, not everyone's."""
_NAL_KEY = {5, 7}  # an IDR slice, a sequence parameter set


@dataclass(frozen=True)
class Encoded:
    """One frame encoded for one codec: RTP payloads as aiortc's encoder makes them, and its
    timestamp (90 kHz), shared read-only by every connection sending that codec."""

    payloads: list[bytes]
    timestamp: int
    keyframe: bool
    width: int
    height: int


def is_keyframe(mime_type: str, payloads: list[bytes]) -> bool:
    """Whether the payloads (aiortc's packetisation) start a frame that needs no other: VP8's
    frame tag has the P bit clear; an H.264 frame holds an IDR slice or a parameter set."""
    if not payloads:
        return False
    if mime_type == "video/vp8":
        _, data = VpxPayloadDescriptor.parse(payloads[0])
        return bool(data) and not data[0] & 1
    for payload in payloads:
        kind = payload[0] & 0x1F
        if kind == 28 and len(payload) > 1:  # FU-A: the fragmented unit's type is in the next byte
            kind = payload[1] & 0x1F
        elif kind == 24 and len(payload) > 3:  # STAP-A: its first unit's type
            kind = payload[3] & 0x1F
        if kind in _NAL_KEY:
            return True
    return False


def private_copy(frame: av.VideoFrame, lock: threading.Lock) -> av.VideoFrame:
    """A yuv420p copy of ``frame``, which others share (PyAV converts through a converter cached
    on the frame, which two threads must not use at once: ``lock``), with its timestamp. Its
    width and height are even (a pixel less when not): 4:2:0 pictures cannot be odd, and a
    screen or a file sent as it comes can be."""
    width, height = max(2, frame.width & ~1), max(2, frame.height & ~1)
    with lock:
        picture = frame.to_ndarray(format="yuv420p", width=width, height=height)
    private = av.VideoFrame.from_ndarray(picture, format="yuv420p")
    private.pts, private.time_base = frame.pts, frame.time_base
    return private


class _Codec:
    """The encoder of one codec and what its receivers asked of it."""

    def __init__(self, mime_type: str, failures: int = 0) -> None:
        self.mime_type = mime_type
        self.encoder: Encoder = codecs.make_encoder(mime_type)
        self.failures = failures
        """Frames in a row its encoders failed on (set on the encoding thread)."""
        self.keyframe_wanted = False
        self.last_forced = -KEYFRAME_GAP
        self.bitrate_wanted: Optional[int] = None
        """The receivers' lowest estimate, not yet aimed at (``BITRATE_GAP``)."""
        self.bitrate_moved = -BITRATE_GAP
        self.busy = False
        """A frame is being encoded on the thread (set and cleared on the event loop)."""

    def force(self) -> bool:
        """Whether the next frame must be a keyframe (and note that it is)."""
        if not self.keyframe_wanted or time.monotonic() - self.last_forced < KEYFRAME_GAP:
            return False
        self.keyframe_wanted, self.last_forced = False, time.monotonic()
        return True

    def renewed(self) -> Optional["_Codec"]:
        """A fresh encoder (its first frame is a keyframe) for this one, which failed on the
        frame just encoded; None when it did so ``MAX_FAILURES`` times in a row."""
        return _Codec(self.mime_type, self.failures) if self.failures < MAX_FAILURES else None

    def aim(self, bitrate: Optional[int]) -> None:
        """Aim the encoder at ``bitrate`` (None: as it is) now, or once ``BITRATE_GAP`` has
        passed since it last moved (``settle``, before a frame is encoded)."""
        self.bitrate_wanted = bitrate
        self.settle()

    def settle(self) -> None:
        """Set the bitrate wanted, unless a frame is being encoded (``busy``): aiortc's encoders
        read it twice in a frame, and a move between the two made aiortc's libx264 context in
        place of ours (``codecs.FastH264Encoder``). ``SharedEncoder`` settles before each frame."""
        wanted = self.bitrate_wanted
        if wanted is None or self.busy or time.monotonic() - self.bitrate_moved < BITRATE_GAP:
            return
        self.bitrate_wanted = None
        if wanted != self.encoder.target_bitrate:  # type: ignore[attr-defined]
            self.encoder.target_bitrate = wanted  # type: ignore[attr-defined]
            self.bitrate_moved = time.monotonic()


class SharedEncoder:
    """Encodes the frames of ``source`` once per codec for all ``EncodedTrack``s of it.

    ``source`` is read only while a connection sends (it is a ``MediaRelay`` subscription: the
    window's preview reads the same frames). Frames are converted and encoded on a thread of
    its own, one frame at a time: while it encodes, newer frames replace older ones in the
    relay, so a slow machine sends fewer frames, never late ones. An encoder that fails on a
    frame is made anew (``MAX_FAILURES``); the source ending or failing ends all video sent.
    ``frames`` and ``encodes`` (per codec) count what was done, for tests and benchmarks.
    """

    def __init__(self, source: MediaStreamTrack, converting: threading.Lock,
                 fallback: Callable[[], MediaStreamTrack]) -> None:
        self._source = source
        self._converting = converting
        self.fallback = fallback
        """Makes a track of frames for a connection whose sender could not be bound."""
        self._outputs: set[EncodedTrack] = set()
        self._codecs: dict[str, _Codec] = {}
        self._task: Optional[asyncio.Future] = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="video-encode")
        self.ended = False
        self.frames = 0
        self.encodes: collections.Counter[str] = collections.Counter()

    def track(self) -> "EncodedTrack":
        """A new track of this video for one connection (``add_track`` binds it to its sender)."""
        return EncodedTrack(self)

    def encoder(self, mime_type: str) -> Optional[Encoder]:
        """aiortc's encoder of ``mime_type`` (``video/vp8``), while a connection sends that codec."""
        codec = self._codecs.get(mime_type)
        return codec.encoder if codec is not None else None

    def request_keyframe(self, mime_type: str) -> None:
        codec = self._codecs.get(mime_type)
        if codec is not None:
            codec.keyframe_wanted = True

    def bitrate_changed(self, mime_type: str) -> None:
        """A receiver's estimate changed, or a receiver left: the codec's encoder aims at the
        lowest of them (no sooner than ``BITRATE_GAP`` after its last move)."""
        estimates = [o.estimate for o in self._outputs if o.codec == mime_type and o.estimate]
        codec = self._codecs.get(mime_type)
        if codec is not None:
            codec.aim(min(estimates) if estimates else None)

    def join(self, output: "EncodedTrack") -> None:
        """``output`` starts sending: it waits for a keyframe, asked for now."""
        assert output.codec is not None
        if output.codec not in self._codecs:
            self._codecs[output.codec] = _Codec(output.codec)
        self._outputs.add(output)
        self.request_keyframe(output.codec)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def leave(self, output: "EncodedTrack") -> None:
        self._outputs.discard(output)
        if output.codec is not None and all(o.codec != output.codec for o in self._outputs):
            self._codecs.pop(output.codec, None)  # a later receiver of it gets a fresh encoder
        elif output.codec is not None:
            self.bitrate_changed(output.codec)  # the lowest estimate may have gone with it

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._outputs:
                frame = cast(av.VideoFrame, await self._source.recv())
                for codec in self._codecs.values():
                    codec.settle()
                jobs = [(codec, codec.force()) for codec in self._codecs.values()]
                if not jobs:
                    continue
                for codec, _ in jobs:
                    codec.busy = True
                try:
                    results = await loop.run_in_executor(self._thread, self._encode, frame, jobs)
                finally:
                    for codec, _ in jobs:
                        codec.busy = False
                self.frames += 1
                for codec, _ in jobs:
                    if codec.failures and self._codecs.get(codec.mime_type) is codec:
                        self._renew(codec)
                for mime_type, encoded in results:
                    for output in list(self._outputs):
                        if output.codec == mime_type:
                            output.deliver(encoded)
        except Exception as error:  # the source ended (MediaStreamError) or failed: so does the video sent
            if not isinstance(error, MediaStreamError):
                logger.exception("the video encoder failed")
            self.ended = True
            for output in list(self._outputs):
                output.wake()

    def _renew(self, codec: _Codec) -> None:
        """``codec`` failed on the frame just encoded: a fresh encoder for it, or its end."""
        fresh = codec.renewed()
        if fresh is not None:
            self._codecs[codec.mime_type] = fresh
            self.bitrate_changed(codec.mime_type)
            return
        logger.error("the %s encoder failed on %d frames in a row: the video ends for its receivers",
                     codec.mime_type, codec.failures)
        del self._codecs[codec.mime_type]  # a later receiver of it tries a fresh encoder
        for output in list(self._outputs):
            if output.codec == codec.mime_type:
                output.end()

    def _encode(self, frame: av.VideoFrame, jobs: list[tuple[_Codec, bool]]) -> list[tuple[str, Encoded]]:
        """On the encoding thread: one private yuv420p copy of ``frame`` (the relay's frame is
        shared with the preview; 4:2:0 needs even sides), encoded for each codec. An encoder
        changes the frame it is given: its picture type (I when forced), and PyAV rebases its
        pts to the codec's time base (libx264's is 1/30 s, on which frames 15 ms apart take one
        timestamp): each encoder gets them back as they came."""
        private = private_copy(frame, self._converting)
        pts, time_base = private.pts, private.time_base
        results = []
        for codec, force in jobs:
            private.pict_type = av.video.frame.PictureType.NONE
            private.pts, private.time_base = pts, time_base
            try:
                payloads, timestamp = codec.encoder.encode(private, force)
            except Exception:
                codec.failures += 1
                logger.exception("the %s encoder failed on a frame: it is made anew", codec.mime_type)
                continue
            codec.failures = 0
            self.encodes[codec.mime_type] += 1
            if payloads:
                results.append((codec.mime_type, Encoded(payloads, timestamp, is_keyframe(codec.mime_type, payloads),
                                                         private.width, private.height)))
        return results

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._source.stop()
        self._thread.shutdown(wait=False)
        self.ended = True
        for output in list(self._outputs):
            output.wake()


class EncodedTrack(MediaStreamTrack):
    """The local video for one connection, as frames the ``SharedEncoder`` encoded.

    Until ``bind`` hooked its sender and the sender started, it is nothing; a sender that could
    not be hooked gets frames from ``SharedEncoder.fallback`` and encodes them itself.
    """

    kind = "video"

    def __init__(self, shared: SharedEncoder) -> None:
        super().__init__()
        self._shared = shared
        self.codec: Optional[str] = None
        """The MIME type (lower case) of the codec the sender sends, once it started."""
        self.estimate: Optional[int] = None
        """The receiver's newest REMB, bits/s."""
        self.meter = FrameMeter()
        """The frames sent on this connection, for the call's statistics."""
        self._queue: collections.deque[Encoded] = collections.deque()
        self._arrived = asyncio.Event()
        self._waiting_key = True
        self._ended = False
        self._frames: Optional[MediaStreamTrack] = None

    def bind(self, sender: RTCRtpSender) -> bool:
        """Hook ``sender`` (aiortc 1.16.0's, see the module) to send what the shared encoder
        makes; False, and nothing changed, when it is not as expected."""
        try:
            hooked = getattr(sender, _ENCODER) is None and callable(getattr(sender, "_send_keyframe"))
        except AttributeError:
            hooked = False
        if not hooked:
            logger.info("aiortc's RTCRtpSender is not as expected (written for 1.16): each connection encodes its own")
            return False
        start = sender.send

        async def send(parameters: Any) -> None:
            if self.codec is None:  # aiortc starts a sender once: its later calls change nothing
                self.codec = parameters.codecs[0].mimeType.lower()
            await start(parameters)

        setattr(sender, "send", send)
        setattr(sender, "_send_keyframe", self.request_keyframe)
        setattr(sender, _ENCODER, _Packer(self))
        return True

    def request_keyframe(self) -> None:
        if self.codec is not None:
            self._shared.request_keyframe(self.codec)

    def set_estimate(self, bitrate: int) -> None:
        self.estimate = bitrate
        if self.codec is not None:
            self._shared.bitrate_changed(self.codec)

    def deliver(self, encoded: Encoded) -> None:
        """The shared encoder's newest frame for this connection's codec."""
        if self._waiting_key and not encoded.keyframe:
            return
        if len(self._queue) >= MAX_QUEUED:
            self._queue.clear()
            self._waiting_key = True
            self.request_keyframe()
            return
        self._waiting_key = False
        self._queue.append(encoded)
        self._arrived.set()

    def wake(self) -> None:
        self._arrived.set()

    def end(self) -> None:
        """Nothing more comes for this connection: its sender stops (``recv`` raises)."""
        self._ended = True
        self._arrived.set()

    async def recv(self) -> Any:
        if self._frames is None and self.codec is None and self.readyState == "live":
            self._frames = self._shared.fallback()  # the sender was not hooked: it encodes
        if self._frames is not None:
            frame = cast(av.VideoFrame, await self._frames.recv())
            self.meter.saw(frame)
            return frame
        if self not in self._shared._outputs and self.readyState == "live":
            self._shared.join(self)
        while not self._queue:
            if self.readyState != "live" or self._shared.ended or self._ended:
                raise MediaStreamError
            self._arrived.clear()
            await self._arrived.wait()
        encoded = self._queue.popleft()
        self.meter.saw(encoded)
        return encoded

    def stop(self) -> None:
        super().stop()
        self._shared.leave(self)
        self._arrived.set()
        if self._frames is not None:
            self._frames.stop()


class _Packer:
    """Stands in for the encoder of a hooked sender: the frames come encoded, so ``pack`` only
    hands over their payloads; REMB's ``target_bitrate`` goes to the shared encoder."""

    def __init__(self, track: EncodedTrack) -> None:
        self._track = track

    def pack(self, encoded: Encoded) -> tuple[list[bytes], int]:
        return encoded.payloads, encoded.timestamp

    @property
    def target_bitrate(self) -> int:
        return self._track.estimate or 0

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._track.set_estimate(bitrate)


def add_track(pc: RTCPeerConnection, track: MediaStreamTrack) -> RTCRtpSender:
    """``pc.addTrack(track)``, binding a shared encoder's track to its sender."""
    sender = pc.addTrack(track)
    if isinstance(track, EncodedTrack):
        track.bind(sender)
    return sender
