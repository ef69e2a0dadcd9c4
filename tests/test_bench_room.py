"""bench/room.py runs: one short round of a room of four, ours and bare aiortc, so that it never
rots. No figure is checked here (timing belongs in the bench; see docs/benchmarks.md)."""

import subprocess
import sys

from conftest import ROOT, child_env


def test_the_room_bench_runs_and_prints_its_table():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "room.py"), "--quick"], env=child_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "room of four 640x480, fps of the slowest of 12 tiles" in done.stdout, done.stdout
    assert "CPU per peer" in done.stdout, done.stdout
