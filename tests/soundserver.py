"""A real sound server for the tests: PulseAudio from Debian with two null sinks and no sound card.

``speaker`` is the default output: what a peer plays lands there, and its monitor source records
it. ``mic`` is a sink the test plays into; its monitor, the default input, is the peer's
microphone. Each server has its own socket in a temporary directory; ``env`` points a child
process at it (``PULSE_SERVER``), so tests never touch a sound server of the machine.
"""

import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

SPEAKER = "speaker"
MIC = "mic"
RATE = 48000
CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=speaker sink_properties=device.description=Speaker
load-module module-null-sink sink_name=mic sink_properties=device.description=Microphone
set-default-sink speaker
set-default-source mic.monitor
"""
PROBE = "probe"
PROBE_CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=probe rate=48000 channels=2 channel_map=front-left,front-right
load-module module-remap-sink sink_name=mic master=probe channels=1 channel_map=mono master_channel_map=front-left remix=no sink_properties=device.description=Microphone
load-module module-remap-sink sink_name=speaker master=probe channels=1 channel_map=mono master_channel_map=front-right remix=no sink_properties=device.description=Speaker
set-default-sink speaker
set-default-source mic.monitor
"""
"""The same ``mic`` and ``speaker``, but as the left and right channel of one stereo null sink,
``probe``: its monitor records what enters the microphone and what the speaker plays in one
stream, on one clock, sample for sample comparable (bench/latency.py measures the delay so)."""


class SoundServer:
    """``pulseaudio`` running as this test's own sound server, until ``stop()``."""

    def __init__(self, binary: str, config: str = CONFIG) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="peer-sound-"))
        self.socket = self.home / "native"
        (self.home / "default.pa").write_text(config.format(socket=self.socket))
        # HOME and the runtime directory inside the temporary one: no cookie or state of the machine's user.
        self.env = dict(os.environ, HOME=str(self.home), XDG_RUNTIME_DIR=str(self.home),
                        PULSE_RUNTIME_PATH=str(self.home), PULSE_SERVER=f"unix:{self.socket}")
        self.proc = subprocess.Popen(
            [binary, "-n", "-F", str(self.home / "default.pa"), "--daemonize=no", "--exit-idle-time=-1",
             "--disallow-exit", "--use-pid-file=no", "--log-target=stderr"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {self.proc.stderr.read().decode(errors='replace')[-800:]}")
            if self.socket.exists() and self.pactl("info", check=False).returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("pulseaudio did not start within 10 s")

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, check=check, timeout=10)

    def record(self, seconds: float, source: str = SPEAKER + ".monitor", channels: int = 1) -> np.ndarray:
        """``seconds`` of ``source`` (the speaker's monitor: what peers played) as mono float samples at
        RATE (shaped (samples, channels) when ``channels`` > 1), from when the recorder starts
        streaming (about a second after this call)."""
        proc = subprocess.Popen(["parec", "--raw", "--format=s16le", f"--rate={RATE}", f"--channels={channels}",
                                 "--latency-msec=20", "-d", source],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        # Read as it comes, until enough samples came: parec takes a second or more to start
        # streaming, and stopped by a signal it drops what it has not written yet.
        data = bytearray()
        wanted = int(seconds * RATE) * 2 * channels
        deadline = time.monotonic() + seconds + 10
        while len(data) < wanted and (left := deadline - time.monotonic()) > 0:
            if select.select([proc.stdout], [], [], left)[0]:
                data += os.read(proc.stdout.fileno(), 65536)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        samples = np.frombuffer(bytes(data[: len(data) // (2 * channels) * 2 * channels]), dtype="<i2")
        samples = samples.astype(np.float32) / 32768
        return samples if channels == 1 else samples.reshape(-1, channels)

    def play(self, samples: np.ndarray, sink: str = MIC) -> subprocess.Popen:
        """Start playing mono float ``samples`` at RATE into ``sink`` (the microphone's); the player process."""
        proc = subprocess.Popen(["pacat", "--playback", "--raw", "--format=s16le", f"--rate={RATE}",
                                 "--channels=1", "-d", sink],
                                env=self.env, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None
        proc.stdin.write((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        proc.stdin.close()
        return proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.home, ignore_errors=True)


def tone(frequency: float, seconds: float, level: float = 0.5) -> np.ndarray:
    """A sine of ``frequency`` Hz, mono float samples at RATE."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int = RATE) -> Optional[float]:
    """The strongest frequency in ``samples`` (Hz), or None for silence: what a test checks a tone by."""
    if len(samples) < rate // 10 or float(np.sqrt(np.mean(samples ** 2))) < 1e-3:
        return None
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])
