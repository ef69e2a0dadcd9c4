"""``python -m peer --list-devices``: the listing as a person runs it on this machine, and the
parsers of what Linux says about its devices (V4L2's answer, /proc/asound, pactl) on samples
taken from real machines."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, child_env
from peer.cli import device_lines
from peer.media.devices import (CAMERA, CAP_DEVICE_CAPS, CAP_VIDEO_CAPTURE, CAP_VIDEO_CAPTURE_MPLANE, MICROPHONE,
                                SPEAKER, V4L2_CAPABILITY, VIDIOC_QUERYCAP, Device, alsa_cards, alsa_devices, capture_card,
                                pulse_devices)

CARDS = """\
 0 [PCH            ]: HDA-Intel - HDA Intel PCH
                      HDA Intel PCH at 0xf7f10000 irq 32
 1 [C920           ]: USB-Audio - HD Pro Webcam C920
                      HD Pro Webcam C920 at usb-0000:00:14.0-1, high speed
"""

PCM = """\
00-00: ALC892 Analog : ALC892 Analog : playback 1 : capture 1
00-01: ALC892 Digital : ALC892 Digital : playback 1
00-02: ALC892 Alt Analog : ALC892 Alt Analog : capture 1
01-00: USB Audio : USB Audio : capture 1
03-00: HDMI 0 : HDMI 0 : playback 1
garbage line
"""

SOURCES = """\
0\talsa_output.pci-0000_00_1f.3.analog-stereo.monitor\tmodule-alsa-card.c\ts16le 2ch 44100Hz\tSUSPENDED
1\talsa_input.pci-0000_00_1f.3.analog-stereo\tmodule-alsa-card.c\ts16le 2ch 44100Hz\tSUSPENDED
2\tnull.monitor\tmodule-null-sink.c\ts16le 2ch 44100Hz\tIDLE
"""

SINKS = "0\talsa_output.pci-0000_00_1f.3.analog-stereo\tmodule-alsa-card.c\ts16le 2ch 44100Hz\tSUSPENDED\n" \
        "1\tnull\tmodule-null-sink.c\ts16le 2ch 44100Hz\tIDLE\n"


def capability(card: bytes, caps: int, device_caps: int = 0) -> bytes:
    return V4L2_CAPABILITY.pack(b"uvcvideo", card, b"usb-0000:00:14.0-1", 0x50f00, caps, device_caps)


def test_a_capture_node_is_a_camera_and_a_metadata_node_is_not():
    both = CAP_VIDEO_CAPTURE | 0x00800000 | CAP_DEVICE_CAPS  # the device captures video and metadata
    assert capture_card(capability(b"HD Pro Webcam C920", both, CAP_VIDEO_CAPTURE)) == "HD Pro Webcam C920"
    assert capture_card(capability(b"HD Pro Webcam C920", both, 0x00800000)) is None, "the metadata node"
    assert capture_card(capability(b"old driver", CAP_VIDEO_CAPTURE)) == "old driver", "no device_caps"
    assert capture_card(capability(b"capture card", CAP_VIDEO_CAPTURE_MPLANE)) == "capture card"
    assert capture_card(capability(b"an output", 0x2)) is None, "video output only"
    assert capture_card(b"\x01" * 20) is None, "an answer of the wrong size"
    assert VIDIOC_QUERYCAP == 0x80685600, "linux/videodev2.h: _IOR('V', 0, struct v4l2_capability)"


def test_alsa_pcm_devices_are_microphones_and_speakers_named_by_card_id():
    devices = alsa_devices(PCM, alsa_cards(CARDS))
    assert devices == [
        Device(MICROPHONE, "hw:PCH,0", "HDA Intel PCH: ALC892 Analog"),
        Device(SPEAKER, "hw:PCH,0", "HDA Intel PCH: ALC892 Analog"),
        Device(SPEAKER, "hw:PCH,1", "HDA Intel PCH: ALC892 Digital"),
        Device(MICROPHONE, "hw:PCH,2", "HDA Intel PCH: ALC892 Alt Analog"),
        Device(MICROPHONE, "hw:C920,0", "HD Pro Webcam C920: USB Audio"),
        Device(SPEAKER, "hw:3,0", "HDMI 0"),  # a card missing from the cards list: its number
    ]
    assert alsa_devices("", {}) == [] and alsa_cards("") == {}


def test_pulse_sources_without_monitors_are_microphones_and_sinks_speakers():
    assert [device.id for device in pulse_devices(SOURCES, MICROPHONE)] == ["alsa_input.pci-0000_00_1f.3.analog-stereo"]
    assert [(device.kind, device.id) for device in pulse_devices(SINKS, SPEAKER)] == [
        (SPEAKER, "alsa_output.pci-0000_00_1f.3.analog-stereo"), (SPEAKER, "null")]
    assert pulse_devices("no tabs here\n\t\n", SPEAKER) == []


def test_each_line_says_the_flag_or_that_none_takes_it_yet():
    lines = device_lines([Device(CAMERA, "/dev/video0", "HD Pro Webcam C920", "--video /dev/video0"),
                          Device(CAMERA, "/dev/video10", "capture card", "--video /dev/video10"),
                          Device(SPEAKER, "null", "PulseAudio/PipeWire sink")])
    assert lines == ["camera      /dev/video0   HD Pro Webcam C920  (--video /dev/video0)",
                     "camera      /dev/video10  capture card  (--video /dev/video10)",
                     "microphone  none found",
                     "speaker     null  PulseAudio/PipeWire sink  (no flag takes a speaker yet)"]


def test_list_devices_on_this_machine_needs_no_room_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "peer", "--list-devices"], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == sorted((line.split()[0] for line in lines),
                                                         key=["camera", "microphone", "speaker"].index)
    for kind in ("camera", "microphone", "speaker"):
        mine = [line for line in lines if line.split()[0] == kind]
        assert mine, f"nothing said about the {kind}s: {done.stdout}"
        assert mine == [f"{kind:<10}  none found"] or all(re.fullmatch(rf"{kind} +\S+  .+  \(.+\)", line)
                                                          for line in mine), done.stdout
    if not list(Path("/dev").glob("video*")):
        assert f"{'camera':<10}  none found" in lines
    if not Path("/proc/asound").exists() and not shutil.which("pactl"):  # this machine: no sound at all
        assert lines[1:] == [f"{'microphone':<10}  none found", f"{'speaker':<10}  none found"]


def test_without_list_devices_the_room_is_still_required():
    done = subprocess.run([sys.executable, "-m", "peer"], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "the following arguments are required: --room" in done.stderr
