"""Benchmark: two builds of Cordum against each other, interleaved on one machine.

A single run of ``bench/pipeline.py --distributed`` cannot show a 10 % change on a VM
whose speed drifts by that much within an hour. This runs the distributed pipeline
benchmark for build A and build B in turns (A B, B A, A B, ...: a steady drift costs
both builds alike), with the same harness (this checkout's ``bench/``) and only the
``cordum`` package swapped, and prints each figure per run, the medians, the change and
in how many pairs B did better.

    python bench/compare.py BASE [NEW] [--pairs 3] [--schedulers 2] [--kernel local]

BASE and NEW are git revisions, checked out into temporary worktrees; NEW defaults to
this working tree, uncommitted changes included. Both builds run in this virtualenv, so
it must hold the dependencies of both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKING_TREE = "working tree"

FIGURES = (
    ("jobs/s end to end", ("throughput", "end_to_end_jobs_per_s"), True),
    ("CPU ms a job", ("throughput", "cpu_ms_per_job", "total"), False),
    ("p50 ms at rate", ("latency", "p50_ms"), False),
    ("p99 ms at rate", ("latency", "p99_ms"), False),
)
"""Label, where it is in pipeline.py's figures, and whether higher is better."""


class CompareError(Exception):
    """A build could not be set up or measured; the message says which and why."""


@dataclass
class Build:
    """One side of the comparison: a revision and the ``src`` it imports cordum from."""

    label: str
    revision: str
    src: Path
    runs: list[dict[str, Any]] = field(default_factory=list)


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise CompareError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def checked_out(label: str, revision: str, scratch: Path) -> Iterator[Build]:
    """``revision`` in a temporary worktree (or this working tree), removed afterwards."""
    if revision == WORKING_TREE:
        yield Build(label, WORKING_TREE, ROOT / "src")
        return
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except CompareError:
        raise CompareError(
            f"build {label}: {revision!r} is not a revision of this repository"
        ) from None
    path = scratch / label
    _git("worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield Build(label, f"{revision} ({commit[:10]})", path / "src")
    finally:
        _git("worktree", "remove", "--force", str(path))


def _env(build: Build) -> dict[str, str]:
    paths = [str(build.src), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _check_import(build: Build) -> None:
    """Refuse to measure a build whose roles would import cordum from somewhere else."""
    code = "import cordum, sys; sys.stdout.write(cordum.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(build), capture_output=True, text=True
    )
    where = Path(done.stdout).resolve() if done.returncode == 0 else None
    if where is None or not where.is_relative_to(build.src.resolve()):
        raise CompareError(
            f"build {build.label} ({build.revision}) imports cordum from {where or done.stderr}"
            f", not from {build.src}"
        )


def measure(build: Build, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """One run of the distributed pipeline benchmark on ``build``: its figures."""
    out = scratch / f"{build.label}-{len(build.runs)}.json"
    log = scratch / f"{build.label}-{len(build.runs)}.log"
    command = [
        sys.executable,
        str(HERE / "pipeline.py"),
        "--distributed",
        "--schedulers",
        str(args.schedulers),
        "--kernel",
        args.kernel,
        "--jobs",
        str(args.jobs),
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
        "--json",
        str(out),
    ]
    with log.open("wb") as output:
        done = subprocess.run(command, env=_env(build), stdout=output, stderr=output)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise CompareError(f"build {build.label} failed (exit {done.returncode}):\n{tail}")
    run = json.loads(out.read_text())["distributed"][0]
    build.runs.append(run)
    return run


def figure(run: dict[str, Any], path: tuple[str, ...]) -> float:
    """One figure of a run, by its path in the benchmark's JSON."""
    value: Any = run
    for key in path:
        value = value[key]
    return float(value)


def report(a: Build, b: Build) -> dict[str, Any]:
    """Per figure: each build's runs, medians, B's change and the pairs B did better in."""
    table = {}
    for label, path, higher_is_better in FIGURES:
        left = [figure(run, path) for run in a.runs]
        right = [figure(run, path) for run in b.runs]
        wins = sum(
            (y > x) if higher_is_better else (y < x) for x, y in zip(left, right, strict=True)
        )
        median_a, median_b = statistics.median(left), statistics.median(right)
        table[label] = {
            "a": left,
            "b": right,
            "median_a": median_a,
            "median_b": median_b,
            "change_pct": round(100 * (median_b - median_a) / median_a, 1) if median_a else None,
            "b_better_in": f"{wins} of {len(left)} pairs",
        }
    return table


def _show(a: Build, b: Build, table: dict[str, Any]) -> None:
    print(f"\nA = {a.revision}\nB = {b.revision}\n")
    print(
        f"{'figure':20} {'A per run':>26} {'B per run':>26} {'median A':>9} {'median B':>9}"
        f" {'change':>8}  B better"
    )
    for label, row in table.items():
        runs_a = ", ".join(f"{v:g}" for v in row["a"])
        runs_b = ", ".join(f"{v:g}" for v in row["b"])
        change = "" if row["change_pct"] is None else f"{row['change_pct']:+.1f}%"
        print(
            f"{label:20} {runs_a:>26} {runs_b:>26} {row['median_a']:>9g}"
            f" {row['median_b']:>9g} {change:>8}  {row['b_better_in']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="build A: a git revision")
    parser.add_argument(
        "new", nargs="?", default=WORKING_TREE, help="build B (default: this working tree)"
    )
    parser.add_argument("--pairs", type=int, default=3, help="runs of each build")
    parser.add_argument("--schedulers", type=int, default=2, help="scheduler replicas")
    parser.add_argument("--kernel", choices=("remote", "local"), default="local")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs for the throughput run")
    parser.add_argument("--rate", type=float, default=500.0, help="offered jobs/s, latency run")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds, latency run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    try:
        with tempfile.TemporaryDirectory(prefix="cordum-compare-") as tmp:
            scratch = Path(tmp)
            with (
                checked_out("A", args.base, scratch) as a,
                checked_out("B", args.new, scratch) as b,
            ):
                for build in (a, b):
                    _check_import(build)
                for pair in range(args.pairs):
                    for build in (a, b) if pair % 2 == 0 else (b, a):
                        run = measure(build, args, scratch)
                        print(
                            f"pair {pair + 1}, build {build.label}: "
                            + ", ".join(
                                f"{label} {figure(run, path):g}" for label, path, _ in FIGURES
                            ),
                            flush=True,
                        )
                table = report(a, b)
                _show(a, b, table)
                if args.json:
                    settings = {k: v for k, v in vars(args).items() if k != "json"}
                    args.json.write_text(
                        json.dumps(
                            {
                                "machine": machine(),
                                "a": a.revision,
                                "b": b.revision,
                                "settings": settings,
                                "figures": table,
                            },
                            indent=2,
                            default=str,
                        )
                    )
    except CompareError as exc:
        sys.exit(f"compare: {exc}")
    print(json.dumps({"machine": machine()}))


if __name__ == "__main__":
    main()
