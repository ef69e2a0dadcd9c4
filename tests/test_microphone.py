"""The sound a peer sends: the microphone (through the test's own PulseAudio, tests/soundserver.py),
a test tone, a bot's own samples (``peer.AudioSource``), and no sound system at all. Each sound is
checked where a person would hear it: its frequency at the other side of a real call."""

import asyncio
import re

import numpy as np
import pytest

import peer
from conftest import CONNECTED_WITHIN, LOCAL, child_env
from peer.errors import MediaError
from peer.media.microphone import DUCK_LEVEL, MicrophoneSpec, MicrophoneTrack
from peer.media.sources import audio_spec
from soundserver import RATE, dominant_frequency, tone
from test_api import join

CLI = ["--no-window", "--ice-host", LOCAL]
NO_SOUND_SYSTEM = {"PULSE_SERVER": "unix:/nonexistent/pulse/native", "ALSA_CONFIG_PATH": "/dev/null"}
"""No sound server answers, and ALSA reads an empty configuration: not a single device."""


def mono(block: np.ndarray) -> np.ndarray:
    """A received frame's samples (``Room.frames(kind="audio")``) as mono floats: PyAV gives
    packed samples as one row, channels interleaved (aiortc's Opus decoder: s16 stereo at 48 kHz),
    planar ones as a row per channel."""
    assert block.dtype == np.int16, block.dtype
    channels = block.reshape(-1, 2).T if block.shape[0] == 1 else block
    return channels.astype(np.float32).mean(axis=0) / 32768


def level(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples ** 2)))


async def heard(room: peer.Room, member: peer.Member, seconds: float = 0.5, timeout: float = 20) -> np.ndarray:
    """``seconds`` of what ``member`` sends, from the first frame that is not silence, mono at RATE."""
    async def listen() -> np.ndarray:
        blocks: list[np.ndarray] = []
        async for block in room.frames(member, kind="audio", latest=False):
            samples = mono(block)
            if blocks or level(samples) > 0.01:
                blocks.append(samples)
            if sum(map(len, blocks)) >= seconds * RATE:
                return np.concatenate(blocks)
        raise AssertionError(f"the audio of {member.name} ended")

    return await asyncio.wait_for(listen(), timeout)


async def playing(sound, samples: np.ndarray):
    """``sound.play`` on a thread: it writes the samples to a player that takes a few seconds of them
    at once and the rest at its pace, which would hold the event loop (and the call's heartbeat) up."""
    return await asyncio.to_thread(sound.play, samples)


async def assert_hears(room: peer.Room, member: peer.Member, frequency: float) -> None:
    found = dominant_frequency(await heard(room, member))
    assert found is not None and abs(found - frequency) < 10, f"heard {found} Hz, not {frequency} Hz"


async def assert_microphone_heard(server, processes, sound, room: str, audio: str, frequency: float):
    """A CLI peer started with ``--audio AUDIO`` while a tone of ``frequency`` plays into the
    test's microphone: a bot in the call hears that tone. The peer's process."""
    robot = processes.peer("--room", room, "--server", server.url, *CLI, "--video", "none", "--audio", audio,
                           name="robot", env=child_env(**sound.env))
    async with join(room, server, "alice") as alice:
        member = await alice.wait_for_peer(CONNECTED_WITHIN)
        await alice.wait_for(peer.TrackReceived, lambda event: event.kind == "audio")
        player = await playing(sound, tone(frequency, 4))
        try:
            await assert_hears(alice, member, frequency)
        finally:
            player.kill()
            player.wait()
    return robot


async def test_a_tone_played_into_the_microphone_is_heard_at_the_other_side(server, processes, sound):
    robot = await assert_microphone_heard(server, processes, sound, "mic", "mic", 660)
    assert "no microphone" not in robot.output and "Traceback" not in robot.output, robot.output


async def test_a_sine_is_heard_at_its_frequency(server, processes):
    processes.peer("--room", "sine", "--server", server.url, *CLI, "--video", "none", "--audio", "sine:880",
                   name="robot")
    async with join("sine", server, "alice") as alice:
        await assert_hears(alice, await alice.wait_for_peer(CONNECTED_WITHIN), 880)


async def test_a_microphone_that_goes_away_mid_call_is_said_once_and_the_call_goes_on(server, processes, sound):
    robot = processes.peer("--room", "gone", "--server", server.url, *CLI, "--video", "testsrc", "--fps", "10",
                           "--video-size", "160x120", "--audio", "mic", name="robot", env=child_env(**sound.env))
    async with join("gone", server, "alice") as alice:
        member = await alice.wait_for_peer(CONNECTED_WITHIN)
        await alice.wait_for_frames(10, member, kind="audio")
        sound.proc.kill()  # the sound server dies, as when a microphone is unplugged
        await asyncio.to_thread(robot.expect, "^peer: the microphone stopped sending sound")
        await alice.wait_for_frames(await alice.wait_for_frames(1, member) + 10, member)  # the video goes on
        assert not [event for event in alice._history if isinstance(event, peer.CallEnded)]
    assert robot.output.count("microphone") == 1 and "Traceback" not in robot.output, robot.output


def test_a_sine_out_of_hearing_is_refused_in_one_line(processes):
    robot = processes.peer("--room", "sine", "--server", "http://127.0.0.1:9", *CLI, "--video", "none",
                           "--audio", "sine:30000", name="robot", stdin=None)
    assert robot.wait() == 1
    assert robot.lines == ["peer: --audio sine:30000: the frequency must be a number of Hz from 20 to 20000, "
                           "e.g. sine:880."], robot.output
    for value in ("sine:5", "sine:loud", "sine:nan", "sine:inf", "sine:"):
        with pytest.raises(MediaError, match="the frequency must be a number of Hz from 20 to 20000"):
            audio_spec(value)


def test_each_audio_value_names_its_source():
    assert audio_spec("none") is None
    assert audio_spec("mic") == MicrophoneSpec()
    assert audio_spec("Monitor of Microphone") == MicrophoneSpec("Monitor of Microphone")
    assert audio_spec("sine").file == "sine=frequency=440.0:sample_rate=48000"
    assert audio_spec("sine:20").file == "sine=frequency=20.0:sample_rate=48000"
    assert audio_spec("lavfi:anoisesrc").file == "anoisesrc"
    assert audio_spec(__file__).what == f"file {__file__}"
    for missing_file in ("/nonexistent/song.mp3", "song.WAV", "./song", ""):
        with pytest.raises(MediaError, match=f"no such audio file: {re.escape(missing_file)}. Give a media file"):
            audio_spec(missing_file)


async def test_without_a_sound_system_the_peer_says_so_once_and_the_call_goes_on(server, processes):
    robot = processes.peer("--room", "quiet", "--server", server.url, *CLI, "--video", "testsrc", "--fps", "10",
                           "--video-size", "160x120", "--audio", "mic", name="robot",
                           env=child_env(**NO_SOUND_SYSTEM))
    async with join("quiet", server, "alice") as alice:
        member = await alice.wait_for_peer(CONNECTED_WITHIN)
        await alice.wait_for_frames(10, member)
        assert not [event for event in alice._history if isinstance(event, peer.TrackReceived)
                    and event.kind == "audio"], "a track of silence from no microphone"
    said = [line for line in robot.lines if "microphone" in line]
    assert len(said) == 1 and said[0].startswith("peer: no microphone: cannot open the default microphone"), \
        robot.output
    assert "ALSA" not in robot.output and "Traceback" not in robot.output, robot.output


def test_list_devices_shows_the_sound_servers_microphone_and_speaker_in_the_flags_form(processes, sound):
    robot = processes.peer("--list-devices", name="lister", env=child_env(**sound.env), stdin=None)
    assert robot.wait() == 0
    lines = [re.split(r"  +", line) for line in robot.lines]
    assert ["microphone", "mic.monitor", "Monitor of Microphone", "(--audio 'Monitor of Microphone')"] in lines
    assert ["speaker", "speaker", "Speaker", "(--speaker Speaker)"] in lines, robot.output


def test_list_devices_without_a_sound_system_says_none_found(processes):
    robot = processes.peer("--list-devices", name="lister", env=child_env(**NO_SOUND_SYSTEM), stdin=None)
    assert robot.wait() == 0
    assert robot.lines[-2:] == [f"{'microphone':<10}  none found", f"{'speaker':<10}  none found"], robot.output


async def test_a_microphone_is_picked_by_the_name_list_devices_prints(server, processes, sound):
    await assert_microphone_heard(server, processes, sound, "named", "Monitor of Microphone", 550)
    typo = processes.peer("--room", "named", "--server", server.url, *CLI, "--video", "none",
                          "--audio", "Monitor of Micraphone", name="typo", env=child_env(**sound.env), stdin=None)
    assert typo.wait() == 1
    assert typo.lines == ["peer: no microphone named 'Monitor of Micraphone' (found: 'Monitor of Speaker', "
                          "'Monitor of Microphone'); python -m peer --list-devices shows them."], typo.output


async def test_a_bots_pushed_samples_are_heard_and_push_waits_for_room(server):
    source = peer.AudioSource(sample_rate=RATE, channels=1, buffer=0.2)
    second = tone(440, 1.0)
    async with join("pushed", server, "talker", audio=source):
        # Nobody listens yet: a second of sound does not fit in 0.2 s of queue, so push waits.
        pushing = asyncio.ensure_future(source.push(second))
        await asyncio.sleep(0.3)
        assert not pushing.done(), "push() took more than its queue holds with nobody to send it to"
        async with join("pushed", server, "listener") as listener:
            await assert_hears(listener, await listener.wait_for_peer(CONNECTED_WITHIN), 440)
            await asyncio.wait_for(pushing, 10)


async def test_audio_source_refuses_what_is_no_sound_in_one_clear_error():
    mono_source, stereo = peer.AudioSource(), peer.AudioSource(sample_rate=16000, channels=2)
    wrong = [(mono_source, np.zeros((10, 2, 2), np.int16), r"shape \(n,\) or \(n, 1\)"),
             (stereo, np.zeros(10, np.int16), r"shape \(n, 2\) for 2 channel"),
             (mono_source, np.zeros(10, np.int32), "int16 samples, or float ones"),
             (mono_source, np.array([0.5, np.nan]), "NaN"),
             (mono_source, [0, 1, 2], "numpy array")]
    for source, samples, message in wrong:
        with pytest.raises(ValueError, match=message):
            await source.push(samples)
    for bad in ({"sample_rate": 1000}, {"channels": 3}, {"sample_rate": 44100.0}):
        with pytest.raises(ValueError):
            peer.AudioSource(**bad)
    await stereo.push(np.full((320, 2), 2.0))  # float beyond -1..1 is clipped
    frame = await stereo.recv()
    assert (frame.sample_rate, frame.samples, frame.layout.name) == (16000, 320, "stereo")
    assert frame.to_ndarray().max() == 32767
    silence = await stereo.recv()
    assert silence.pts == 320 and not silence.to_ndarray().any(), "nothing pushed: silence, the clock going on"


async def test_the_microphone_is_turned_down_while_remote_sound_plays(sound, monkeypatch):
    """The echo policy: a block of remote sound played ducks the microphone, silence does not."""
    monkeypatch.setenv("PULSE_SERVER", sound.env["PULSE_SERVER"])
    media = await peer.LocalMedia.open(audio="mic")
    try:
        assert isinstance(media.microphone, MicrophoneTrack)
        player = await playing(sound, tone(660, 4))

        async def loudness() -> float:
            blocks = []
            while len(blocks) < 10:
                samples = (await media.microphone.recv()).to_ndarray().astype(np.float32) / 32768
                if blocks or level(samples) > 0.01:
                    blocks.append(samples)
            return level(np.concatenate(blocks, axis=1))

        try:
            full = await asyncio.wait_for(loudness(), 10)
            media.playing(np.zeros(960, np.int16) + 3)  # near silence played: nothing to fear
            assert media.microphone.gain == 1.0
            media.playing(tone(440, 0.02))
            assert media.microphone.gain == DUCK_LEVEL
            media.microphone.duck(DUCK_LEVEL, seconds=60)  # held down for the measure, however slow the machine
            ducked = await asyncio.wait_for(loudness(), 10)
            media.microphone.duck(1.0, seconds=0)
            assert abs(ducked / full - DUCK_LEVEL) < 0.03, (full, ducked)
        finally:
            player.kill()
            player.wait()
        with pytest.raises(ValueError):
            media.microphone.duck(1.5)
    finally:
        media.stop()
    await asyncio.sleep(0.1)  # the device closes on a thread


async def test_the_speakers_own_monitor_is_no_default_microphone(sound, monkeypatch, caplog):
    """On a machine with no microphone PulseAudio makes the speaker's monitor the default input:
    taken, it would send the others back what they said. Named, it is taken."""
    monkeypatch.setenv("PULSE_SERVER", sound.env["PULSE_SERVER"])
    sound.pactl("set-default-source", "speaker.monitor")
    media = await peer.LocalMedia.open(audio="mic")
    assert media.audio is None and media.microphone is None
    assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == [
        "no microphone: the default input is 'Monitor of Speaker', what the speaker plays, which would send the "
        "others their own sound back; the call goes on without sound (python -m peer --list-devices shows what "
        "there is)"]
    media = await peer.LocalMedia.open(audio="Monitor of Speaker")
    try:
        assert isinstance(media.microphone, MicrophoneTrack)
    finally:
        media.stop()
    await asyncio.sleep(0.1)  # the device closes on a thread


async def test_the_microphone_never_queues_more_than_a_tenth_of_a_second(sound, monkeypatch):
    """A call that reads too slowly gets the newest sound, not a delay that grows."""
    monkeypatch.setenv("PULSE_SERVER", sound.env["PULSE_SERVER"])
    microphone = await MicrophoneTrack.open(MicrophoneSpec())
    try:
        first = await asyncio.wait_for(microphone.recv(), 10)
        await asyncio.sleep(0.5)  # nobody reads for half a second: 25 frames come, 5 are kept
        assert microphone.dropped > 0
        late = await microphone.recv()  # waits for nothing: no frame can come in between
        assert late.pts == first.pts + 960 * (microphone.dropped + 1), "the frames between are the dropped ones"
        assert (first.sample_rate, first.samples, first.layout.name, str(first.time_base)) == (RATE, 960, "mono",
                                                                                               "1/48000")
    finally:
        microphone.stop()


async def test_a_speakers_monitor_with_a_long_name_is_no_default_microphone_either(sound, monkeypatch, caplog):
    """PulseAudio's names for real cards run long (``alsa_output.pci-0000_00_1f.3-platform-skl_hda_dsp_generic.
    HiFi__hw_sofhdadsp__sink``, 84 characters): the monitor of such a speaker is refused all the same."""
    monkeypatch.setenv("PULSE_SERVER", sound.env["PULSE_SERVER"])
    sink = "alsa_output.pci-0000_00_1f.3-platform-skl_hda_dsp_generic.HiFi__hw_sofhdadsp__sink"
    sound.pactl("load-module", "module-null-sink", f"sink_name={sink}", "sink_properties=device.description=Laptop")
    sound.pactl("set-default-sink", sink)
    sound.pactl("set-default-source", f"{sink}.monitor")
    media = await peer.LocalMedia.open(audio="mic")
    if media.microphone is not None:
        media.stop()
        await asyncio.sleep(0.1)  # the device closes on a thread
    assert media.microphone is None, "the speaker's own monitor was taken for the microphone"
    assert any("'Monitor of Laptop', what the speaker plays" in record.getMessage() for record in caplog.records)
