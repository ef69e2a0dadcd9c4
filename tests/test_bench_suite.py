"""The suite's runner (bench/run.py) runs its modules and prints one table: CI's smoke run of
the cold start rows, and the runner's own rules with a stand-in module. No figure is checked
(timing belongs in the bench, on a quiet machine; see docs/benchmarks.md). Also what the cold
start relies on: the line a headless peer says when video arrives, and the imports it skips."""

import subprocess
import sys
import types

import pytest

import signaling
from bench import harness, run
from conftest import LOCAL, ROOT, child_env


def suite(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), *flags], env=child_env(),
                          capture_output=True, text=True, timeout=240)


def test_the_quick_cold_start_prints_a_table_of_its_rows_and_writes_it_in_markdown(tmp_path):
    markdown = tmp_path / "table.md"
    done = suite("--quick", "--only", "cold_start", "--markdown", str(markdown))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split("  ")[0] == "measure" and "bare aiortc: median (min-max)" in lines[0], done.stdout
    rows = [line for line in lines[1:] if line.startswith("cold start")]
    assert len(rows) == 3, done.stdout  # the whole start, the peers' part of it, the CPU it took
    written = markdown.read_text().splitlines()
    assert written[0].startswith("| measure |") and written[1].startswith("| --- |")
    assert len(written) == 5 and all(line.startswith("| cold start") for line in written[2:]), written


def test_an_unknown_module_is_refused_by_name_before_anything_runs():
    done = suite("--quick", "--only", "cold_start", "no_such_bench")
    assert done.returncode == 2
    assert "unknown bench module 'no_such_bench'" in done.stderr and "cold_start" in done.stderr, done.stderr
    assert done.stdout == "" and "bench: cold_start ..." not in done.stderr  # cold_start did not run


@pytest.fixture
def stand_in(monkeypatch):
    """A module the suite lists as ``stand_in``, measuring nothing, and one listed but missing."""
    module, broken = types.ModuleType("bench.stand_in"), types.ModuleType("bench.broken")
    asked = []

    async def measure(rounds, seconds, quick):
        asked.append((rounds, seconds, quick))
        return [harness.Row("stand-in", "ms", ours=[1.0, 3.0], bare=[2.0, 2.0])]

    async def fail(rounds, seconds, quick):
        raise RuntimeError("a child exited")

    module.measure, broken.measure = measure, fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.stand_in", module)
    monkeypatch.setitem(sys.modules, "bench.broken", broken)
    monkeypatch.setattr(run, "MODULES", ["stand_in", "broken", "missing_one"])
    return asked


async def test_the_runner_awaits_each_modules_measure_with_the_rounds_it_was_given(stand_in):
    rows, failed = await run.run(["stand_in", "stand_in"], 3, 2.5, False)
    assert stand_in == [(3, 2.5, False)] * 2 and failed == []
    assert [row.cells() for row in rows] == [["stand-in, ms", "2.0 (1.0-3.0)", "2.0 (2.0-2.0)", "1.00"]] * 2


async def test_a_listed_module_that_is_missing_is_an_error_only_when_selected(stand_in):
    assert len((await run.run(["stand_in"], 1, 1, True))[0]) == 1
    with pytest.raises(run.SuiteError, match="'missing_one' is listed but bench/missing_one.py is missing"):
        await run.run(["stand_in", "missing_one"], 1, 1, True)
    assert stand_in == [(1, 1, True)]  # checked before anything ran


def test_quick_means_one_round_of_a_second_unless_told_otherwise():
    quick = run.parse_args(["--quick"])
    assert (quick.rounds, quick.seconds, quick.quick) == (run.QUICK_ROUNDS, run.QUICK_SECONDS, True)
    full = run.parse_args(["--rounds", "7", "--only", "cold_start"])
    assert (full.rounds, full.seconds, full.only) == (7, run.DEFAULT_SECONDS, ["cold_start"])


def test_a_headless_peer_says_when_the_others_video_arrives(server, processes):
    flags = ["--room", "arrives", "--server", server.url, "--video", "testsrc", "--video-size", "160x120",
             "--fps", "10", "--audio", "none", "--no-audio-out", "--no-window", "--ice-host", LOCAL]
    one, two = (processes.peer(*flags, name=name) for name in ("one", "two"))
    one.expect(r"^video from two arrives$")
    two.expect(r"^video from one arrives$")


def test_a_peer_imports_neither_the_prompt_nor_the_signaling_server_it_does_not_use():
    """prompt-toolkit is for a person at a terminal, the server for a peer hosting one: a
    headless peer joining a server elsewhere (what the cold start times) skips both."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, peer.cli; print(*sorted(name for name in sys.modules "
                               "if name.split('.')[0] == 'prompt_toolkit' or name in ('signaling.server', 'aiohttp.web')))"],
        env=child_env(), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert loaded.returncode == 0 and loaded.stdout.split() == [], loaded.stdout + loaded.stderr


def test_the_signaling_packages_names_are_there_when_asked_for():
    from signaling import DEFAULT_PORT, HostedServer, ServerConfig, SignalingServer, embedded_server, host_server
    assert isinstance(embedded_server(), SignalingServer) and DEFAULT_PORT == 8080
    assert all(callable(thing) for thing in (HostedServer, ServerConfig, host_server))
    assert all(hasattr(signaling, name) for name in signaling.__all__)
    with pytest.raises(AttributeError):
        signaling.no_such_name  # noqa: B018


async def test_a_module_that_fails_is_named_and_the_others_still_give_their_rows(stand_in, capsys):
    rows, failed = await run.run(["broken", "stand_in"], 1, 1, True)
    assert failed == ["broken"] and [row.name for row in rows] == ["stand-in"]
    assert "RuntimeError: a child exited" in capsys.readouterr().err
