"""The microphone as an aiortc track, captured through miniaudio.

PyAV's wheels cannot reach a microphone through PulseAudio (their ALSA finds no configuration),
so the sound is captured by miniaudio, which talks to PulseAudio or PipeWire, ALSA, CoreAudio
and WASAPI itself. miniaudio calls back on its own thread with each block it captured; the
block goes to the event loop (``call_soon_threadsafe``), where it is cut into 20 ms frames, the
frame Opus sends. Those wait in a short queue that drops its oldest frame when the call reads
too slowly, so the delay from the microphone to the call never grows past that queue.

A microphone beside a loudspeaker hears what the speaker plays, and sends it back: the others
hear themselves, and with two such peers the sound goes round and round into a howl. There is
no echo canceller here yet, so the microphone is turned down (``duck``) while remote sound
plays, which keeps the loop's gain far below one. The speaker side tells it so through
``LocalMedia.playing``, which hands over the very blocks it plays: the far-end reference an
echo canceller would take (pywebrtc-audio, a young binding of WebRTC's, cancelled 20 dB of a
synthetic echo here at 0.15 ms per 10 ms; it needs that reference in step with the microphone).
Worse than a microphone beside the speaker is the speaker's own monitor, which PulseAudio makes
the default input where there is no microphone: the default microphone is never that one.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Generator, Optional

import av
import miniaudio
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ..errors import MediaError
from .devices import (MICROPHONE, SPEAKER, SoundDevice, SoundServerSilent, answered, close_device, find_sound_device,
                      quiet_alsa, sound_backends, sound_devices)

logger = logging.getLogger(__name__)

RATE = 48000
FRAME_SAMPLES = 960
"""20 ms at RATE: the frame Opus encodes."""
PERIOD_MS = 20
"""How much miniaudio captures before it calls back (10 ms stalled PulseAudio's null sinks here)."""
MAX_FRAMES = 5
"""At most 100 ms wait for the call to read them: older frames are dropped."""
DUCK_LEVEL = 0.1
"""The microphone's gain (-20 dB) while remote sound plays, so that what it hears of the
speaker comes back far quieter than it went out, and never builds up into a howl."""
DUCK_HOLD = 0.3
"""How long the microphone stays turned down after the last remote sound played: sound
takes its time from the speaker through the room into the microphone and its buffers."""
LOST_AFTER = 2.0
"""Seconds without a block from the device after which it is taken for gone (it calls back
every 20 ms, silence included, while it works)."""
_TIME_BASE = fractions.Fraction(1, RATE)


class NoMicrophone(MediaError):
    """The microphone could not be opened: no sound system answers, or it has no microphone."""


@dataclass(frozen=True)
class MicrophoneSpec:
    """Which microphone ``--audio`` names: ``device`` as ``--list-devices`` prints it, None for
    the system's default one."""

    device: Optional[str] = None
    channels: int = 1

    @property
    def what(self) -> str:
        return "the default microphone" if self.device is None else f"the microphone {self.device!r}"


def open_capture(spec: MicrophoneSpec) -> miniaudio.CaptureDevice:
    """Open (not start) the capture device at RATE, 16-bit. Blocks: it talks to the sound server.
    Raises MediaError when a named device is not there, NoMicrophone when it cannot be opened."""
    quiet_alsa()
    if spec.device is None:
        refuse_speakers_monitor(sound_devices())
    handle = None if spec.device is None else find_sound_device(MICROPHONE, spec.device).handle
    try:
        return miniaudio.CaptureDevice(miniaudio.SampleFormat.SIGNED16, spec.channels, RATE, PERIOD_MS, handle,
                                       backends=sound_backends(), app_name="peer")
    except miniaudio.MiniaudioError as error:
        raise NoMicrophone(f"cannot open {spec.what} ({error.args[0] if error.args else error})") from None


def refuse_speakers_monitor(devices: list[SoundDevice]) -> None:
    """Raise NoMicrophone when the default input is the monitor of the default output (PulseAudio
    makes it the default on a machine with no microphone): it hears exactly what the speaker
    plays, the others' own voices, and would send them back round and round. Named, it is taken."""
    default_in = next((device for device in devices if device.kind == MICROPHONE and device.default), None)
    default_out = next((device for device in devices if device.kind == SPEAKER and device.default), None)
    if default_in is not None and default_out is not None and default_in.id == f"{default_out.id}.monitor":
        raise NoMicrophone(f"the default input is {default_in.name!r}, what the speaker plays, which would send "
                           "the others their own sound back")


class MicrophoneTrack(MediaStreamTrack):
    """The sound of a capture device, in 20 ms frames of 16-bit samples at 48 kHz.

    Timestamps count the samples captured, those dropped included: a frame's ``pts`` is when it
    was heard, so the receiver's clock stays the microphone's. ``dropped`` counts frames the
    call did not read in time. A device that stops (unplugged, its sound server gone) is said
    once, and the call goes on without sound.
    """

    kind = "audio"

    def __init__(self, device: miniaudio.CaptureDevice, channels: int = 1) -> None:
        super().__init__()
        self._device: Optional[miniaudio.CaptureDevice] = device
        self._layout = "mono" if channels == 1 else "stereo"
        self._frame_bytes = FRAME_SAMPLES * channels * 2
        self._event_loop = asyncio.get_running_loop()
        self._pending = bytearray()
        self._frames: deque[tuple[int, bytes]] = deque(maxlen=MAX_FRAMES)
        self._ready = asyncio.Event()
        self._captured = 0
        """Samples cut into frames so far: the ``pts`` of the next frame."""
        self._ducked_until = 0.0
        self._ducked_level = 1.0
        self.dropped = 0
        self.lost = False
        """Whether the device stopped calling back: miniaudio says nothing when a device goes."""

    @classmethod
    async def open(cls, spec: MicrophoneSpec) -> "MicrophoneTrack":
        """Open and start the microphone, off the event loop (a sound server may take its time)."""
        try:
            device = await asyncio.to_thread(answered, functools.partial(open_capture, spec), close_device)
        except SoundServerSilent as error:
            raise NoMicrophone(f"cannot open {spec.what}: {error}") from None
        track = cls(device, spec.channels)
        receiver = track._receive()
        next(receiver)
        try:
            await asyncio.to_thread(answered, functools.partial(device.start, receiver))
        except (miniaudio.MiniaudioError, SoundServerSilent) as error:
            track.stop()
            raise NoMicrophone(f"cannot start {spec.what} ({error.args[0] if error.args else error})") from None
        logger.info("capturing %s through %s", spec.what, device.backend)
        return track

    def _receive(self) -> Generator[None, bytearray, None]:
        """On miniaudio's thread: each block captured is handed to the event loop."""
        while True:
            block = yield
            try:
                self._event_loop.call_soon_threadsafe(self._take, bytes(block))
            except RuntimeError:  # the event loop is closed: nobody to hand it to
                return

    def _take(self, block: bytes) -> None:
        """On the event loop: cut what was captured into frames, dropping the oldest when full."""
        self._pending += block
        while len(self._pending) >= self._frame_bytes:
            if len(self._frames) == MAX_FRAMES:
                self.dropped += 1
            self._frames.append((self._captured, bytes(self._pending[:self._frame_bytes])))
            del self._pending[:self._frame_bytes]
            self._captured += FRAME_SAMPLES
            self._ready.set()

    def duck(self, level: float = DUCK_LEVEL, seconds: float = DUCK_HOLD) -> None:
        """Turn the microphone down to ``level`` (0 silent, 1 as captured) for the next
        ``seconds``; then it comes back by itself. Each call starts the time again, so calling it
        for each block of remote sound played keeps it down while that sound lasts."""
        if not 0 <= level <= 1 or not seconds >= 0:
            raise ValueError(f"duck() takes a level from 0 to 1 and seconds >= 0, not {level!r} and {seconds!r}")
        self._ducked_level, self._ducked_until = level, time.monotonic() + seconds

    @property
    def gain(self) -> float:
        """The gain applied now: 1 unless ducked."""
        return self._ducked_level if time.monotonic() < self._ducked_until else 1.0

    async def recv(self) -> av.AudioFrame:
        while not self._frames and self.readyState == "live":
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), None if self.lost else LOST_AFTER)
            except asyncio.TimeoutError:
                self.lost = True
                logger.warning("the microphone stopped sending sound (unplugged, or the sound server went away); "
                               "the call goes on without it")
        if self.readyState != "live":
            raise MediaStreamError
        if self.lost:
            self.lost = False
            logger.warning("the microphone is back")
        pts, data = self._frames.popleft()
        samples = np.frombuffer(data, dtype="<i2")
        if (gain := self.gain) != 1.0:
            samples = (samples * gain).astype("<i2")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=self._layout)
        frame.sample_rate, frame.pts, frame.time_base = RATE, pts, _TIME_BASE
        return frame

    def stop(self) -> None:
        """Stop the track and close the device, on a thread: closing waits for miniaudio's
        (and for the sound server, which may not answer: ``close_device``)."""
        super().stop()
        self._ready.set()
        device, self._device = self._device, None
        if device is None:
            return
        try:
            asyncio.get_running_loop().run_in_executor(None, close_device, device)
        except RuntimeError:  # no event loop running: nothing to keep from waiting
            close_device(device)
