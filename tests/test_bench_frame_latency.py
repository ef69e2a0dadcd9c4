"""bench/frame_latency.py runs: its quick version (a second a side), so that it never rots. No
figure is checked here (timing belongs in the bench; see docs/benchmarks.md)."""

import subprocess
import sys

from conftest import ROOT, child_env


def test_the_frame_latency_bench_runs_and_prints_its_table():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "frame_latency.py"), "--quick"],
                          env=child_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("frame latency 640x480 VP8, median, ms", "frame latency 640x480 VP8, p99, ms",
                "median of the first", "median of the last"):
        assert row in done.stdout, done.stdout
