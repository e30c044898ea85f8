"""A kernel that can be switched off, to test what the gates do when it is unavailable."""

from __future__ import annotations

import asyncio
from typing import Any

from cordum.models import DecisionRecord, Explanation, Job, OutputVerdict
from cordum.policy import Policy
from cordum.services.kernel import LocalKernel, PolicyHolder


class SwitchableKernel:
    """The real local kernel, except that while ``down`` every call raises."""

    remote = False

    def __init__(self, policy: Policy) -> None:
        self.holder = PolicyHolder(policy)
        self.inner = LocalKernel(self.holder)
        self.down = False
        self.calls = 0
        self.hold_rechecks: asyncio.Event | None = None
        """When set, re-checks wait for it: a slow remote kernel, to open race windows."""

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("kernel unreachable (switched off by the test)")

    async def evaluate(self, job: Job) -> DecisionRecord:
        """Decide, unless switched off."""
        self._check()
        return await self.inner.evaluate(job)

    async def recheck(self, job: Job) -> DecisionRecord:
        """Re-decide at gate B, unless switched off (after ``hold_rechecks``, if set)."""
        self._check()
        if self.hold_rechecks is not None:
            await self.hold_rechecks.wait()
        return await self.inner.recheck(job)

    async def simulate(self, job: Job | dict[str, Any]) -> DecisionRecord:
        """Simulate, unless switched off."""
        self._check()
        return await self.inner.simulate(job)

    async def explain(self, job: Job | dict[str, Any]) -> Explanation:
        """Explain, unless switched off."""
        self._check()
        return await self.inner.explain(job)

    async def evaluate_output(self, job: Job, output: Any, *, failed: bool) -> OutputVerdict:
        """Output rules are checked by the same kernel."""
        return await self.inner.evaluate_output(job, output, failed=failed)

    def snapshot_id(self) -> str:
        """The active snapshot."""
        return self.inner.snapshot_id()
