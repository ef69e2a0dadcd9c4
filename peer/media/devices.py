"""The cameras, microphones and speakers this machine offers, for ``python -m peer --list-devices``.

Linux only: cameras are the V4L2 capture nodes ``/dev/video*`` (a camera's metadata node is
no camera), microphones and speakers are ALSA's PCM devices (``/proc/asound``) and, where
``pactl`` answers, PulseAudio's or PipeWire's sources and sinks (a sink's ``.monitor`` is what
the speaker plays, not a microphone). The parsing is pure, on texts and bytes; the reading is
at the edges and blocks: it runs before any event loop.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

CAMERA, MICROPHONE, SPEAKER = "camera", "microphone", "speaker"
KINDS = (CAMERA, MICROPHONE, SPEAKER)

MAX_TEXT = 64 * 1024
"""The most read of one listing (a /proc file, pactl's output): far more than any machine's devices."""
MAX_NAME = 80
PACTL_TIMEOUT = 3.0
"""pactl with no sound server answers at once; one that hangs does not hold the listing up."""


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


def alsa_cards(text: str) -> dict[int, tuple[str, str]]:
    """``/proc/asound/cards``: card number to (id, name), e.g. ``0 [PCH ]: HDA-Intel - HDA Intel PCH``."""
    cards = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"\s*(\d+) \[(\S+)\s*\]: .*? - (.*)", line):
            cards[int(match.group(1))] = (match.group(2), _name(match.group(3)))
    return cards


def alsa_devices(pcm: str, cards: dict[int, tuple[str, str]]) -> list[Device]:
    """``/proc/asound/pcm`` (``00-00: ID : NAME : playback 1 : capture 1``) as microphones and
    speakers named ``hw:CARD,DEV``, CARD the card's id (stable when cards come and go) if known."""
    devices = []
    for line in pcm.splitlines():
        match = re.match(r"(\d+)-(\d+): ", line)
        if not match:
            continue
        card, number = int(match.group(1)), int(match.group(2))
        fields = [field.strip() for field in line[match.end():].split(" : ")]
        roles = {field.split()[0] for field in fields if re.fullmatch(r"(playback|capture) \d+", field)}
        names = [field for field in fields if field and field.split()[0] not in ("playback", "capture")]
        card_id, card_name = cards.get(card, (str(card), ""))
        name = _name(": ".join(part for part in (card_name, names[-1] if names else "") if part))
        for role, kind in (("capture", MICROPHONE), ("playback", SPEAKER)):
            if role in roles:
                devices.append(Device(kind, f"hw:{card_id},{number}", name))
    return devices


def pulse_devices(short_list: str, kind: str) -> list[Device]:
    """``pactl list short sources`` (kind MICROPHONE) or ``... sinks`` (SPEAKER): tab-separated
    lines whose second field is the name. Monitors of sinks are no microphones."""
    devices = []
    for line in short_list.splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or not fields[1] or (kind == MICROPHONE and fields[1].endswith(".monitor")):
            continue
        what = "PulseAudio/PipeWire " + ("source" if kind == MICROPHONE else "sink")
        devices.append(Device(kind, _name(fields[1]), what))
    return devices


def _name(text: str) -> str:
    return text.strip()[:MAX_NAME]


# The reading, at the edges

def list_devices() -> list[Device]:
    """Every camera, microphone and speaker found, in that order. Raises NotImplementedError
    off Linux (PyAV has no listing of avfoundation's or dshow's devices to rely on)."""
    if not sys.platform.startswith("linux"):
        raise NotImplementedError("listing devices is supported on Linux only")
    found = _cameras()
    cards = alsa_cards(_read(Path("/proc/asound/cards")))
    found += alsa_devices(_read(Path("/proc/asound/pcm")), cards)
    for kind, what in ((MICROPHONE, "sources"), (SPEAKER, "sinks")):
        found += pulse_devices(_pactl("list", "short", what), kind)
    return sorted(found, key=lambda device: KINDS.index(device.kind))


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


def _read(path: Path) -> str:
    try:
        with path.open("rb") as file:
            return file.read(MAX_TEXT).decode("utf-8", "replace")
    except OSError:
        return ""  # no sound card, or no ALSA in this kernel


def _pactl(*arguments: str) -> str:
    """pactl's output, or "" when there is no pactl or no sound server answering it."""
    program = shutil.which("pactl")
    if program is None:
        return ""
    try:
        done = subprocess.run([program, *arguments], capture_output=True, timeout=PACTL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.debug("pactl %s: %s", " ".join(arguments), error)
        return ""
    if done.returncode != 0:
        logger.debug("pactl %s: %s", " ".join(arguments), done.stderr[:200])
        return ""
    return done.stdout[:MAX_TEXT].decode("utf-8", "replace")
