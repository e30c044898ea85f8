"""Benchmark: verifying an untouched audit chain, and sealing events.

Builds a chain of ``--events`` realistic events (job transitions and decisions, with the
HMAC key on, as a deployment would run) and times ``verify_chain`` over it, with one
signed checkpoint at its head, five times; reports the median and the range. Also
reports the cost of sealing one event (canonical JSON and HMAC), the price every
audited write pays.

Target on the 2-core reference machine: 100,000 events verify in <= 2 s.

    python bench/audit_verify.py [--events 100000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchlib import machine
from cordum.models.audit import GENESIS_HASH, AuditEvent
from cordum.services.audit import ChainHasher, CheckpointSigner, verify_chain

TENANT = "acme"


def build(hasher: ChainHasher, count: int) -> list[AuditEvent]:
    """A chain alternating state changes and decisions, as the pipeline writes them."""
    events: list[AuditEvent] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        job = f"{seq // 5:032x}"
        if seq % 2:
            kind = "job.transition"
            data: dict[str, Any] = {"from": "DISPATCHED", "to": "RUNNING", "reason": "claimed"}
        else:
            kind = "decision"
            data = {
                "gate": "dispatch",
                "decision": "ALLOW",
                "rule_id": "allow-reads",
                "snapshot": "prod-7:" + "ab" * 32,
            }
        event = hasher.seal(
            tenant_id=TENANT,
            seq=seq,
            prev_hash=prev,
            kind=kind,
            at_ms=1_763_750_000_000 + seq,
            actor="scheduler",
            subject=job,
            data=data,
        )
        events.append(event)
        prev = event.event_hash
    return events


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    hasher = ChainHasher(key=os.urandom(32))
    signer = CheckpointSigner(os.urandom(32))
    started = time.perf_counter()
    events = build(hasher, args.events)
    seal_us = (time.perf_counter() - started) / args.events * 1e6
    head = events[-1]
    checkpoint = signer.sign(TENANT, head.seq, head.event_hash, head.at_ms)
    keys = {signer.key_id: signer.public_key}

    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        report = verify_chain(TENANT, events, hasher, checkpoints=[checkpoint], public_keys=keys)
        rounds.append(time.perf_counter() - started)
        if not report.ok or report.checked != args.events:
            raise SystemExit(f"the untouched chain did not verify: {report}")
    figures = {
        "machine": machine(),
        "events": args.events,
        "verify_s_median": round(statistics.median(rounds), 3),
        "verify_s_min": round(min(rounds), 3),
        "verify_s_max": round(max(rounds), 3),
        "verify_us_per_event": round(statistics.median(rounds) / args.events * 1e6, 2),
        "seal_us_per_event": round(seal_us, 2),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    met = figures["verify_s_median"] <= 2.0 * args.events / 100_000
    print(f"target 100,000 events in <= 2 s: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
