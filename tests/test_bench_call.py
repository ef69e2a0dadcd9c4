"""bench/call.py runs: a few seconds of it, so that it never rots. No figure is checked here
(timing belongs in the bench, on a quiet machine; see docs/benchmarks.md)."""

import subprocess
import sys

from conftest import ROOT, child_env


def test_the_call_bench_runs_and_prints_its_rows():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "call.py"), "--quick"], env=child_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("fps received, 640x480", "CPU per peer, 640x480", "peak memory per peer, 640x480",
                "join to first frame"):
        assert row in done.stdout, done.stdout
