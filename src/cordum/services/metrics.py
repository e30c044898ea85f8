"""Prometheus metrics of one control plane.

Each control plane has its own registry (no global state), so tests can run several.
Gauges that mirror the store (jobs by state, DLQ size, workers online) are refreshed when
``/metrics`` is scraped rather than kept in step on every write.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cordum.models.state import JobState

GATE_BUCKETS = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0)


class Metrics:
    """The metrics the services update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "cordum_decisions",
            "Safety Kernel decisions by gate and type",
            ["gate", "decision"],
            registry=r,
        )
        self.gate_latency = Histogram(
            "cordum_gate_latency_seconds",
            "Time to get a policy decision, by gate",
            ["gate"],
            buckets=GATE_BUCKETS,
            registry=r,
        )
        self.scheduler_fail_open = Counter(
            "cordum_scheduler_input_fail_open",
            "Jobs dispatched unchecked at gate B because the kernel was unavailable (fail open)",
            ["topic"],
            registry=r,
        )
        self.gateway_fail_open = Counter(
            "cordum_gateway_input_fail_open",
            "Jobs accepted unchecked at gate A because the kernel was unavailable (fail open)",
            ["topic"],
            registry=r,
        )
        self.submissions = Counter(
            "cordum_jobs_submitted", "Answers to job submissions", ["outcome"], registry=r
        )
        self.finished = Counter(
            "cordum_jobs_finished", "Jobs that reached a terminal state", ["state"], registry=r
        )
        self.dispatches = Counter("cordum_dispatches", "Jobs handed to workers", registry=r)
        self.deferrals = Counter(
            "cordum_scheduler_deferrals", "Jobs put back to wait, by cause", ["cause"], registry=r
        )
        self.jobs = Gauge("cordum_jobs", "Jobs in the store by state", ["state"], registry=r)
        self.dlq_size = Gauge("cordum_dlq_entries", "Entries in the dead-letter queue", registry=r)
        self.workers_online = Gauge("cordum_workers_online", "Live workers", registry=r)
        self.breaker_open = Gauge(
            "cordum_safety_breaker_open",
            "1 while a gate's circuit breaker refuses calls",
            ["gate"],
            registry=r,
        )

    def fail_open(self, gate: str, topic: str) -> None:
        """Count a job that passed a gate unchecked."""
        counter = self.gateway_fail_open if gate == "A" else self.scheduler_fail_open
        counter.labels(topic).inc()

    def set_job_counts(self, counts: dict[JobState, int]) -> None:
        """Mirror the store's per-state counts (every state, zero included)."""
        for state in JobState:
            self.jobs.labels(state.value).set(counts.get(state, 0))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
