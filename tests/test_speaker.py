"""The speaker side of sound: what others send is played on the default output (the test's own
PulseAudio, tests/soundserver.py), mixed, bounded in delay; heard by recording the speaker's
monitor. Also the bot API's ``room.audio_frames()`` and a call recorded with its sound."""

import cv2  # noqa: F401  -- before av

import asyncio
import time
import os
import re
import signal
import sys

import av
import numpy as np
import pytest

import peer
from conftest import LOCAL, Process, Server, child_env
from peer.media.audio import Converter
from peer.media.microphone import DUCK_LEVEL
from peer.media.speaker import CAP, NO_OUTPUT, TARGET, JitterBuffer, mix
from soundserver import MIC, RATE, dominant_frequency
from test_api import join, until
from test_peer_errors import run_peer

TONE = "lavfi:sine=frequency={}:sample_rate=48000"
EAR = ["--video", "none", "--ice-host", LOCAL, "--no-window"]
"""A CLI peer that only listens."""


def sound_env(sound, **extra: str) -> dict:
    """A child's environment with the sound server's settings (its PULSE_SERVER, HOME, ...)."""
    return child_env(**{key: value for key, value in sound.env.items() if os.environ.get(key) != value}, **extra)


def level_at(samples: np.ndarray, frequency: float) -> float:
    """How strong ``frequency`` is in ``samples``, beside the strongest frequency (1.0: it is that one)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    bins = np.fft.rfftfreq(len(samples), 1 / RATE)
    near = spectrum[np.abs(bins - frequency) < 10]
    return float(near.max() / spectrum[1:].max())


async def record(sound, seconds: float) -> np.ndarray:
    return await asyncio.to_thread(sound.record, seconds)


@pytest.fixture
def room_of_three():
    started = Server("--room-size", "3")
    yield started
    started.stop()


# The CLI plays what it hears

async def test_a_tone_sent_is_heard_on_the_cli_peers_speaker(server, processes, sound):
    ear = processes.peer("--room", "hear", "--server", server.url, *EAR, name="ear", env=sound_env(sound))
    async with join("hear", server, "singer", audio=TONE.format(880)) as singer:
        await singer.wait_for_peer()
        await asyncio.to_thread(ear.expect, "connected to singer")
        heard = await record(sound, 2)
    assert dominant_frequency(heard) == pytest.approx(880, abs=10), ear.output
    assert NO_OUTPUT not in ear.output


async def test_two_members_are_mixed_on_one_speaker(room_of_three, processes, sound):
    server = room_of_three
    ear = processes.peer("--room", "mix", "--server", server.url, *EAR, name="ear", env=sound_env(sound))
    async with join("mix", server, "low", audio=TONE.format(880)) as low, \
            join("mix", server, "high", audio=TONE.format(1320)) as high:
        for member in ("low", "high"):
            await asyncio.to_thread(ear.expect, f"connected to {member}")
        heard = await record(sound, 2)
        assert len(low.connected) == len(high.connected) == 2
    assert dominant_frequency(heard) in (pytest.approx(880, abs=10), pytest.approx(1320, abs=10))
    assert level_at(heard, 880) > 0.5 and level_at(heard, 1320) > 0.5, "one of the two tones is missing"


async def test_no_audio_out_keeps_the_speaker_silent(server, processes, sound):
    ear = processes.peer("--room", "deaf", "--server", server.url, *EAR, "--no-audio-out", name="ear",
                         env=sound_env(sound))
    async with join("deaf", server, "singer", audio=TONE.format(880)) as singer:
        member = await singer.wait_for_peer()
        await asyncio.to_thread(ear.expect, "connected to singer")
        heard = await record(sound, 1.5)
        assert singer.connected == [member], "the call went down while the speaker was listened to"
    assert dominant_frequency(heard) is None


async def test_without_a_sound_server_the_peer_says_so_once_and_the_call_goes_on(room_of_three, processes, tmp_path):
    """No PulseAudio at its socket and an ALSA with no configuration: no output anywhere."""
    server = room_of_three
    alsa = tmp_path / "asound.conf"
    alsa.write_text("")
    env = child_env(PULSE_SERVER=f"unix:{tmp_path / 'no-such-socket'}", ALSA_CONFIG_PATH=str(alsa))
    ear = processes.peer("--room", "mute", "--server", server.url, *EAR, name="ear", env=env)
    async with join("mute", server, "low", audio=TONE.format(880)) as low, \
            join("mute", server, "high", audio=TONE.format(1320)):
        await asyncio.to_thread(ear.expect, "connected to high")
        await asyncio.to_thread(ear.expect, "connected to low")
        await asyncio.to_thread(ear.expect, "^" + re.escape(NO_OUTPUT) + "$")
        low.send_text("can you read me?")
        await asyncio.to_thread(ear.expect, r"^\[low\] can you read me\?$")
        ear.send("yes")
        await low.wait_for_message(lambda text: text == "yes")
    assert ear.output.count(NO_OUTPUT) == 1, ear.output
    assert "ALSA" not in ear.output and "Traceback" not in ear.output, ear.output


# Bots

async def test_a_bot_plays_nothing_until_asked(server, sound, monkeypatch):
    monkeypatch.setenv("PULSE_SERVER", sound.env["PULSE_SERVER"])
    async with join("bot-ear", server, "singer", audio=TONE.format(880)) as singer, \
            join("bot-ear", server, "bot") as bot:
        await singer.wait_for_peer()
        await bot.wait_for_frames(10, await bot.wait_for_peer(), kind="audio")
        assert dominant_frequency(await record(sound, 1)) is None, "a bot played without being asked"
        problems: list = []
        speaker = bot.play_audio(on_problem=problems.append)
        assert isinstance(speaker, peer.Speaker)
        heard = await record(sound, 1.5)
        assert problems == []
        await speaker.close()
        await speaker.close()  # twice is fine
        assert dominant_frequency(await record(sound, 1)) is None, "still playing after close()"
    assert dominant_frequency(heard) == pytest.approx(880, abs=10)


async def test_play_audio_twice_plays_each_member_once(server, sound, monkeypatch):
    """A second ``play_audio()`` on the same output would open a second stream of the same sound,
    a few milliseconds off the first: every voice twice, comb-filtered, twice as loud into the clip.
    It is the speaker already playing; once that is closed, a new one plays."""
    monkeypatch.setenv("PULSE_SERVER", sound.env["PULSE_SERVER"])
    async with join("twice", server, "singer", audio=TONE.format(880)) as singer, \
            join("twice", server, "bot") as bot:
        await singer.wait_for_peer()
        await bot.wait_for_frames(10, await bot.wait_for_peer(), kind="audio")
        first = bot.play_audio()
        assert bot.play_audio() is first
        await until(lambda: first.buffers or None, 10, "the sound to play")
        streams = await asyncio.to_thread(sound.pactl, "list", "short", "sink-inputs")
        assert len(streams.stdout.splitlines()) == 1, streams.stdout
        await first.close()
        again = bot.play_audio()
        assert again is not first
        heard = await record(sound, 1.5)
    assert dominant_frequency(heard) == pytest.approx(880, abs=10)


CLOSE_AT_ONCE = """
import asyncio, sys
import peer

async def main(server, rounds):
    for _ in range(rounds):
        async with peer.join("closing", server=server, name="bot", ice_hosts=["127.0.0.1"]) as bot:
            await bot.wait_for_frames(5, await bot.wait_for_peer(), kind="audio")
            speaker = bot.play_audio()
            while speaker._opening is None:  # the device is opening on its thread
                await asyncio.sleep(0)
            await asyncio.gather(speaker.close(), speaker.close(), speaker.close())  # and the room's, on leaving
    print("closed", flush=True)

asyncio.run(main(sys.argv[1], 5))
"""


async def test_a_speaker_closed_twice_at_once_while_its_device_opens_closes_it_once(server, processes, sound):
    """``close()`` is safe to call twice, also at once (from two tasks of a bot, and the room's as it
    closes): the device was closed by each at the same time, and libpulse aborted the process."""
    async with join("closing", server, "singer", audio=TONE.format(880)):
        bot = processes.add(Process([sys.executable, "-c", CLOSE_AT_ONCE, server.url], env=sound_env(sound),
                                    name="bot"))
        assert await asyncio.to_thread(bot.wait, 60) == 0, bot.output
    assert bot.lines == ["closed"], bot.output
    streams = await asyncio.to_thread(sound.pactl, "list", "short", "sink-inputs")
    assert streams.stdout == "", "a device left open"


async def test_members_who_leave_while_their_sound_plays_leave_nothing_behind(server, sound, monkeypatch):
    """A bot that plays a room for days sees members come and go: each one's jitter buffer, the
    task that fed it and the room's record of its tracks go with it, or memory grows with each visit."""
    monkeypatch.setenv("PULSE_SERVER", sound.env["PULSE_SERVER"])
    async with join("visits", server, "host") as host:
        speaker = host.play_audio()
        for visit in range(3):
            async with join("visits", server, f"visitor{visit}", audio=TONE.format(880)):
                await host.wait_for_frames(5, await host.wait_for_peer(), kind="audio")
                await until(lambda: speaker.buffers or None, 10, "the visitor's sound to play")
            await until(lambda: not speaker.buffers and not speaker._tasks, 10, "the visitor's buffer and task to go")
            await until(lambda: not host._remote, 10, "the room to forget the visitor's tracks")


async def test_a_room_playing_remote_sound_turns_its_own_microphone_down(server, sound, monkeypatch):
    """The echo policy end to end: the sound ``play_audio`` plays ducks the room's own microphone
    (a microphone beside the loudspeaker would send it back); before it plays, nothing is ducked."""
    monkeypatch.setenv("PULSE_SERVER", sound.env["PULSE_SERVER"])
    async with join("duck", server, "singer", audio=TONE.format(880)) as singer, \
            join("duck", server, "listener", audio="mic") as listener:
        await singer.wait_for_peer()
        await listener.wait_for_frames(10, await listener.wait_for_peer(), kind="audio")
        microphone = listener.session.media.microphone
        assert microphone is not None and microphone.gain == 1.0, "ducked before anything played"
        listener.play_audio()
        deadline = time.monotonic() + 10
        while microphone.gain != DUCK_LEVEL:
            assert time.monotonic() < deadline, "the microphone was not turned down while the tone played"
            await asyncio.sleep(0.05)


async def test_audio_frames_carry_their_rate_and_layout(server):
    async with join("frames", server, "singer", audio=TONE.format(880)) as singer, \
            join("frames", server, "bot") as bot:
        member = await bot.wait_for_peer()
        await singer.wait_for_peer()
        frames = []
        async for frame in bot.audio_frames(member):
            frames.append(frame)
            if len(frames) == 50:
                break
    assert all(isinstance(frame, peer.AudioFrame) for frame in frames)
    assert {(f.sample_rate, f.channels, f.layout, f.samples.dtype, f.samples.shape) for f in frames} == \
        {(48000, 2, "stereo", np.dtype(np.int16), (960, 2))}, "20 ms of 48 kHz stereo int16, (samples, channels)"
    assert frames[0].duration == pytest.approx(0.02)
    starts = [frame.pts for frame in frames]
    assert all(later > earlier for earlier, later in zip(starts, starts[1:])), starts
    left = np.concatenate([frame.samples[10:][:, 0] for frame in frames[10:]]).astype(float) / 32768
    assert dominant_frequency(left) == pytest.approx(880, abs=10)


# A call recorded with its picture and sound

async def test_a_recording_holds_moving_video_and_the_tone(server, processes, tmp_path):
    path = tmp_path / "call.mkv"
    sender = processes.peer("--room", "tape", "--server", server.url, "--video", "testsrc", "--video-size", "320x240",
                            "--fps", "15", "--audio", TONE.format(880), "--ice-host", LOCAL, "--no-window",
                            "--no-audio-out", name="sender")
    recorder = processes.peer("--room", "tape", "--server", server.url, *EAR, "--no-audio-out", "--record", str(path),
                              name="recorder")
    await asyncio.to_thread(recorder.expect, "connected to sender")
    await asyncio.sleep(2.5)
    recorder.interrupt()
    assert await asyncio.to_thread(recorder.wait) == 0
    recorder.expect(f"recorded sender to {path}")
    sender.stop()
    with av.open(str(path)) as container:
        pictures = [frame.to_ndarray(format="gray").astype(float) for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        convert = Converter(RATE, "mono")
        sound = np.concatenate([convert(frame)[:, 0] for frame in container.decode(audio=0)]).astype(float)
    assert len(pictures) > 15, f"{len(pictures)} pictures"
    assert np.abs(pictures[-1] - pictures[len(pictures) // 3]).mean() > 5, "the picture does not move"
    assert len(sound) > RATE
    peak = dominant_frequency(sound / np.abs(sound).max(), RATE)
    assert peak == pytest.approx(880, abs=10)


# The playback buffer alone (no device): bounded, and silent when it runs dry

FRAME = RATE // 50  # 20 ms


def chunk(value: int = 1000, samples: int = FRAME) -> np.ndarray:
    return np.full((samples, 2), value, np.int16)


def test_a_buffer_fed_faster_than_it_drains_never_holds_more_than_its_cap():
    now = [0.0]
    buffer = JitterBuffer(clock=lambda: now[0])
    highest = 0
    for step in range(1000):  # 20 s of sound pushed, 1 s of it pulled
        buffer.push(chunk(step % 100))
        highest = max(highest, buffer.level)
        if step % 20 == 19:
            assert buffer.pull(FRAME) is not None
        now[0] += 0.001
    assert highest <= CAP * RATE
    assert buffer.level <= CAP * RATE and buffer.dropped > 18 * RATE
    # what plays is the newest sound, not the oldest
    played = buffer.pull(FRAME)
    assert played is not None and played[0, 0] >= 80


def test_a_buffer_fed_too_slowly_plays_silence_and_fills_up_again():
    buffer = JitterBuffer()
    assert buffer.pull(480) is None, "nothing plays before the target is reached"
    buffer.push(chunk(1000))
    assert buffer.pull(480) is None, "20 ms is under the 40 ms target"
    buffer.push(chunk(1000))
    assert buffer.level == buffer.target == TARGET * RATE
    played = buffer.pull(3 * FRAME)
    assert played is not None and played.shape == (3 * FRAME, 2)
    assert (played[:2 * FRAME] == 1000).all() and (played[2 * FRAME:] == 0).all(), "the gap is silence"
    assert buffer.underruns == 1
    buffer.push(chunk(1000))
    assert buffer.pull(480) is None, "after running dry it waits for the target again"


def test_a_buffer_keeps_no_delay_from_a_late_start_or_a_burst():
    """A device that starts pulling late, then a burst (a network stall over): the delay
    comes back to the target instead of staying for the rest of the call."""
    buffer = JitterBuffer(window=1.0)
    for _ in range(50):  # a second of sound before the device's first pull
        buffer.push(chunk())
    assert buffer.level == buffer.target, "waiting to play, it keeps only the newest target"
    assert buffer.pull(FRAME) is not None
    for _ in range(5):  # a burst of 100 ms, under the cap
        buffer.push(chunk())
    assert buffer.level == buffer.target + 4 * FRAME
    for _ in range(110):  # then sound as fast as it plays: over two windows of a second
        assert buffer.pull(FRAME) is not None
        buffer.push(chunk())
    assert buffer.level <= buffer.target + FRAME, f"{buffer.level / RATE * 1000:.0f} ms kept"
    assert buffer.underruns == 0


def test_the_mix_sums_every_buffer_and_clips():
    loud, quiet, empty = JitterBuffer(), JitterBuffer(), JitterBuffer()
    for _ in range(2):
        loud.push(chunk(30000))
        quiet.push(chunk(-1000))
    mixed = mix((loud, quiet, empty), FRAME)
    assert mixed.dtype == np.int16 and (mixed == 29000).all()
    loud.push(chunk(30000))
    other = JitterBuffer()
    for _ in range(2):
        other.push(chunk(10000))
    assert (mix((loud, other), FRAME) == 32767).all(), "clipped, not wrapped around"


def test_a_buffer_refuses_samples_of_the_wrong_shape():
    with pytest.raises(ValueError):
        JitterBuffer().push(np.zeros((960,), np.int16))
    with pytest.raises(ValueError):
        JitterBuffer().push(np.zeros((960, 2), np.float32))



async def test_speaker_picks_an_output_by_name_and_a_wrong_name_is_said(server, processes, sound):
    """The sound server's other sink, "Microphone", is a speaker too: the sound goes there only."""
    ear = processes.peer("--room", "pick", "--server", server.url, *EAR, "--speaker", "Microphone", name="ear",
                         env=sound_env(sound))
    typo = processes.peer("--room", "typo", "--server", server.url, *EAR, "--speaker", "Headphones", name="typo",
                          env=sound_env(sound))
    async with join("pick", server, "singer", audio=TONE.format(880)) as singer, \
            join("typo", server, "singer", audio=TONE.format(1320)):
        await singer.wait_for_peer()
        await asyncio.to_thread(ear.expect, "connected to singer")
        await asyncio.to_thread(typo.expect, "^no speaker named 'Headphones' .*the call goes on$")
        chosen, default = await asyncio.gather(asyncio.to_thread(sound.record, 1.5, MIC + ".monitor"),
                                               record(sound, 1.5))
    assert dominant_frequency(chosen) == pytest.approx(880, abs=10)
    assert dominant_frequency(default) is None, "played on the default speaker too (or the typo's was)"


def test_speaker_and_no_audio_out_together_are_refused():
    result = run_peer("--room", "x", "--speaker", "Speaker", "--no-audio-out")
    assert result.returncode == 2
    assert "--speaker and --no-audio-out go against each other" in result.stderr


# A sound server that stops answering (stopped, stuck) holds nothing up

async def test_a_sound_server_that_stops_answering_holds_no_peer_in_or_out_of_a_room(room_of_three, processes, sound):
    """PulseAudio stopped (SIGSTOP) keeps accepting connections and never answers: a peer that had
    its devices open leaves on Ctrl-C, and one started now joins without sound, chats, and leaves;
    --list-devices still answers."""
    server = room_of_three
    before = processes.peer("--room", "stuck", "--server", server.url, *EAR, "--audio", "mic",
                            name="before", env=sound_env(sound))
    async with join("stuck", server, "singer", audio=TONE.format(880)) as singer:
        await singer.wait_for_peer()
        await asyncio.to_thread(before.expect, "connected to singer")
        assert dominant_frequency(await record(sound, 1)) == pytest.approx(880, abs=10), before.output
        sound.proc.send_signal(signal.SIGSTOP)
        try:
            after = processes.peer("--room", "stuck", "--server", server.url, *EAR, name="after", env=sound_env(sound))
            lister = processes.peer("--list-devices", name="lister", env=sound_env(sound), stdin=None)
            await asyncio.to_thread(after.expect, "^peer: no microphone: .*did not answer")
            await asyncio.to_thread(after.expect, "connected to singer")
            singer.send_text("still there?")
            await asyncio.to_thread(after.expect, r"^\[singer\] still there\?$")
            await asyncio.to_thread(after.expect, "^cannot play the sound others send: .*did not answer")
            assert await asyncio.to_thread(lister.wait) == 0, lister.output
            assert "none found" in lister.output, lister.output
            before.interrupt()
            after.interrupt()
            assert await asyncio.to_thread(before.wait) == 0, before.output
            assert await asyncio.to_thread(after.wait) == 0, after.output
        finally:
            sound.proc.send_signal(signal.SIGCONT)
    assert "Traceback" not in before.output + after.output


async def test_a_speaker_that_goes_away_mid_call_is_said_once_and_the_call_goes_on(server, processes, sound):
    """The sound server killed, as when the speaker is unplugged: miniaudio says nothing, the device
    just stops asking for sound. The person is told, once, as for the microphone."""
    ear = processes.peer("--room", "unplug", "--server", server.url, *EAR, "--audio", "none", name="ear",
                         env=sound_env(sound))
    async with join("unplug", server, "singer", audio=TONE.format(880)) as singer:
        await singer.wait_for_peer()
        await asyncio.to_thread(ear.expect, "connected to singer")
        assert dominant_frequency(await record(sound, 1)) == pytest.approx(880, abs=10), ear.output
        sound.proc.kill()
        await asyncio.to_thread(ear.expect, "^the speaker stopped playing .*the call goes on")
        singer.send_text("hear me?")
        await asyncio.to_thread(ear.expect, r"^\[singer\] hear me\?$")
        await asyncio.sleep(2.5)  # the tone goes on arriving for longer than a loss takes to be seen
        ear.interrupt()
        assert await asyncio.to_thread(ear.wait) == 0
    assert ear.output.count("speaker") == 1 and "Traceback" not in ear.output, ear.output
