"""Benchmark: verifying an untouched audit chain read from the store, and sealing events.

Writes ``--events`` realistic events (job transitions and decisions, HMAC key on, as a
deployment would run) into a real SQLite store through the store's own sealing path,
signs a checkpoint at the head, then times ``AuditTrail.verify`` (reading every event
back from SQLite and checking hashes, order and the checkpoint) five times; reports the
median and the range, plus the verifier alone on events already in memory. Also reports
the cost of sealing and inserting one event, the price every audited write pays, and of
listing the chains (``Store.audit_chains``, which the dashboard's live feed calls every
0.4 s while a page is open).

Target on the 2-core reference machine: 100,000 events verify in <= 2 s.

    python bench/audit_verify.py [--events 100000] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import machine
from cordum.models.audit import AuditDraft, ChainHasher
from cordum.ports.sqlite_store import SqliteStore
from cordum.services.audit import CheckpointSigner, verify_chain
from cordum.services.audit_trail import AuditTrail

TENANT = "acme"
BATCH = 1_000


def draft(seq: int) -> AuditDraft:
    """One event as the pipeline writes it: alternating state changes and decisions."""
    job = f"{seq // 5:032x}"
    if seq % 2:
        kind = "job.transition"
        data: dict[str, Any] = {"from": "DISPATCHED", "to": "RUNNING", "reason": "claimed"}
    else:
        kind = "decision"
        data = {
            "gate": "B",
            "decision": "ALLOW",
            "rule_id": "allow-reads",
            "policy_snapshot": "prod-7:" + "ab" * 32,
            "reason": "reads are fine",
            "safety_bypassed": False,
        }
    return AuditDraft(tenant_id=TENANT, kind=kind, subject=job, data=data)


async def run(events: int, directory: Path) -> dict[str, Any]:
    """Fill a store, then time verification; the figures."""
    hasher = ChainHasher(key=os.urandom(32))
    store = SqliteStore(directory / "cordum.db", hasher=hasher)
    trail = AuditTrail(store, hasher, CheckpointSigner(os.urandom(32)))
    try:
        started = time.perf_counter()
        for first in range(1, events + 1, BATCH):
            await store.append_audit(
                [draft(seq) for seq in range(first, min(first + BATCH, events + 1))]
            )
        seal_us = (time.perf_counter() - started) / events * 1e6
        await trail.checkpoint()
        from_store = []
        for _ in range(5):
            started = time.perf_counter()
            report = await trail.verify(TENANT)
            from_store.append(time.perf_counter() - started)
            if not report.ok or report.checked != events or report.checkpoints != 1:
                raise SystemExit(f"the untouched chain did not verify: {report}")
        loaded = [event async for event in trail.events(TENANT)]
        checkpoints = await store.list_audit_checkpoints(TENANT)
        in_memory = []
        for _ in range(5):
            started = time.perf_counter()
            verify_chain(
                TENANT, loaded, hasher, checkpoints=checkpoints, public_keys=trail.public_keys
            )
            in_memory.append(time.perf_counter() - started)
        chains_list = []
        for _ in range(20):
            started = time.perf_counter()
            await store.audit_chains()
            chains_list.append(time.perf_counter() - started)
    finally:
        await store.close()
    return {
        "machine": machine(),
        "events": events,
        "verify_s_median": round(statistics.median(from_store), 3),
        "verify_s_min": round(min(from_store), 3),
        "verify_s_max": round(max(from_store), 3),
        "verify_in_memory_s_median": round(statistics.median(in_memory), 3),
        "verify_us_per_event": round(statistics.median(from_store) / events * 1e6, 2),
        "seal_and_insert_us_per_event": round(seal_us, 2),
        "list_chains_ms_median": round(statistics.median(chains_list) * 1000, 3),
    }


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cordum-audit-bench-") as directory:
        figures = asyncio.run(run(args.events, Path(directory)))
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    met = figures["verify_s_median"] <= 2.0 * args.events / 100_000
    print(f"target 100,000 events in <= 2 s: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
