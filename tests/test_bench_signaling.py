"""bench/signaling_server.py runs: its quick version (50 clients, half a second a step; then one
and two nodes on a real redis-server), so that it never rots. No figure is checked here (timing
belongs in the bench; see docs/benchmarks.md)."""

import subprocess
import sys

from conftest import ROOT, child_env, require

BENCH = str(ROOT / "bench" / "signaling_server.py")


def test_the_signaling_bench_runs_and_prints_its_table():
    require("redis-server")  # the rows on Redis: fails in CI without it
    done = subprocess.run([sys.executable, BENCH, "--quick"], env=child_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("join latency median", "relay latency p99", "server CPU per message", "relays at saturation"):
        assert row in done.stdout, done.stdout
    for nodes in ("1 node,", "2 nodes,"):
        for row in ("joins per second", "CPU of nodes and Redis per join", "relay latency median at 200/s",
                    "relay latency p99 at 200/s", "CPU of nodes and Redis per message"):
            assert f"signaling on Redis, {nodes} 50 clients: {row}" in done.stdout, done.stdout


def test_without_redis_server_the_bench_says_so_in_one_line_when_node_rows_are_asked_for(tmp_path):
    done = subprocess.run([sys.executable, BENCH, "--quick", "--nodes", "1,2"], env=child_env(PATH=str(tmp_path)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "redis-server is not installed" in done.stderr, done.stderr
    assert done.stdout == ""
