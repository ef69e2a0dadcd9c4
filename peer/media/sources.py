"""Local media sources: a camera, the screen, a file, FFmpeg's synthetic ``testsrc``, or nothing.

Every source is an aiortc ``MediaPlayer`` (PyAV reads on its own thread), shared between
calls through a ``MediaRelay`` so that each connection gets every frame; the video is encoded
once for all of them (``peer.media.encoding``). The camera can be
turned off and the microphone muted mid-call, and a source that ends (a camera unplugged, a
file played once) leaves a "camera off" picture: all on the same tracks, so no call has to
negotiate again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import fractions
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, Union, cast

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import MediaStreamError

from ..errors import MediaError
from .encoding import SharedEncoder, private_copy
from .microphone import MicrophoneSpec, MicrophoneTrack, NoMicrophone
from ..stats import FrameMeter

logger = logging.getLogger(__name__)

CAMERA = "camera"
TESTSRC = "testsrc"
SCREEN = "screen"
NONE = "none"
MIC = "mic"
SINE_MIN, SINE_MAX = 20, 20000
MEDIA_SUFFIXES = {".wav", ".mp3", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".aac", ".mp4", ".mkv", ".webm", ".mov"}
"""What an ``--audio`` value ends with when it means a file, not a microphone's name."""
PLAYING_LEVEL = 0.003
"""Remote sound quieter than this (RMS, -50 dB of full scale) is taken for silence: it does
not turn the microphone down."""
DEFAULT_SIZE = "640x480"
DEFAULT_FPS = 30
"""What a camera, ``testsrc`` and the screen are captured at unless told (the screen at its
own size): ``--video-size`` and ``--fps`` given make every source fit them (``Shaped``)."""
MAX_FPS = 60
MAX_SIDE = 4096
OFF_FPS = 4
"""The rate of the "camera off" picture: it does not change, so a few frames a second keep
the stream (and the receivers' decoders) going at little cost."""
OFF_GREY = 24
_TIME_BASE = fractions.Fraction(1, 90000)


@dataclass(frozen=True)
class PlayerSpec:
    """How to open one source with PyAV: ``av.open(file, format=..., options=...)``."""

    file: str
    format: Optional[str] = None
    options: dict = field(default_factory=dict)
    loop: bool = False
    what: str = ""


def camera_spec(device: Optional[str], size: str, fps: int) -> PlayerSpec:
    """The platform's camera through PyAV, or a named device on it."""
    options = {"framerate": str(fps), "video_size": size}
    if sys.platform.startswith("linux"):
        path = device or "/dev/video0"
        return PlayerSpec(path, "v4l2", options, what=f"camera {path}")
    if sys.platform == "darwin":
        return PlayerSpec(f"{device or 'default'}:none", "avfoundation", options, what=f"camera {device or 'default'}")
    return PlayerSpec(f"video={device or 'Integrated Camera'}", "dshow", options, what=f"camera {device or ''}".strip())


def screen_spec(fps: int) -> PlayerSpec:
    """The whole screen through PyAV: X11's ``x11grab`` on Linux (the display in $DISPLAY;
    a Wayland session shares what XWayland shows), ``avfoundation``'s first screen on macOS,
    ``gdigrab``'s desktop on Windows (those two untested here)."""
    options = {"framerate": str(fps)}
    if sys.platform == "darwin":
        return PlayerSpec("Capture screen 0:none", "avfoundation", {**options, "capture_cursor": "1"}, what="screen")
    if sys.platform == "win32":
        return PlayerSpec("desktop", "gdigrab", options, what="screen")
    display = os.environ.get("DISPLAY")
    if not display:
        raise MediaError("no screen to share: DISPLAY is not set. "
                         "Start it from a desktop session, or use --video testsrc.")
    return PlayerSpec(display, "x11grab", options, what=f"screen {display}")


def parse_video_size(text: str) -> tuple[int, int]:
    """``640x480`` as (width, height); ValueError with a sentence for people unless both are
    even (the encoders' 4:2:0 pictures need it) and from 16 to 4096."""
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()) or not all(
            16 <= int(side) <= MAX_SIDE and int(side) % 2 == 0 for side in (width, height)):
        raise ValueError(f"not a video size: {text!r} "
                         f"(WIDTHxHEIGHT, even numbers from 16 to {MAX_SIDE}, such as 640x480)")
    return int(width), int(height)


def check_fps(fps: Union[int, str]) -> int:
    """``fps`` (``15`` or ``"15"``) if it is a frame rate we capture at, 1 to 60; else ValueError."""
    if not str(fps).isdigit() or not 1 <= int(fps) <= MAX_FPS:
        raise ValueError(f"not a frame rate: {fps!r} (a whole number from 1 to {MAX_FPS})")
    return int(fps)


def video_spec(video: str, size: Optional[str] = None, fps: Optional[int] = None,
               loop: bool = True) -> Optional[PlayerSpec]:
    """Turn the ``--video`` value into what PyAV opens; None means no video. A media file is
    played in a loop unless ``loop`` is False."""
    if video == NONE:
        return None
    if video == SCREEN:
        return screen_spec(fps or DEFAULT_FPS)
    size, fps = size or DEFAULT_SIZE, fps or DEFAULT_FPS
    if video == CAMERA:
        return camera_spec(None, size, fps)
    if video == TESTSRC:
        return PlayerSpec(f"testsrc=size={size}:rate={fps},realtime", "lavfi", what="testsrc")
    if video.startswith("lavfi:"):
        return PlayerSpec(video[len("lavfi:"):], "lavfi", what=video)
    if video.startswith("/dev/video") or video.startswith("video="):
        return camera_spec(video.removeprefix("video="), size, fps)
    if os.path.isfile(video):
        return PlayerSpec(video, loop=loop, what=f"file {video}")
    if sys.platform in ("darwin", "win32"):
        return camera_spec(video, size, fps)
    raise MediaError(f"no such camera or file: {video}. "
                     "Give a device path, a media file, 'screen', 'testsrc' or 'none'.")


def audio_spec(audio: str, loop: bool = True) -> Union[PlayerSpec, MicrophoneSpec, None]:
    """Turn the ``--audio`` value into what opens it: ``none``, ``mic`` (the default microphone),
    ``sine`` or ``sine:FREQ``, ``lavfi:GRAPH``, a media file, or else a microphone's name as
    ``--list-devices`` prints it."""
    if audio == NONE:
        return None
    if audio == MIC:
        return MicrophoneSpec()
    if audio == "sine" or audio.startswith("sine:"):
        return PlayerSpec(f"sine=frequency={sine_frequency(audio)}:sample_rate=48000", "lavfi", what=audio)
    if audio.startswith("lavfi:"):
        return PlayerSpec(audio[len("lavfi:"):], "lavfi", what=audio)
    if os.path.isfile(audio):
        return PlayerSpec(audio, loop=loop, what=f"file {audio}")
    if not audio.strip() or audio.startswith(("/", "./", "../", "~")) or \
            Path(audio).suffix.lower() in MEDIA_SUFFIXES:
        raise MediaError(f"no such audio file: {audio}. Give a media file, mic, a microphone's name, sine, "
                         "lavfi:GRAPH or none.")
    return MicrophoneSpec(audio)


def sine_frequency(audio: str) -> float:
    """The frequency of ``sine`` (440 Hz) or ``sine:FREQ``, FREQ within what people hear."""
    text = audio.partition(":")[2] if ":" in audio else "440"
    try:
        frequency = float(text)
    except ValueError:
        frequency = float("nan")
    if not SINE_MIN <= frequency <= SINE_MAX:  # NaN fails too
        raise MediaError(f"--audio {audio}: the frequency must be a number of Hz from {SINE_MIN} to {SINE_MAX}, "
                         "e.g. sine:880.")
    return frequency


async def open_audio(spec: MicrophoneSpec) -> Optional[MicrophoneTrack]:
    """The microphone, or None when the default one cannot be opened (no sound server, no
    device): said once, as the call goes on without sound. A microphone named but not found
    is an error (a typo should not pass for silence)."""
    try:
        return await MicrophoneTrack.open(spec)
    except NoMicrophone as error:
        if spec.device is not None:
            raise
        logger.warning("no microphone: %s; the call goes on without sound (python -m peer --list-devices "
                       "shows what there is)", error)
        return None


def open_player(spec: PlayerSpec) -> Union[MediaPlayer, "LoopingPlayer"]:
    """Open a player, turning PyAV's errors into one line a person can act on."""
    try:
        player = MediaPlayer(spec.file, format=spec.format, options=spec.options or None)
    except av.error.FileNotFoundError:
        hint = " Plug one in, or use --video testsrc." if spec.what.startswith("camera") else ""
        raise MediaError(f"no {spec.what} found.{hint}") from None
    except av.error.OSError as error:
        if error.errno == errno.EBUSY:
            raise MediaError(f"the {spec.what} is in use by another program: close it and try again.") from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise MediaError(f"no permission to open the {spec.what}: add yourself to the 'video' group.") from None
        raise MediaError(f"cannot open the {spec.what}: {error.strerror or error}.") from None
    except av.error.FFmpegError as error:
        raise MediaError(f"cannot open the {spec.what}: {error}.") from None
    return LoopingPlayer(spec, player) if spec.loop else player


class LoopingPlayer:
    """A media file played again and again, as one continuous stream.

    aiortc's ``MediaPlayer(loop=True)`` ends its tracks after the first pass (it seeks
    back, but its decoder was drained at the end of the file and is never reset). Here
    each pass is a fresh player, opened when a track reaches the end of the previous one,
    and the timestamps of each pass carry on from the last, so receivers see no jump back.
    """

    def __init__(self, spec: PlayerSpec, first: MediaPlayer) -> None:
        self.spec = spec
        self.player = first
        self.video = _LoopingTrack(self, "video") if first.video is not None else None
        self.audio = _LoopingTrack(self, "audio") if first.audio is not None else None

    def after(self, finished: MediaPlayer) -> MediaPlayer:
        """The player of the pass after ``finished`` (the first track to get there opens it)."""
        if self.player is finished:
            player = open_player(PlayerSpec(self.spec.file, self.spec.format, self.spec.options, False,
                                            self.spec.what))
            assert isinstance(player, MediaPlayer)  # opened with loop False
            self.player = player
        return self.player


class _LoopingTrack(MediaStreamTrack):
    def __init__(self, source: LoopingPlayer, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._source = source
        self._player = source.player
        """The pass this track is in (the other track may be in the next one already)."""
        self._offset = 0
        """Added to the timestamps of this pass, in the track's time base."""
        self._next_pts = 0
        self._last_pts: Optional[int] = None

    async def recv(self) -> Any:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                frame = await getattr(self._player, self.kind).recv()
            except MediaStreamError:
                if self.readyState != "live" or self._last_pts is None:
                    raise  # stopped, or a pass without a single frame: looping would spin
                self._player = self._source.after(self._player)
                self._offset, self._last_pts = self._next_pts, None
                continue
            if frame.pts is not None:
                step = frame.samples if self.kind == "audio" else \
                    (frame.pts - self._last_pts if self._last_pts is not None and frame.pts > self._last_pts else 1)
                self._last_pts = frame.pts
                frame.pts += self._offset
                self._next_pts = frame.pts + step
            return frame

    def stop(self) -> None:
        super().stop()
        for player in {self._player, self._source.player}:
            track = getattr(player, self.kind)
            if track is not None:
                track.stop()


class LocalMedia:
    """The local tracks of a session, relayed so every call gets its own subscription.

    ``video`` and ``audio`` are switches around the sources: ``set_camera(False)`` sends the
    "camera off" picture instead of the camera, ``set_muted(True)`` sends silence, and a video
    source that ends sends the "camera off" picture from then on (``on_video_ended`` says when).
    """

    def __init__(self, video: Optional[MediaStreamTrack] = None, audio: Optional[MediaStreamTrack] = None,
                 players: Optional[list[Union[MediaPlayer, LoopingPlayer]]] = None,
                 size: tuple[int, int] = (640, 480), fps: Optional[int] = None) -> None:
        self.video = CameraSwitch(video, size) if video is not None else None
        self.fps = fps
        """The most frames a second sent, when asked for (``open``'s ``fps``)."""
        self.audio = MuteSwitch(audio) if audio is not None else None
        self.microphone = audio if isinstance(audio, MicrophoneTrack) else None
        """The microphone sent, when the sound is one (not a file, a tone or a bot's)."""
        self._players = players or []
        self._relay = MediaRelay()
        self._converting = threading.Lock()
        """Held while a relayed frame is converted (off the event loop: see ``PrivateFrames``)."""
        self._encoder: Optional[SharedEncoder] = None

    @classmethod
    async def open(cls, video: Union[str, MediaStreamTrack] = NONE, audio: Union[str, MediaStreamTrack] = NONE,
                   size: Optional[str] = None, fps: Optional[int] = None, loop: bool = True) -> "LocalMedia":
        """Open the sources named by ``video``/``audio`` (or take the tracks given) off the
        event loop, since a camera can take a second to open. A media file plays in a loop,
        or once with ``loop=False`` (then the "camera off" picture). With ``size`` (``640x480``)
        or ``fps`` the video sent has that size and at most that rate, whatever the source gives
        (a camera may not offer the size asked, a file has its own); without, a camera and
        ``testsrc`` are captured at 640x480 and 30 fps, the rest sent as they come.
        ValueError for a size or rate out of bounds (``parse_video_size``, ``check_fps``)."""
        shape = (parse_video_size(size) if size is not None else None, check_fps(fps) if fps is not None else None)
        event_loop = asyncio.get_running_loop()
        specs = [video_spec(video, size, fps, loop) if isinstance(video, str) else None,
                 audio_spec(audio, loop) if isinstance(audio, str) else None]
        players: list[Union[MediaPlayer, LoopingPlayer]] = []
        microphone: Optional[MicrophoneTrack] = None
        try:
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="media-open") as opener:
                for spec in specs:
                    if isinstance(spec, MicrophoneSpec):
                        microphone = await open_audio(spec)
                    elif spec is not None:
                        players.append(await event_loop.run_in_executor(opener, open_player, spec))
        except BaseException:
            for player in players:
                _stop_player(player)
            raise
        video_track = next((p.video for p in players if p.video is not None), None)
        audio_track = microphone or next((p.audio for p in players if p.audio is not None), None)
        if isinstance(video, MediaStreamTrack):
            video_track = video
        elif video != NONE and video_track is None:
            if microphone is not None:
                microphone.stop()
            raise MediaError(f"{video} has no video stream.")
        if isinstance(audio, MediaStreamTrack):
            audio_track = audio
        if video_track is not None and shape != (None, None):
            video_track = Shaped(video_track, *shape)
        return cls(video_track, audio_track, players, shape[0] or parse_video_size(DEFAULT_SIZE), shape[1])

    @property
    def camera_on(self) -> bool:
        """Whether the camera is on (``set_camera``); it may have ended even so (``video_ended``)."""
        return self.video is not None and self.video.camera_on

    def set_camera(self, on: bool) -> None:
        """Turn the camera off (the calls get the "camera off" picture) or on again."""
        if self.video is not None:
            self.video.turn(on)

    @property
    def video_ended(self) -> bool:
        """Whether the video source has ended (unplugged, a file played once): for good."""
        return self.video is not None and self.video.ended

    def on_video_ended(self, action: Callable[[], object]) -> None:
        """Run ``action`` (on the event loop) once, when the video source ends (in place of
        an action given before)."""
        if self.video is not None:
            self.video.when_ended = action

    @property
    def muted(self) -> bool:
        return self.audio is not None and self.audio.muted

    def set_muted(self, muted: bool) -> None:
        """Mute the sound source (the calls get silence) or unmute it."""
        if self.audio is not None:
            self.audio.muted = muted

    def playing(self, samples: np.ndarray) -> None:
        """What the speaker side calls with each block of remote sound it plays (any shape,
        int16 or float in -1..1): unless the block is near silence, the microphone is turned down
        while it plays and a moment after (``MicrophoneTrack.duck``), so that it does not send the
        speaker's sound back into a loop. Sound that is no microphone's is left as it is."""
        if self.microphone is None or samples.size == 0:
            return
        level = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        if samples.dtype.kind in "iu":
            level /= 32768
        if level >= PLAYING_LEVEL:
            self.microphone.duck()

    async def preview(self, fps: float = 10) -> AsyncIterator[np.ndarray]:
        """What the calls get of the video ("camera off" included), as BGR pictures, the newest
        at most ``fps`` times a second; ends when the media stops. Reading it starts the source
        (a file plays on) as a call does."""
        if self.video is None:
            return
        track = self._relay.subscribe(self.video, buffered=False)
        shown = 0.0
        try:
            while True:
                frame = cast(av.VideoFrame, await track.recv())
                if time.monotonic() - shown >= 1 / fps:
                    shown = time.monotonic()
                    yield await asyncio.to_thread(_converted, frame, self._converting, "bgr24")
        except MediaStreamError:
            return
        finally:
            track.stop()

    def subscribe(self) -> list[MediaStreamTrack]:
        """Fresh tracks for one connection (a track sent to two connections must be relayed).
        The video is encoded once for all connections (``peer.media.encoding``): its track
        must be added with ``encoding.add_track``. The sound is encoded per connection (Opus
        costs little)."""
        tracks: list[MediaStreamTrack] = []
        if self.audio is not None:
            tracks.append(self._relay.subscribe(self.audio))
        if self.video is not None:
            tracks.append(self.video_encoder.track())
        return tracks

    @property
    def video_encoder(self) -> SharedEncoder:
        """What encodes the video for every connection (made on first use)."""
        assert self.video is not None
        if self._encoder is None:
            self._encoder = SharedEncoder(self._relay.subscribe(self.video, buffered=False), self._converting,
                                          self._private_frames)
        return self._encoder

    def _private_frames(self) -> MediaStreamTrack:
        assert self.video is not None
        return PrivateFrames(self._relay.subscribe(self.video, buffered=False), self._converting)

    def stop(self) -> None:
        if self._encoder is not None:
            self._encoder.stop()
        for player in self._players:
            _stop_player(player)
        for track in (self.audio, self.video):
            if track is not None:
                track.stop()


def camera_off_picture(width: int, height: int) -> np.ndarray:
    """A dark BGR picture saying "camera off", at the size of the video it stands for."""
    import cv2  # here, not at the top: 26 MB a peer that never turns its camera off does without
    picture = np.full((height, width, 3), OFF_GREY, np.uint8)
    text, font = "camera off", cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.3, width / 400)
    thickness = max(1, round(scale * 1.5))
    (text_width, text_height), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((width - text_width) // 2, (height + text_height) // 2)
    cv2.putText(picture, text, origin, font, scale, (200, 200, 200), thickness, cv2.LINE_AA)
    return picture


class CameraSwitch(MediaStreamTrack):
    """The video sent: the source's frames, or the "camera off" picture while the camera is
    off and once the source has ended.

    While off, the source is still read (and its frames dropped): a camera's frames would
    otherwise pile up in the player's queue, and its timestamps go on for the picture. After
    the source ended, the picture's timestamps go on from the last frame by the clock.
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack, size: tuple[int, int]) -> None:
        super().__init__()
        self._source = source
        self.camera_on = True
        self.ended = False
        self.when_ended: Callable[[], object] = lambda: None
        self._size = size
        self._picture: Optional[np.ndarray] = None
        self._time_base = _TIME_BASE
        self._pts = -1
        """The newest timestamp sent or read, in ``_time_base``."""
        self._read_at = time.monotonic()
        self._next_off = 0.0

    def turn(self, on: bool) -> None:
        self.camera_on = on
        self._next_off = 0.0  # the picture goes at once

    async def recv(self) -> av.VideoFrame:
        while self.readyState == "live":
            if self.ended:
                await asyncio.sleep(max(0.0, self._next_off - time.monotonic()))
                if self.readyState != "live":
                    break
                ticks = int((time.monotonic() - self._read_at) / self._time_base)
                self._pts, self._read_at = max(self._pts + 1, self._pts + ticks), time.monotonic()
                return await self._off_frame()
            try:
                frame = cast(av.VideoFrame, await self._source.recv())
            except MediaStreamError:
                if self.readyState == "live":
                    self._end()
                continue
            self._size, self._read_at = (frame.width, frame.height), time.monotonic()
            if frame.pts is not None and frame.time_base is not None:
                self._pts, self._time_base = frame.pts, frame.time_base
            if self.camera_on:
                return frame
            if self._read_at >= self._next_off:
                return await self._off_frame()
        raise MediaStreamError

    def _end(self) -> None:
        logger.info("the video source ended: sending the camera-off picture")
        self.ended = True
        self._next_off = 0.0
        try:
            self.when_ended()
        except Exception:  # whoever is told must not stop the video
            logger.exception("the action on the end of the video failed")

    async def _off_frame(self) -> av.VideoFrame:
        self._next_off = time.monotonic() + 1 / OFF_FPS
        if self._picture is None or self._picture.shape[1::-1] != self._size:
            # off the event loop: the first one imports OpenCV (a few hundred ms)
            self._picture = await asyncio.to_thread(camera_off_picture, *self._size)
        frame = av.VideoFrame.from_ndarray(self._picture, format="bgr24")
        frame.pts, frame.time_base = self._pts, self._time_base
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class Shaped(MediaStreamTrack):
    """A video source made to fit ``--video-size`` and ``--fps``: frames of another size are
    scaled, and frames coming faster than ``fps`` dropped (by their timestamps), so what
    reaches the others is what was asked whatever the device or file gives.

    The source is read by a task of its own, at its own pace: scaling can be slower than the
    source (a big size, a busy machine), and the frames not read meanwhile would wait in
    aiortc's player, whose queue has no bound. Those are dropped; the newest goes.
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack, size: Optional[tuple[int, int]], fps: Optional[int]) -> None:
        super().__init__()
        self._source = source
        self._size = size
        self._period = 1 / fps if fps else 0.0
        self._due = -math.inf
        """When the next frame may go, in the source's seconds."""
        self._newest: Optional[av.VideoFrame] = None
        """The newest frame let through and not yet taken."""
        self._arrived = asyncio.Event()
        self._reader: Optional[asyncio.Future] = None

    async def recv(self) -> av.VideoFrame:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        while self._newest is None:
            if self.readyState != "live":
                raise MediaStreamError
            if self._reader.done():
                self._reader.result()  # raises what ended the source: MediaStreamError, or its failure
            self._arrived.clear()
            await self._arrived.wait()
        frame, self._newest = self._newest, None
        if self._size is None or (frame.width, frame.height) == self._size:
            return frame
        # off the event loop: scaling a screen of 1920x1080 takes milliseconds a frame
        scaled = await asyncio.to_thread(frame.reformat, width=self._size[0], height=self._size[1])
        scaled.pts, scaled.time_base = frame.pts, frame.time_base
        return scaled

    async def _read(self) -> None:
        try:
            while True:
                frame = cast(av.VideoFrame, await self._source.recv())
                if not self._period or self._in_time(frame):
                    self._newest = frame
                    self._arrived.set()
        finally:  # the source ended or failed: recv raises it
            self._arrived.set()

    def _in_time(self, frame: av.VideoFrame) -> bool:
        """Whether ``frame`` may go: not too soon after the last one sent (a tenth of a period's
        leeway for jitter); a source whose clock jumps (back, or ahead after a stall) starts over.
        Back is before the last frame sent, by any amount: a clip whose timestamps start again
        every half second never caught up with a bound of a second (and stopped)."""
        at = float(frame.time) if frame.time is not None else time.monotonic()
        if self._due - 2 * self._period < at < self._due - self._period / 10:
            return False
        self._due = at + self._period if abs(at - self._due) > self._period else self._due + self._period
        return True

    def stop(self) -> None:
        super().stop()
        if self._reader is not None:
            self._reader.cancel()
        self._arrived.set()
        self._source.stop()


class MuteSwitch(MediaStreamTrack):
    """The sound sent: the source's, or silence of the same shape and timing while muted."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source
        self.muted = False

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = cast(av.AudioFrame, await self._source.recv())
        if not self.muted:
            return frame
        silence = av.AudioFrame.from_ndarray(np.zeros_like(frame.to_ndarray()), format=frame.format.name,
                                             layout=frame.layout.name)
        silence.pts, silence.time_base, silence.sample_rate = frame.pts, frame.time_base, frame.sample_rate
        return silence

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class PrivateFrames(MediaStreamTrack):
    """Hands its consumer frames no other consumer shares: what a connection gets when its
    sender cannot take the shared encoder's packets (``peer.media.encoding``) and encodes itself.

    aiortc encodes on executor threads and mutates the frame it encodes (it converts it
    to yuv420p through a converter cached on the frame, and sets its picture type): two
    connections encoding one relayed frame at once crash the process. A private yuv420p
    copy per connection avoids that (``encoding.private_copy``). It is made off the event loop
    (a 1920x1080 screen's took 3 ms a frame and connection, a 4096x4096 picture's 41 ms).
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack, converting: threading.Lock) -> None:
        super().__init__()
        self._source = source
        self._converting = converting
        self.meter = FrameMeter()
        """The frames this connection encodes, for the call's statistics."""

    async def recv(self) -> av.VideoFrame:
        frame = cast(av.VideoFrame, await self._source.recv())  # the frames of a video track
        private = await asyncio.to_thread(private_copy, frame, self._converting)
        self.meter.saw(private)
        return private

    def stop(self) -> None:
        super().stop()
        self._source.stop()


def _converted(frame: av.VideoFrame, lock: threading.Lock, format: str) -> np.ndarray:
    """``frame``, which others share, as a picture in ``format``."""
    with lock:
        return frame.to_ndarray(format=format)


def _stop_player(player: Union[MediaPlayer, LoopingPlayer]) -> None:
    for track in (player.audio, player.video):
        if track is not None:
            track.stop()
