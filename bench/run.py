"""The benchmark suite: every row, ours beside bare aiortc, in one table.

    python bench/run.py [--rounds N] [--seconds S] [--quick] [--only NAME ...] [--markdown PATH]

Each module of ``MODULES`` (``bench/<name>.py``) measures its rows between separate processes,
alternating rounds of ours and of the bare aiortc baseline (see ``bench/harness.py``); this
runner awaits each one's ``measure(rounds, seconds, quick)`` in turn, never two at once (they
would share the 2 cores and skew each other), and prints one table. A module is imported only
when its turn comes, so one that is missing fails with its name before anything runs, and
``--only`` runs the others without it; one that fails while measuring is named, and the others
still give their rows (exit status 1). ``--quick`` is CI's smoke run: seconds, no figure to trust.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if __name__ == "__main__":
    # The modules are imported as ``bench.<name>``: the project's root first, so that ``peer`` and
    # ``signaling`` are the packages of this checkout; bench/ last, for modules that ``import harness``.
    sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH] + [str(BENCH)]

from bench import harness  # noqa: E402

MODULES = ["cold_start", "call", "frame_latency", "transfer", "room", "signaling_server"]
"""The suite, in the order it runs and its rows are printed: ``bench/<name>.py``, each with
``async def measure(rounds, seconds, quick) -> list[harness.Row]``."""

DEFAULT_ROUNDS = 5
DEFAULT_SECONDS = 30.0
QUICK_ROUNDS = 1
QUICK_SECONDS = 1.0


class SuiteError(Exception):
    """A module that cannot be run: unknown, missing, or without ``measure``."""


def load(name: str, package: str = "bench") -> ModuleType:
    """``bench/<name>.py``, imported now; SuiteError says which and why when it cannot be."""
    if name not in MODULES:
        raise SuiteError(f"unknown bench module {name!r}; the suite has: {', '.join(MODULES)}")
    try:
        module = importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as error:
        if error.name not in (f"{package}.{name}", package):
            raise  # the module is there; something it imports is not
        raise SuiteError(f"bench module {name!r} is listed but bench/{name}.py is missing") from None
    if not callable(getattr(module, "measure", None)):
        raise SuiteError(f"bench/{name}.py has no measure(rounds, seconds, quick)")
    return module


async def run(names: Sequence[str], rounds: int, seconds: float, quick: bool,
              package: str = "bench") -> tuple[list[harness.Row], list[str]]:
    """Each module's rows, one module after the other, and the names of those that failed: a
    module that fails is said (its traceback on stderr) and the others still run, so that an
    hour of figures is not lost to one of them. What each took goes to stderr."""
    modules = [load(name, package) for name in names]  # every name checked before anything runs
    rows: list[harness.Row] = []
    failed: list[str] = []
    for name, module in zip(names, modules):
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            rows += await module.measure(rounds, seconds, quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"bench: {name} {'failed after' if name in failed else 'took'} {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)
    return rows, failed


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help=f"rounds of each side (default {DEFAULT_ROUNDS}; "
                                                   f"{QUICK_ROUNDS} with --quick)")
    parser.add_argument("--seconds", type=float, help=f"seconds a timed round lasts (default {DEFAULT_SECONDS:g}; "
                                                      f"{QUICK_SECONDS:g} with --quick)")
    parser.add_argument("--quick", action="store_true", help="the smoke run CI makes: seconds, figures not to trust")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these modules ({', '.join(MODULES)})")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to PATH in Markdown")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds more than 0")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        rows, failed = asyncio.run(run(args.only or MODULES, args.rounds, args.seconds, args.quick))
    except SuiteError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    print(harness.format_table(rows), flush=True)
    if args.markdown:
        Path(args.markdown).write_text(harness.markdown_table(rows) + "\n", encoding="utf-8")
    if failed:
        print(f"bench: no rows from {', '.join(failed)} (failed, see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
