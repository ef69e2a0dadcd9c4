"""bench/signaling_server.py runs: its quick version (50 clients, half a second a step), so that it
never rots. No figure is checked here (timing belongs in the bench; see docs/benchmarks.md)."""

import subprocess
import sys

from conftest import ROOT, child_env


def test_the_signaling_bench_runs_and_prints_its_table():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "signaling_server.py"), "--quick"], env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("join latency median", "relay latency p99", "server CPU per message", "relays at saturation"):
        assert row in done.stdout, done.stdout
