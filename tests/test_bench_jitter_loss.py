"""bench/jitter_loss.py runs: its quick version (2 s of simulated video a path), so that it never
rots. No figure is checked here (see the bench's docstring and docs/benchmarks.md)."""

import subprocess
import sys

from conftest import ROOT, child_env


def test_the_jitter_loss_bench_runs_and_prints_its_table():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "jitter_loss.py"), "--quick"], env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("frames whole", "keyframe requests", "frames not whole"):
        assert row in done.stdout, done.stdout
