"""The cameras, microphones and speakers this machine offers, for ``python -m peer --list-devices``.

Cameras (Linux only) are the V4L2 capture nodes ``/dev/video*`` (a camera's metadata node is
no camera). Microphones and speakers are what miniaudio finds through the sound system it
reaches first (PulseAudio or PipeWire, else ALSA's sound cards; CoreAudio, WASAPI elsewhere),
named as miniaudio names them: PulseAudio's descriptions, such as "Monitor of Speaker". The
same listing opens a device by name (``find_sound_device``), so the names printed are the
names the flags take. Nothing is kept between calls: devices come and go, and a child process
finds its sound server through its own environment (``PULSE_SERVER``). The parsing is pure;
the reading is at the edges and blocks: off the event loop.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import logging
import os
import shlex
import struct
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import miniaudio

from ..errors import MediaError

logger = logging.getLogger(__name__)

CAMERA, MICROPHONE, SPEAKER = "camera", "microphone", "speaker"
KINDS = (CAMERA, MICROPHONE, SPEAKER)

MAX_NAME = 80
MAX_SOUND_DEVICES = 256
"""The most taken of one sound system's listing: far more than any machine has."""
ANSWER_WITHIN = 5.0
"""Seconds a sound server is given to answer (it takes tens of milliseconds). One that accepts
connections but never answers (stopped, stuck) would hold miniaudio forever: the peer would
never join, nor leave, nor exit."""

T = TypeVar("T")


class SoundServerSilent(MediaError):
    """The sound system did not answer within ``ANSWER_WITHIN`` seconds."""


@dataclass(frozen=True)
class Device:
    """One device: ``id`` is what names it to ALSA, PulseAudio or V4L2; ``flag`` is how to use
    it with ``python -m peer`` (``--video /dev/video0``), None when no flag takes it yet."""

    kind: str
    id: str
    name: str
    flag: Optional[str] = None


# V4L2: struct v4l2_capability and VIDIOC_QUERYCAP, from linux/videodev2.h
V4L2_CAPABILITY = struct.Struct("16s32s32sIII12x")
VIDIOC_QUERYCAP = 0x80000000 | (V4L2_CAPABILITY.size << 16) | (ord("V") << 8)
CAP_VIDEO_CAPTURE, CAP_VIDEO_CAPTURE_MPLANE, CAP_DEVICE_CAPS = 0x1, 0x1000, 0x80000000


def capture_card(capability: bytes) -> Optional[str]:
    """The card name in a VIDIOC_QUERYCAP answer when the node captures video, else None.
    ``device_caps`` (when the driver fills it) is this node's; ``capabilities`` the whole device's."""
    if len(capability) != V4L2_CAPABILITY.size:
        return None
    _, card, _, _, caps, device_caps = V4L2_CAPABILITY.unpack(capability)
    if caps & CAP_DEVICE_CAPS:
        caps = device_caps
    if not caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE):
        return None
    return _name(card.split(b"\0")[0].decode("utf-8", "replace"))


@dataclass(frozen=True)
class SoundDevice:
    """A microphone or speaker as miniaudio finds it: ``name`` is what the flags take, ``id`` the
    sound system's own name for it (PulseAudio's ``mic.monitor``, ALSA's ``hw:0,0``), ``default``
    whether the system takes it when none is named, ``handle`` what miniaudio opens it by."""

    kind: str
    name: str
    id: str
    default: bool = False
    handle: Any = field(default=None, compare=False, repr=False)


def sound_flag(device: SoundDevice) -> str:
    """The flag that picks ``device``, quoted for a shell: ``--audio 'Monitor of Microphone'``."""
    return f"{'--audio' if device.kind == MICROPHONE else '--speaker'} {shlex.quote(device.name)}"


def is_alsa_card(device_id: str) -> bool:
    """Whether an ALSA device is a sound card's (``hw:0,0``, ``default``) rather than one of the
    plugins ALSA lists beside them (``null`` discards everything, ``pulse`` is the sound server)."""
    return ":" in device_id or device_id == "default"


def choose_sound_device(devices: Sequence[SoundDevice], kind: str, wanted: str) -> SoundDevice:
    """The device of ``kind`` that ``wanted`` names: its name or id (any case), or else the one
    whose name contains it. Raises MediaError saying what there is when none or several match."""
    mine = [device for device in devices if device.kind == kind]
    key = wanted.strip().casefold()
    exact = [device for device in mine if key in (device.name.casefold(), device.id.casefold())]
    found = exact or [device for device in mine if key and key in device.name.casefold()]
    if len(found) == 1:
        return found[0]
    names = ", ".join(repr(device.name) for device in (found or mine)) or "none found"
    if found:
        raise MediaError(f"{wanted!r} names several {kind}s: {names}. Give the whole name.")
    raise MediaError(f"no {kind} named {wanted!r} (found: {names}); python -m peer --list-devices shows them.")


def _name(text: str) -> str:
    return text.strip()[:MAX_NAME]


# The reading, at the edges

def list_devices() -> list[Device]:
    """Every camera, microphone and speaker found, in that order. Cameras are listed on Linux
    only (PyAV has no listing of avfoundation's or dshow's devices to rely on)."""
    found = _cameras() if sys.platform.startswith("linux") else []
    try:
        sound = answered(sound_devices)
    except SoundServerSilent as error:
        logger.warning("no microphones or speakers listed: %s", error)
        sound = []
    found += [Device(device.kind, device.id, device.name, sound_flag(device)) for device in sound]
    return sorted(found, key=lambda device: KINDS.index(device.kind))


def answered(call: Callable[[], T], late: Optional[Callable[[T], object]] = None) -> T:
    """What ``call()`` returns (or raises), run on a thread of its own, or SoundServerSilent when
    it takes over ``ANSWER_WITHIN`` seconds. The thread, then left waiting for the sound server,
    is a daemon (it keeps no process from exiting) and hands a result that comes after all to
    ``late`` (to close a device nobody took). Blocks: call it off the event loop."""
    outcome: list[Any] = []
    lock = threading.Lock()
    done = threading.Event()

    def run() -> None:
        try:
            result: Any = (True, call())
        except BaseException as error:  # handed to the caller, who raises it
            result = (False, error)
        with lock:
            outcome.append(result)
            abandoned = done.is_set()
            done.set()
        if abandoned and result[0] and late is not None:
            late(result[1])

    threading.Thread(target=run, name="sound", daemon=True).start()
    done.wait(ANSWER_WITHIN)
    with lock:
        if not outcome:
            done.set()  # from now on a result is late
            raise SoundServerSilent(f"the sound server did not answer within {ANSWER_WITHIN:g} s")
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value


def close_device(device: Any) -> None:
    """Close a miniaudio device, giving up on a sound server that does not answer (see ``answered``).
    Blocks: call it off the event loop."""
    try:
        answered(device.close)
    except SoundServerSilent as error:
        logger.debug("a sound device left open: %s", error)


def find_sound_device(kind: str, wanted: str) -> SoundDevice:
    """The microphone or speaker (``kind``) that ``wanted`` names, as ``choose_sound_device``
    finds it among those there now. Blocks: call it off the event loop."""
    return choose_sound_device(sound_devices(), kind, wanted)


def sound_devices() -> list[SoundDevice]:
    """The microphones and speakers of the first sound system miniaudio reaches; none when
    there is no sound system at all. Blocks (it talks to the sound server)."""
    with sound_context() as context:
        return [] if context is None else _sound_devices_of(context)


def sound_backends() -> list[miniaudio.Backend]:
    """The sound systems to try, in miniaudio's order, without its "null" one: a device there
    is silence that looks like a microphone, and hides that there is none."""
    skipped = (miniaudio.Backend.NULL, miniaudio.Backend.CUSTOM)
    return sorted((backend for backend in miniaudio.get_enabled_backends() if backend not in skipped),
                  key=lambda backend: backend.value)


@contextmanager
def sound_context() -> Iterator[Any]:
    """A miniaudio context on the first sound system that answers, or None when none does."""
    quiet_alsa()
    ffi, lib = miniaudio.ffi, miniaudio.lib
    backends = sound_backends()
    context = ffi.new("ma_context*")
    if lib.ma_context_init(ffi.new("ma_backend[]", [backend.value for backend in backends]), len(backends),
                           ffi.NULL, context) != lib.MA_SUCCESS:
        yield None
        return
    try:
        yield context
    finally:
        lib.ma_context_uninit(context)


def _sound_devices_of(context: Any) -> list[SoundDevice]:
    ffi, lib = miniaudio.ffi, miniaudio.lib
    backend = ffi.string(lib.ma_get_backend_name(context[0].backend)).decode()
    playbacks, playback_count = ffi.new("ma_device_info**"), ffi.new("ma_uint32*")
    captures, capture_count = ffi.new("ma_device_info**"), ffi.new("ma_uint32*")
    if lib.ma_context_get_devices(context, playbacks, playback_count, captures, capture_count) != lib.MA_SUCCESS:
        logger.debug("%s lists no devices", backend)
        return []
    devices = []
    for kind, infos, count in ((MICROPHONE, captures, capture_count), (SPEAKER, playbacks, playback_count)):
        for info in (infos[0][index] for index in range(min(count[0], MAX_SOUND_DEVICES))):
            name = _name(ffi.string(info.name).decode("utf-8", "replace"))
            # PulseAudio's and ALSA's ids are C strings (elsewhere the id is no text: the name stands in),
            # kept whole: a speaker's monitor is known by its id (refuse_speakers_monitor), and real ones run long
            device_id = ffi.string(ffi.cast("char *", ffi.addressof(info.id)), ffi.sizeof(info.id)).decode(
                "utf-8", "replace") if backend in ("PulseAudio", "ALSA") else name
            if name and (backend != "ALSA" or is_alsa_card(device_id)):
                devices.append(SoundDevice(kind, name, device_id, bool(info.isDefault),
                                           ffi.new("ma_device_id*", info.id)))
    return devices


@functools.cache
def quiet_alsa() -> None:
    """Keep ALSA's library from printing its errors to stderr: where there is no sound card it
    prints dozens of lines for each device miniaudio tries, and the peer says what matters in one.
    Once per process; nothing to do where there is no libasound."""
    if not sys.platform.startswith("linux"):
        return
    try:
        alsa = ctypes.CDLL("libasound.so.2")
    except OSError:
        return
    alsa.snd_lib_error_set_handler(_ALSA_SILENCE)


# ALSA's handler is variadic (file, line, function, err, fmt, ...); one that reads none of them can stay fixed.
_ALSA_SILENCE = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_char_p)(lambda *_: None)


def _cameras() -> list[Device]:
    nodes = [path for path in Path("/dev").glob("video*") if path.name[len("video"):].isdigit()]
    cameras = []
    for path in sorted(nodes, key=lambda node: int(node.name[len("video"):])):
        try:
            card = _capture_card_of(path)
        except PermissionError:
            card = "no permission to open it: add yourself to the 'video' group"
        except OSError as error:
            logger.debug("%s: %s", path, error)
            continue
        if card is not None:
            cameras.append(Device(CAMERA, str(path), card, f"--video {path}"))
    return cameras


def _capture_card_of(path: Path) -> Optional[str]:
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        answer = bytearray(V4L2_CAPABILITY.size)
        try:
            fcntl.ioctl(descriptor, VIDIOC_QUERYCAP, answer)
        except OSError as error:
            if error.errno in (errno.ENOTTY, errno.EINVAL):
                return None  # not a V4L2 device
            raise
        return capture_card(bytes(answer))
    finally:
        os.close(descriptor)
