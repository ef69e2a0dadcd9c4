"""bench/latency.py runs: a couple of seconds of it, so that it never rots. No figure is
checked here (timing belongs in the bench, on a quiet machine; see docs/benchmarks.md)."""

import subprocess
import sys

from conftest import ROOT, child_env, require


def test_the_latency_bench_runs_and_prints_its_table():
    for program in ("pulseaudio", "pactl", "pacat", "parec"):
        require(program)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "latency.py"), "--seconds", "1", "--rounds", "1",
                           "--warm-up", "0.5"], env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "calibration, PulseAudio's loopback asked for" in done.stdout
    assert "| ours 1 |" in done.stdout and "| baseline 1 |" in done.stdout, done.stdout
