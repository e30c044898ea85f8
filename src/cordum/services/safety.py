"""The safety client: how gates A and B ask the kernel, and what happens when it can't answer.

Fail mode ``closed`` (the default) turns an unavailable kernel into "no": the gateway
answers 503 and the scheduler requeues. ``open`` lets the job through as an ALLOW that is
labelled ``safety_bypassed=true``, recorded and counted, so a bypass is never silent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

from cordum.models import Decision, DecisionRecord, Job
from cordum.policy import InvalidJobError
from cordum.services.breaker import CircuitBreaker
from cordum.services.kernel import Kernel
from cordum.services.metrics import Metrics

log = logging.getLogger(__name__)

UNAVAILABLE_SNAPSHOT = "unavailable"


class FailMode(StrEnum):
    """What a gate does when the kernel cannot answer."""

    CLOSED = "closed"
    OPEN = "open"


class SafetyUnavailableError(RuntimeError):
    """The kernel could not decide and the fail mode is closed: the job must not proceed."""


@dataclass(frozen=True)
class SafetyVerdict:
    """A decision, and whether it was made up because the kernel was unavailable."""

    record: DecisionRecord
    bypassed: bool = False


class SafetyClient:
    """One gate's way to the kernel: breaker, timeout, fail mode and metrics."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        gate: str,
        fail_mode: FailMode,
        timeout: float,
        breaker: CircuitBreaker,
        metrics: Metrics,
        recheck: bool = False,
    ) -> None:
        self.kernel = kernel
        self.gate = gate
        self.fail_mode = fail_mode
        self.timeout = timeout
        self.breaker = breaker
        self.metrics = metrics
        self.recheck = recheck

    async def check(self, job: Job) -> SafetyVerdict:
        """Decide ``job``; raises :class:`SafetyUnavailableError` when closed and unavailable.

        :class:`~cordum.policy.InvalidJobError` (the job itself is malformed) propagates:
        that is the caller's mistake, not the kernel's.
        """
        if not self.breaker.allow():
            return self._unavailable(job, "the circuit breaker is open after repeated failures")
        started = time.perf_counter()
        try:
            ask = self.kernel.recheck if self.recheck else self.kernel.evaluate
            if self.kernel.remote:
                record = await asyncio.wait_for(ask(job), self.timeout)
            else:
                record = await ask(job)
        except InvalidJobError:
            raise
        except Exception as exc:  # any kernel failure is "unavailable", decided by fail mode
            self.breaker.record_failure()
            detail = "timed out" if isinstance(exc, TimeoutError) else f"{exc}"
            log.warning("gate %s: policy check failed: %s", self.gate, detail)
            return self._unavailable(job, detail)
        self.breaker.record_success()
        self.metrics.gate_latency.labels(self.gate).observe(time.perf_counter() - started)
        self.metrics.decisions.labels(self.gate, record.decision.value).inc()
        return SafetyVerdict(record)

    def _unavailable(self, job: Job, detail: str) -> SafetyVerdict:
        if self.fail_mode is not FailMode.OPEN:  # anything but an explicit "open" fails closed
            raise SafetyUnavailableError(f"policy check unavailable: {detail}")
        self.metrics.fail_open(self.gate, job.topic)
        record = DecisionRecord(
            decision=Decision.ALLOW,
            reason=(
                f"policy check unavailable ({detail}); fail mode is open, so the job passed"
                " unchecked"
            ),
            rule_id=None,
            policy_snapshot=UNAVAILABLE_SNAPSHOT,
        )
        return SafetyVerdict(record, bypassed=True)
