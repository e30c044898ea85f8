"""Benchmark: a policy hot swap under load drops nothing and misattributes nothing.

Starts ``cordum up`` (embedded, demo pack, auth on) and submits ``job.demo.greet`` open
loop at ``--rate`` requests per second for ``--duration`` seconds. Halfway through, a
bundle that turns those greetings from ALLOW into DENY is uploaded and published over
the API. Afterwards every decision of every job (gate A at submit, gate B at dispatch)
is read back from the store and checked:

- it names exactly one snapshot, and that is the old or the new one;
- what it decided is what that snapshot decides (old: ALLOW, new: DENY);
- decisions taken before the publish request was sent name the old snapshot, those
  taken after its answer arrived name the new one (in between, either); a job admitted
  just before the swap is re-decided at dispatch under the new one, each decision
  naming its own snapshot;
- every HTTP answer is 200 (allowed, old snapshot) or 403 (denied, new snapshot), and
  matches the gate-A decision stored for its job; nothing else, no transport error.

It also reports the submit latency (from each request's due time) before, around and
after the swap, and how long the publish took.

    python bench/policy_hotswap.py [--rate 500] [--duration 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchlib import cordum_up, machine, percentile
from cordum.models.pipeline import DecisionEntry, Gate
from cordum.ports.sqlite_store import SqliteStore
from httpload import Connection

CLOSE_GREETINGS = """\
# Replaces the demo pack's `demo-greet` rule in place: greetings are now refused.
rules:
  - id: demo-greet
    match: {topics: [job.demo.greet]}
    decision: deny
    reason: greetings are closed (policy hot-swap benchmark)
"""
SWAP_WINDOW_S = 0.25
"""Requests due this close to the publish count as "around the swap" for latency."""


@dataclass
class Answer:
    """One submit: when it was due and answered (wall clock), and what came back."""

    due: float
    done: float
    status: int
    body: dict[str, Any]


@dataclass
class Publish:
    """The publish request: sent, answered, and the snapshot it made active."""

    sent: float
    answered: float
    old: str
    new: str


async def load(
    url: str, headers: dict[str, str], rate: float, duration: float, connections: int = 64
) -> tuple[list[Answer], list[str]]:
    """Open-loop submits; returns the answers and any transport errors."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(url, headers))
    answers: list[Answer] = []
    errors: list[str] = []
    start = time.perf_counter()
    offset = time.time() - start  # perf_counter -> wall clock, to compare with the store

    async def one(i: int, due: float) -> None:
        body = json.dumps({"topic": "job.demo.greet", "context": {"name": f"agent-{i}"}})
        connection = await pool.get()
        try:
            status, payload = await connection.post("/api/v1/jobs", body.encode())
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(f"request {i}: {type(exc).__name__}: {exc}")
            return
        finally:
            pool.put_nowait(connection)
        done = time.perf_counter()
        answers.append(Answer(due + offset, done + offset, status, json.loads(payload or b"{}")))

    tasks = []
    for i in range(int(rate * duration)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    return answers, errors


async def publish_at(url: str, headers: dict[str, str], delay: float) -> Publish:
    """After ``delay`` seconds: upload the bundle that closes greetings, then publish."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        listing = (await http.get("/api/v1/policy/snapshots")).json()
        old = next(s["snapshot_id"] for s in listing["snapshots"] if s["active"])
        await asyncio.sleep(delay)
        put = await http.put(
            "/api/v1/policy/bundles/bench/close-greetings", json={"text": CLOSE_GREETINGS}
        )
        put.raise_for_status()
        sent = time.time()
        answer = await http.post("/api/v1/policy/publish", json={"message": "hot-swap bench"})
        answered = time.time()
        answer.raise_for_status()
        return Publish(sent, answered, old, answer.json()["snapshot"]["snapshot_id"])


def wait_idle(url: str, headers: dict[str, str], timeout: float = 120) -> None:
    """Until no job is waiting or running, so every job has all its decisions."""
    busy = "PENDING,SCHEDULED,DISPATCHED,RUNNING,RETRYING"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = httpx.get(
            f"{url}/api/v1/jobs", params={"state": busy, "limit": 1}, headers=headers, timeout=10
        ).json()
        if not page["jobs"]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"jobs still in flight after {timeout} s")


async def stored_decisions(data_dir: Path, job_ids: list[str]) -> dict[str, list[DecisionEntry]]:
    """Every decision of every job, read from the (stopped) server's store."""
    store = SqliteStore(data_dir / "cordum.db")
    try:
        return {job_id: await store.job_decisions(job_id) for job_id in job_ids}
    finally:
        await store.close()


def job_id_of(answer: Answer) -> str | None:
    body = answer.body.get("rejection", answer.body)
    job_id = body.get("job_id")
    return job_id if isinstance(job_id, str) else None


def check(
    answers: list[Answer], decisions: dict[str, list[DecisionEntry]], swap: Publish
) -> list[str]:
    """Every violation of the hot-swap guarantees (empty when they hold)."""
    expected = {swap.old: "ALLOW", swap.new: "DENY"}
    answer_status = {swap.old: 200, swap.new: 403}
    problems: list[str] = []
    for answer in answers:
        job_id = job_id_of(answer)
        body = answer.body.get("rejection", answer.body)
        snapshot = body.get("policy_snapshot")
        if job_id is None or snapshot not in expected:
            problems.append(f"answer {answer.status} without a known job/snapshot: {body}")
            continue
        if answer.status != answer_status[snapshot] or body.get("decision") != expected[snapshot]:
            problems.append(f"job {job_id}: answered {answer.status} {body.get('decision')}")
        entries = decisions.get(job_id) or []
        gate_a = [entry for entry in entries if entry.gate is Gate.SUBMIT]
        if len(gate_a) != 1 or gate_a[0].policy_snapshot != snapshot:
            problems.append(f"job {job_id}: the answer's snapshot is not the stored gate-A one")
        for entry in entries:
            where = f"job {job_id} gate {entry.gate.value}"
            if entry.policy_snapshot not in expected:
                problems.append(f"{where}: unknown snapshot {entry.policy_snapshot!r}")
                continue
            if entry.decision.value != expected[entry.policy_snapshot]:
                problems.append(f"{where}: {entry.decision.value} under {entry.policy_snapshot}")
            if entry.at < swap.sent and entry.policy_snapshot != swap.old:
                problems.append(f"{where}: new snapshot before the publish was sent")
            if entry.at > swap.answered and entry.policy_snapshot != swap.new:
                problems.append(f"{where}: old snapshot after the publish answered")
    return problems


def latency(answers: list[Answer]) -> dict[str, float | int]:
    values = [(a.done - a.due) * 1000 for a in answers]
    if not values:
        return {"requests": 0}
    return {
        "requests": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
    }


def figures(
    answers: list[Answer],
    errors: list[str],
    decisions: dict[str, list[DecisionEntry]],
    swap: Publish,
) -> dict[str, Any]:
    entries = [entry for job in decisions.values() for entry in job]
    by_snapshot = Counter(
        "old" if e.policy_snapshot == swap.old else "new" if e.policy_snapshot == swap.new else "?"
        for e in entries
    )
    in_window = sum(swap.sent <= e.at <= swap.answered for e in entries)
    # Admitted under the old snapshot, re-decided at dispatch under the new one.
    straddling = sum(len({e.policy_snapshot for e in job}) > 1 for job in decisions.values())
    near = [a for a in answers if abs(a.due - swap.sent) <= SWAP_WINDOW_S]
    problems = check(answers, decisions, swap)
    return {
        "requests": len(answers) + len(errors),
        "statuses": dict(Counter(a.status for a in answers)),
        "transport_errors": len(errors),
        "jobs": len(decisions),
        "decisions": len(entries),
        "decisions_by_snapshot": dict(by_snapshot),
        "decisions_during_publish": in_window,
        "jobs_decided_under_both": straddling,
        "publish_ms": round((swap.answered - swap.sent) * 1000, 2),
        "old_snapshot": swap.old,
        "new_snapshot": swap.new,
        "latency_before": latency([a for a in answers if a.due < swap.sent - SWAP_WINDOW_S]),
        "latency_around_swap": latency(near),
        "latency_after": latency([a for a in answers if a.due > swap.answered + SWAP_WINDOW_S]),
        "violations": len(problems),
        "first_violations": problems[:10],
        "first_errors": errors[:10],
    }


def run(rate: float, duration: float) -> dict[str, Any]:
    """One run against a fresh server."""
    key = "cordum_bench-" + secrets.token_hex(16)
    headers = {"X-API-Key": key}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        with cordum_up(data_dir, env={"CORDUM_API_KEY": key}) as url:

            async def scenario() -> tuple[list[Answer], list[str], Publish]:
                (answers, errors), swap = await asyncio.gather(
                    load(url, headers, rate, duration), publish_at(url, headers, duration / 2)
                )
                return answers, errors, swap

            answers, errors, swap = asyncio.run(scenario())
            wait_idle(url, headers)
        job_ids = [job_id for job_id in map(job_id_of, answers) if job_id is not None]
        decisions = asyncio.run(stored_decisions(data_dir, job_ids))
    return figures(answers, errors, decisions, swap)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="offered requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = {"machine": machine(), "hotswap": run(args.rate, args.duration)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    swap = result["hotswap"]
    ok = (
        swap["violations"] == 0
        and swap["transport_errors"] == 0
        and set(swap["statuses"]) <= {200, 403}
        and swap["decisions_by_snapshot"].get("old", 0) > 0
        and swap["decisions_by_snapshot"].get("new", 0) > 0
    )
    print(
        "every decision attributed to exactly one of the two snapshots, consistent with it,"
        f" zero errors: {'met' if ok else 'NOT met'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
