"""Benchmark: POST /api/v1/jobs over real HTTP at a fixed offered load.

Starts ``cordum up`` (embedded, demo pack) in a subprocess and sends allowed jobs
(``job.demo.greet``) open loop at ``--rate`` requests per second from this process, so
the server does the whole submit path: parse, validate, gate A, SQLite commit, answer,
and then schedules, dispatches and completes each job in the background.
Latency is measured from each request's due time (no coordinated omission).

Target on the 2-core reference machine: p99 <= 10 ms at 500 req/s.

    python bench/submit_http.py [--rate 500] [--duration 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import AUTH, cordum_up, machine, percentile
from httpload import warmed_open_loop


def job_body(i: int) -> dict[str, Any]:
    """An allowed job with a small input, like an agent's tool call."""
    return {"topic": "job.demo.greet", "context": {"name": f"agent-{i}"}, "labels": {"n": str(i)}}


def run(rate: float, duration: float, warmup: float) -> dict[str, Any]:
    """One measured run against a fresh server."""
    with tempfile.TemporaryDirectory() as tmp, cordum_up(Path(tmp)) as url:
        _, result = asyncio.run(
            warmed_open_loop(
                url,
                "/api/v1/jobs",
                job_body,
                rate=rate,
                duration_s=duration,
                warmup_s=warmup,
                headers=AUTH,
            )
        )
    lat = result.latencies_ms
    return {
        "offered_rps": rate,
        "achieved_rps": round(result.sent / result.elapsed_s, 1),
        "requests": result.sent,
        "statuses": result.statuses,
        "p50_ms": round(percentile(lat, 50), 2),
        "p90_ms": round(percentile(lat, 90), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "p999_ms": round(percentile(lat, 99.9), 2),
        "max_ms": round(max(lat), 2),
        "mean_ms": round(statistics.fmean(lat), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="offered requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = {"machine": machine(), "submit": run(args.rate, args.duration, args.warmup)}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = (
        figures["submit"]["p99_ms"] <= 10
        and figures["submit"]["statuses"].get(200) == (figures["submit"]["requests"])
    )
    print(f"target p99 <= 10 ms at {args.rate:g} req/s: {'met' if ok else 'NOT met'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
