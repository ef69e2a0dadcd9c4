"""bench/transfer.py runs: its quick version (a 2 MB file, a few chat lines), so that it never
rots. No figure is checked here (timing belongs in the bench; see docs/benchmarks.md)."""

import subprocess
import sys

from conftest import ROOT, child_env


def test_the_transfer_bench_runs_and_prints_its_table():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "transfer.py"), "--quick"],
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "data channel file transfer, 2 MB, MB/s" in done.stdout, done.stdout
    assert "chat round trip, p99, ms" in done.stdout, done.stdout
