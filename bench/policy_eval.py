"""Benchmark: Safety Kernel evaluation latency and policy loading time.

Policies of 10, 100, 1,000 and 10,000 rules shaped like real ones (per-service deny,
approval, throttle and constrained-allow rules over Kubernetes, databases, GitHub,
Slack, ...), evaluated against a pool of realistic jobs in random order, pinned to one
core. Reports p50/p99 latency of single ``evaluate`` calls and evaluations per second,
for the normal path (warm: index with remembered candidate lists), the cold path (the
index computed from scratch on every call) and, for comparison, a scan (the same
compiled rules tried one by one, no index), plus load-and-compile time.

    python bench/policy_eval.py                 # everything, prints a table
    python bench/policy_eval.py --quick         # fewer samples (smoke run)
    python bench/policy_eval.py --json out.json # also write the figures as JSON

Load times are measured twice: in a fresh interpreter, and in the benchmark's own
process after the evaluation runs, where the heap is larger (as in a long-running
control plane) and the garbage collector's one pass at the end of a load costs more.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from benchlib import machine
from cordum.policy import InMemoryVelocityStore, Policy, load
from cordum.policy.job_input import to_policy_input

DOMAINS = ["k8s", "db", "github", "slack", "aws", "gcp", "vault", "jira", "pagerduty", "s3"]
VERBS = ["delete-namespace", "read-logs", "apply", "send", "scale", "migrate", "drop-table"]
TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", "stark"]
SIZES = (10, 100, 1_000, 10_000)


def policy_document(rule_count: int) -> dict[str, Any]:
    """A production-shaped policy with ``rule_count`` rules (five kinds, per service)."""
    rules: list[dict[str, Any]] = []
    services = max(1, rule_count // 5)
    for index in range(rule_count):
        service = index % services
        domain = DOMAINS[service % len(DOMAINS)]
        prefix = f"job.{domain}.svc{service}"
        kind = index // services % 5
        tenants = [TENANTS[(service + k) % len(TENANTS)] for k in range(2)]
        if kind == 0:
            rule = {
                "match": {
                    "topics": [f"{prefix}.delete*", f"{prefix}.drop-*"],
                    "risk_tags": ["prod", "destructive"],
                },
                "decision": "deny",
                "reason": "destructive production operations are never automated",
                "remediations": [
                    {
                        "id": "snapshot",
                        "title": "Take a snapshot first",
                        "replacement_topic": f"{prefix}.snapshot",
                    }
                ],
            }
        elif kind == 1:
            rule = {
                "match": {
                    "topics": [f"{prefix}.*"],
                    "risk_tags": ["prod", "write"],
                    "labels": {"env": "prod"},
                },
                "decision": "require_approval",
                "reason": "production writes need a human",
            }
        elif kind == 2:
            rule = {
                "match": {"topics": [f"{prefix}.send"], "tenants": tenants},
                "decision": "throttle",
                "reason": "too many messages",
                "velocity": {"max_requests": 1_000_000, "window_seconds": 60, "key": "tenant"},
            }
        elif kind == 3:
            rule = {
                "match": {"topics": [f"{prefix}.read-logs"], "tenants": tenants},
                "decision": "allow",
                "reason": "reads are fine, bounded",
                "constraints": {"budgets": {"max_runtime_ms": 30_000}},
            }
        else:
            rule = {
                "match": {
                    "topics": [f"{prefix}.apply", f"{prefix}.scale"],
                    "label_threshold": {"replicas": 50},
                },
                "decision": "deny",
                "reason": "scaling beyond 50 replicas needs capacity review",
            }
        rules.append({"id": f"rule-{index}", **rule})
    return {"version": "bench", "default_decision": "deny", "rules": rules}


def job_pool(rule_count: int, size: int, seed: int = 7) -> list[dict[str, Any]]:
    """Distinct realistic jobs: services the policy knows, plus some it does not."""
    rng = random.Random(seed)
    services = max(1, rule_count // 5)
    jobs = []
    for _ in range(size):
        service = rng.randrange(int(services * 1.2) + 1)
        domain = DOMAINS[service % len(DOMAINS)]
        jobs.append(
            {
                "topic": f"job.{domain}.svc{service}.{rng.choice(VERBS)}",
                "tenant_id": rng.choice(TENANTS),
                "risk_tags": rng.sample(["prod", "write", "destructive", "pii"], rng.randrange(3)),
                "labels": {
                    "env": rng.choice(["prod", "staging"]),
                    "replicas": str(rng.choice([3, 80])),
                },
                "actor_id": f"agent-{rng.randrange(20)}",
            }
        )
    return jobs


def scan_evaluator(policy: Policy, count_velocity: bool = True) -> Callable[[Any], Any]:
    """First match by trying every rule, every condition, in order: no index."""
    rules = policy.rules
    tenant = policy.document.default_tenant
    store = policy.velocity_store
    default = policy.simulate({"topic": "job.no-rule-matches-this.ever"})

    def evaluate(job: Any) -> Any:
        normalized = to_policy_input(job, tenant)
        for rule in rules:
            for condition in rule.conditions:
                if not condition.test(normalized):
                    break
            else:
                gate = rule.velocity
                if gate is None or gate.count(normalized, store, count_velocity).exceeded:
                    return rule.record
        return default

    return evaluate


def check_scan_agrees(policy: Policy, jobs: list[dict[str, Any]]) -> None:
    """The scan must decide exactly as the indexed evaluator, or its timing means nothing."""
    scan = scan_evaluator(policy, count_velocity=False)
    for job in jobs:
        expected, got = policy.simulate(job), scan(job)
        if (expected.decision, expected.rule_id) != (got.decision, got.rule_id):
            raise SystemExit(f"scan and index disagree on {job}: {expected} != {got}")


def measure(
    policy: Policy, jobs: list[dict[str, Any]], samples: int, path: str, rounds: int = 5
) -> dict[str, float]:
    """p50/p99 of single calls (ns timer around each) and throughput (tight loop).

    The samples are split into rounds and each figure is the median over rounds, so a
    burst of noise from elsewhere on the machine cannot decide the result either way;
    the spread of p99 across rounds is reported too.
    """
    evaluate: Callable[[Any], Any] = policy.evaluate
    if path == "cold":
        index = policy._index
        index.candidates = index.candidates_uncached  # type: ignore[method-assign]
    elif path == "scan":
        evaluate = scan_evaluator(policy)
    rng = random.Random(11)
    per_round = samples // rounds
    order = [jobs[rng.randrange(len(jobs))] for _ in range(per_round)]
    for job in order[: min(len(order), 20_000)]:
        evaluate(job)
    timer = time.perf_counter_ns
    p50s, p99s, rates = [], [], []
    for _ in range(rounds):
        latencies = []
        gc.collect()
        for job in order:
            start = timer()
            evaluate(job)
            latencies.append(timer() - start)
        start = time.perf_counter()
        for job in order:
            evaluate(job)
        rates.append(per_round / (time.perf_counter() - start))
        latencies.sort()
        p50s.append(latencies[len(latencies) // 2] / 1000)
        p99s.append(latencies[int(len(latencies) * 0.99)] / 1000)
    return {
        "p50_us": statistics.median(p50s),
        "p99_us": statistics.median(p99s),
        "p99_min_us": min(p99s),
        "p99_max_us": max(p99s),
        "evals_per_s": statistics.median(rates),
    }


def machine_floor(samples: int) -> dict[str, float]:
    """The same timing applied to a fixed pure-Python loop with a similar median.

    On a virtual machine, preemption and interrupts put a tail on *any* code; this row
    shows how much of the kernel's p99 is that tail rather than the kernel.
    """

    def fixed_work() -> int:
        total = 0
        for number in range(120):
            total += number
        return total

    timer = time.perf_counter_ns
    latencies = []
    for _ in range(samples):
        start = timer()
        fixed_work()
        latencies.append(timer() - start)
    latencies.sort()
    return {
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1000,
    }


def load_time_fresh(rule_count: int, repeats: int) -> float:
    """:func:`load_time` in a fresh interpreter (nothing else on the heap), in ms."""
    output = subprocess.run(
        [sys.executable, __file__, "--load-only", str(rule_count), "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(output)["load_ms"])


def load_time(rule_count: int, repeats: int) -> dict[str, float]:
    """Median time to read, validate, hash and compile a policy file of ``rule_count`` rules."""
    gc.collect()
    text = yaml.dump(policy_document(rule_count), Dumper=yaml.CSafeDumper, sort_keys=False)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "policy.yaml"
        path.write_text(text)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            load(path, max_bytes=64 * 1024 * 1024)
            times.append(time.perf_counter() - start)
    return {"load_ms": statistics.median(times) * 1000, "file_kib": len(text.encode()) / 1024}


def pin_to_one_core() -> str:
    """Run on one core so the figures are single-core figures."""
    if hasattr(os, "sched_setaffinity"):
        core = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity here)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--load-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        pin_to_one_core()
        print(json.dumps(load_time(args.load_only, args.repeats)))
        return
    samples = 20_000 if args.quick else 200_000
    pinning = pin_to_one_core()
    info = machine()
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()))
    print(
        f"run: {pinning}; {samples:,} evaluations per row in 5 rounds (medians shown);"
        " jobs drawn from a pool of 1,000"
    )
    results: dict[str, Any] = {"machine": info, "samples": samples, "eval": [], "load": []}
    header = (
        f"{'rules':>7} {'path':>6} {'p50 µs':>8} {'p99 µs':>8} {'p99 range':>13} {'evals/s':>11}"
    )
    print(header)
    for count in SIZES:
        text = yaml.dump(policy_document(count), Dumper=yaml.CSafeDumper, sort_keys=False)
        jobs = job_pool(count, 1_000)
        for path in ("warm", "cold", "scan"):
            # The scan visits every rule; at 10,000 rules fewer samples keep it short.
            rows = samples if path == "warm" else samples // 4
            if path == "scan":
                rows = max(5_000, rows // max(1, count // 100))
            policy = load(text, max_bytes=64 * 1024 * 1024).with_velocity_store(
                InMemoryVelocityStore()
            )
            if path == "scan":
                check_scan_agrees(policy, jobs[:200])
            figures = measure(policy, jobs, rows, path)
            results["eval"].append({"rules": count, "path": path, **figures})
            spread = f"{figures['p99_min_us']:.1f}-{figures['p99_max_us']:.1f}"
            print(
                f"{count:>7,} {path:>6} {figures['p50_us']:>8.2f} {figures['p99_us']:>8.2f}"
                f" {spread:>13} {figures['evals_per_s']:>11,.0f}"
            )
    floor = machine_floor(samples // 5)
    results["machine_floor"] = floor
    print(
        f"{'floor':>7} {'fixed':>6} {floor['p50_us']:>8.2f} {floor['p99_us']:>8.2f}"
        "  (a fixed pure-Python loop: the machine's own tail)"
    )
    del policy
    gc.collect()
    print(f"{'rules':>7} {'file KiB':>9} {'load+compile ms':>16} {'in a busy process':>18}")
    for count in SIZES:
        repeats = 3 if count >= 10_000 else 5
        busy = load_time(count, repeats)
        fresh = load_time_fresh(count, repeats)
        results["load"].append(
            {
                "rules": count,
                "fresh_ms": fresh,
                "busy_ms": busy["load_ms"],
                "file_kib": busy["file_kib"],
            }
        )
        print(f"{count:>7,} {busy['file_kib']:>9,.0f} {fresh:>16.1f} {busy['load_ms']:>18.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
