"""``python -m peer --list-devices``: the listing as a person runs it on this machine, the parser
of V4L2's answer on samples taken from real machines, and how a sound device is found by name
(the listing through a real sound server is in test_microphone.py)."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, child_env
from peer.cli import device_lines
import pytest

from peer.errors import MediaError
from peer.media.devices import (CAMERA, CAP_DEVICE_CAPS, CAP_VIDEO_CAPTURE, CAP_VIDEO_CAPTURE_MPLANE, MICROPHONE,
                                SPEAKER, V4L2_CAPABILITY, VIDIOC_QUERYCAP, Device, SoundDevice, capture_card,
                                choose_sound_device, is_alsa_card, sound_flag)

SOUND = [SoundDevice(MICROPHONE, "Monitor of Speaker", "speaker.monitor"),
         SoundDevice(MICROPHONE, "Built-in Audio Analog Stereo", "alsa_input.pci-0000_00_1f.3.analog-stereo", True),
         SoundDevice(MICROPHONE, "HD Pro Webcam C920 Analog Stereo", "alsa_input.usb-046d_C920.analog-stereo"),
         SoundDevice(SPEAKER, "Built-in Audio Analog Stereo", "alsa_output.pci-0000_00_1f.3.analog-stereo", True)]


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


def test_a_sound_device_is_found_by_its_name_its_id_or_a_part_of_its_name():
    assert choose_sound_device(SOUND, MICROPHONE, "built-in audio analog stereo") == SOUND[1]
    assert choose_sound_device(SOUND, MICROPHONE, "speaker.monitor") == SOUND[0]
    assert choose_sound_device(SOUND, MICROPHONE, "C920") == SOUND[2]
    assert choose_sound_device(SOUND, SPEAKER, "Built-in") == SOUND[3], "a speaker's name is no microphone's"
    with pytest.raises(MediaError, match=r"'Analog' names several microphones: 'Built-in Audio Analog Stereo', "
                                         r"'HD Pro Webcam C920 Analog Stereo'\. Give the whole name\."):
        choose_sound_device(SOUND, MICROPHONE, "Analog")
    with pytest.raises(MediaError, match=r"no microphone named 'usb' \(found: 'Monitor of Speaker', "):
        choose_sound_device(SOUND, MICROPHONE, "usb")
    with pytest.raises(MediaError, match=r"no speaker named 'x' \(found: none found\)"):
        choose_sound_device([], SPEAKER, "x")


def test_the_flag_of_a_sound_device_is_quoted_for_a_shell():
    assert sound_flag(SOUND[0]) == "--audio 'Monitor of Speaker'"
    assert sound_flag(SoundDevice(SPEAKER, "it's", "x")) == """--speaker 'it'"'"'s'"""


def test_alsas_plugins_are_no_sound_cards():
    assert is_alsa_card("hw:0,0") and is_alsa_card("plughw:CARD=PCH,DEV=0") and is_alsa_card("default")
    assert not any(map(is_alsa_card, ["null", "pulse", "jack", "oss", "speex", "upmix", "samplerate"]))


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


def test_without_list_devices_the_room_is_still_required():
    done = subprocess.run([sys.executable, "-m", "peer"], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "the following arguments are required: --room" in done.stderr
