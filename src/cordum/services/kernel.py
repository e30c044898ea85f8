"""The Safety Kernel as the services see it: something that decides jobs, maybe remotely.

:class:`LocalKernel` runs the policy in this process. A remote kernel (gRPC, a later
issue) implements the same :class:`Kernel` protocol; the safety client wraps either with
the fail mode, timeouts and the circuit breaker.
"""

from __future__ import annotations

from typing import Any, Protocol

from cordum.models import DecisionRecord, Explanation, Job, OutputVerdict
from cordum.policy import Policy, VelocityStore


class KernelUnavailableError(RuntimeError):
    """The kernel could not be asked (down, timed out, circuit open)."""


class Kernel(Protocol):
    """Decides jobs against the active policy."""

    remote: bool
    """True when a call crosses a process boundary (and so needs a timeout)."""

    async def evaluate(self, job: Job) -> DecisionRecord:
        """Decide a job, counting velocity."""
        ...

    async def recheck(self, job: Job) -> DecisionRecord:
        """Decide an admitted job again (gate B): velocity rules neither count nor apply."""
        ...

    async def simulate(self, job: Job | dict[str, Any]) -> DecisionRecord:
        """Decide a job without side effects."""
        ...

    async def explain(self, job: Job | dict[str, Any]) -> Explanation:
        """Decide a job without side effects, with the per-rule trace."""
        ...

    async def evaluate_output(self, job: Job, output: Any, *, failed: bool) -> OutputVerdict:
        """Check a job's result against the output rules."""
        ...

    def snapshot_id(self) -> str:
        """The active policy snapshot."""
        ...


class PolicyHolder:
    """The active policy, swapped atomically; every version shares one velocity store."""

    def __init__(self, policy: Policy, velocity: VelocityStore | None = None) -> None:
        self.velocity = policy.velocity_store if velocity is None else velocity
        self._policy = policy.with_velocity_store(self.velocity)

    @property
    def policy(self) -> Policy:
        """The active policy."""
        return self._policy

    def swap(self, policy: Policy) -> Policy:
        """Make ``policy`` active (it keeps the shared velocity counters); return the old one."""
        old, self._policy = self._policy, policy.with_velocity_store(self.velocity)
        return old


class LocalKernel:
    """The kernel in this process: a :class:`PolicyHolder`'s active policy."""

    remote = False

    def __init__(self, holder: PolicyHolder) -> None:
        self.holder = holder

    async def evaluate(self, job: Job) -> DecisionRecord:
        """See :meth:`Kernel.evaluate`."""
        return self.holder.policy.evaluate(job)

    async def recheck(self, job: Job) -> DecisionRecord:
        """See :meth:`Kernel.recheck`."""
        return self.holder.policy.recheck(job)

    async def simulate(self, job: Job | dict[str, Any]) -> DecisionRecord:
        """See :meth:`Kernel.simulate`."""
        return self.holder.policy.simulate(job)

    async def explain(self, job: Job | dict[str, Any]) -> Explanation:
        """See :meth:`Kernel.explain`."""
        return self.holder.policy.explain(job)

    async def evaluate_output(self, job: Job, output: Any, *, failed: bool) -> OutputVerdict:
        """See :meth:`Kernel.evaluate_output`."""
        return self.holder.policy.evaluate_output(job, output, failed=failed)

    def snapshot_id(self) -> str:
        """See :meth:`Kernel.snapshot_id`."""
        return self.holder.policy.snapshot_id
