"""Clients for agents: submit actions, wait for them, and handle refusals as exceptions.

:class:`AsyncClient` and :class:`Client` have the same methods; both build their requests
with :mod:`cordum.sdk._jobs`, so they answer identically. A refusal by policy raises a
:class:`~cordum.sdk.errors.PolicyViolationError` whose ``as_tool_result()`` is ready to
hand back to a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, BinaryIO, Self

import httpx

from cordum.sdk import _audit, _jobs, _keys, _policy
from cordum.sdk._wire import Call, Settings, error_for, send_async, send_sync
from cordum.sdk.errors import CordumUnavailable, WaitTimeout


class AsyncClient:
    """Talk to a Cordum control plane from asyncio code.

    ``url``, ``api_key`` and ``tenant`` default to ``CORDUM_URL`` (else
    ``http://127.0.0.1:8081``), ``CORDUM_API_KEY`` and ``CORDUM_TENANT_ID``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        tenant: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.settings = Settings.resolve(url, api_key, tenant, timeout)
        self._http = self.settings.async_http()

    async def _call(self, call: Call) -> Any:
        return await send_async(self._http, call)

    async def submit(
        self,
        topic: str,
        input: Any = None,
        *,
        risk_tags: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        capability: str | None = None,
        requires: Iterable[str] = (),
        idempotency_key: str | None = None,
        actor_id: str | None = None,
        actor_type: str | None = None,
        pack_id: str | None = None,
        priority: str | None = None,
        prompt: str | None = None,
        deadline_ms: int | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Submit an action for a policy decision.

        Returns the acceptance (``job_id``, ``trace_id``, ``decision``...) or, with
        ``wait=True``, the job's result. Raises PolicyDenied, Throttled, or
        ApprovalRequired (then ``wait(job_id)`` follows the approval).
        """
        answer = await self._call(
            _jobs.submit_call(
                topic,
                input,
                risk_tags=risk_tags,
                labels=labels,
                capability=capability,
                requires=requires,
                idempotency_key=idempotency_key,
                actor_id=actor_id,
                actor_type=actor_type,
                pack_id=pack_id,
                priority=priority,
                prompt=prompt,
                deadline_ms=deadline_ms,
            )
        )
        if wait:
            return await self.wait(str(answer["job_id"]), timeout)
        return answer

    async def wait(self, job_id: str, timeout: float | None = None) -> Any:
        """The job's result once it finishes; raises why it has none, or WaitTimeout.

        ``timeout=None`` waits as long as it takes.
        """
        deadline = _jobs.Deadline(timeout)
        state: str | None = None
        while (wait_s := deadline.next_wait()) is not None:
            job = await self._call(_jobs.get_job_call(job_id, wait_s))
            state = job.get("state")
            if state in _jobs.TERMINAL_STATES:
                return _jobs.settle(job)
        raise WaitTimeout(job_id, timeout, state)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        """The job as the server shows it now."""
        job: dict[str, Any] = await self._call(_jobs.get_job_call(job_id))
        return job

    async def list_jobs(
        self,
        state: str | None = None,
        topic: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """A page ``{jobs, next_cursor}``, newest first; pass ``next_cursor`` back for more."""
        page: dict[str, Any] = await self._call(_jobs.list_jobs_call(state, topic, limit, cursor))
        return page

    async def job_decisions(self, job_id: str) -> list[dict[str, Any]]:
        """Every policy decision taken on the job, oldest first (the audit trail)."""
        decisions: list[dict[str, Any]] = await self._call(_jobs.decisions_call(job_id))
        return decisions

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not finished; returns the job."""
        job: dict[str, Any] = await self._call(_jobs.cancel_call(job_id))
        return job

    async def get_approval(self, job_id: str) -> dict[str, Any]:
        """``{approval, job}``: what a human is asked to approve, with its ``job_hash``."""
        answer: dict[str, Any] = await self._call(_jobs.approval_call(job_id))
        return answer

    async def approve(
        self, job_id: str, reason: str = "", note: str = "", job_hash: str | None = None
    ) -> dict[str, Any]:
        """Approve a job waiting for a human; it then goes through policy again.

        Pass the ``job_hash`` of the approval you reviewed: if the request is not that
        one any more, the server refuses (409 ``approval_stale_request``).
        """
        answer: dict[str, Any] = await self._call(
            _jobs.resolve_call(job_id, "approve", reason, note, job_hash)
        )
        return answer

    async def reject(self, job_id: str, reason: str = "", note: str = "") -> dict[str, Any]:
        """Reject a job waiting for a human; it ends DENIED."""
        answer: dict[str, Any] = await self._call(
            _jobs.resolve_call(job_id, "reject", reason, note)
        )
        return answer

    async def verify_audit(self, tenant: str | None = None) -> dict[str, Any]:
        """Verify the audit chain of ``tenant`` (default: every chain the key may read)."""
        report: dict[str, Any] = await self._call(_audit.verify_call(tenant))
        return report

    async def remediate(self, job_id: str, remediation_id: str) -> dict[str, Any]:
        """Re-submit a refused job with one of its remediations; answers like ``submit``."""
        answer: dict[str, Any] = await self._call(_jobs.remediate_call(job_id, remediation_id))
        return answer

    async def evaluate(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """Decide a job as submission would (velocity rules count it); nothing runs."""
        decision: dict[str, Any] = await self._call(_jobs.policy_call("evaluate", job))
        return decision

    async def simulate(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """Decide a job with no side effects at all."""
        decision: dict[str, Any] = await self._call(_jobs.policy_call("simulate", job))
        return decision

    async def explain(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """The simulated decision plus each rule's trace, to see why."""
        decision: dict[str, Any] = await self._call(_jobs.policy_call("explain", job))
        return decision

    async def create_key(
        self, name: str, role: str, tenants: Iterable[str] = ("default",)
    ) -> dict[str, Any]:
        """Create an API key (needs an admin key); the answer's ``key`` is shown only now.

        ``role``: admin, operator, viewer, agent or worker; ``tenants``: ``["*"]`` for all.
        """
        created: dict[str, Any] = await self._call(_keys.create_call(name, role, tenants))
        return created

    async def list_keys(self) -> list[dict[str, Any]]:
        """The API keys this admin key may manage, oldest first (never their secrets)."""
        keys: list[dict[str, Any]] = await self._call(_keys.list_call())
        return keys

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke an API key by its id (``ck_...``); it stops working at once."""
        revoked: dict[str, Any] = await self._call(_keys.revoke_call(key_id))
        return revoked

    async def policy_bundles(self) -> list[dict[str, Any]]:
        """The draft policy bundles (ids, digests, who changed them), without their text."""
        listing: dict[str, Any] = await self._call(_policy.bundles_call())
        bundles: list[dict[str, Any]] = listing["bundles"]
        return bundles

    async def put_policy_bundle(self, bundle_id: str, text: str) -> dict[str, Any]:
        """Create or replace a draft bundle (needs policy_admin); it decides after a publish."""
        answer: dict[str, Any] = await self._call(_policy.put_bundle_call(bundle_id, text))
        return answer

    async def delete_policy_bundle(self, bundle_id: str) -> None:
        """Remove a draft bundle (needs policy_admin)."""
        await self._call(_policy.delete_bundle_call(bundle_id))

    async def publish_policy(self, message: str = "") -> dict[str, Any]:
        """Make the draft bundles the active policy; ``status`` is published or unchanged."""
        answer: dict[str, Any] = await self._call(_policy.publish_call(message))
        return answer

    async def policy_snapshots(self) -> dict[str, Any]:
        """Every published snapshot, newest first, and the active version."""
        listing: dict[str, Any] = await self._call(_policy.snapshots_call())
        return listing

    async def policy_snapshot(self, ref: str | int) -> dict[str, Any]:
        """One snapshot (by version or snapshot id) with the text of each bundle."""
        snapshot: dict[str, Any] = await self._call(_policy.snapshot_call(ref))
        return snapshot

    async def rollback_policy(self, ref: str | int, message: str = "") -> dict[str, Any]:
        """Make an earlier snapshot (version or id) active again; the drafts follow it."""
        answer: dict[str, Any] = await self._call(_policy.rollback_call(ref, message))
        return answer

    async def close(self) -> None:
        """Release the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Client:
    """Blocking twin of :class:`AsyncClient`, for scripts and synchronous agent frameworks."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        tenant: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.settings = Settings.resolve(url, api_key, tenant, timeout)
        self._http = self.settings.sync_http()

    def _call(self, call: Call) -> Any:
        return send_sync(self._http, call)

    def submit(
        self,
        topic: str,
        input: Any = None,
        *,
        risk_tags: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        capability: str | None = None,
        requires: Iterable[str] = (),
        idempotency_key: str | None = None,
        actor_id: str | None = None,
        actor_type: str | None = None,
        pack_id: str | None = None,
        priority: str | None = None,
        prompt: str | None = None,
        deadline_ms: int | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """See :meth:`AsyncClient.submit`."""
        answer = self._call(
            _jobs.submit_call(
                topic,
                input,
                risk_tags=risk_tags,
                labels=labels,
                capability=capability,
                requires=requires,
                idempotency_key=idempotency_key,
                actor_id=actor_id,
                actor_type=actor_type,
                pack_id=pack_id,
                priority=priority,
                prompt=prompt,
                deadline_ms=deadline_ms,
            )
        )
        if wait:
            return self.wait(str(answer["job_id"]), timeout)
        return answer

    def wait(self, job_id: str, timeout: float | None = None) -> Any:
        """See :meth:`AsyncClient.wait`."""
        deadline = _jobs.Deadline(timeout)
        state: str | None = None
        while (wait_s := deadline.next_wait()) is not None:
            job = self._call(_jobs.get_job_call(job_id, wait_s))
            state = job.get("state")
            if state in _jobs.TERMINAL_STATES:
                return _jobs.settle(job)
        raise WaitTimeout(job_id, timeout, state)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """See :meth:`AsyncClient.get_job`."""
        job: dict[str, Any] = self._call(_jobs.get_job_call(job_id))
        return job

    def list_jobs(
        self,
        state: str | None = None,
        topic: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`AsyncClient.list_jobs`."""
        page: dict[str, Any] = self._call(_jobs.list_jobs_call(state, topic, limit, cursor))
        return page

    def job_decisions(self, job_id: str) -> list[dict[str, Any]]:
        """See :meth:`AsyncClient.job_decisions`."""
        decisions: list[dict[str, Any]] = self._call(_jobs.decisions_call(job_id))
        return decisions

    def cancel(self, job_id: str) -> dict[str, Any]:
        """See :meth:`AsyncClient.cancel`."""
        job: dict[str, Any] = self._call(_jobs.cancel_call(job_id))
        return job

    def get_approval(self, job_id: str) -> dict[str, Any]:
        """See :meth:`AsyncClient.get_approval`."""
        answer: dict[str, Any] = self._call(_jobs.approval_call(job_id))
        return answer

    def approve(
        self, job_id: str, reason: str = "", note: str = "", job_hash: str | None = None
    ) -> dict[str, Any]:
        """See :meth:`AsyncClient.approve`."""
        answer: dict[str, Any] = self._call(
            _jobs.resolve_call(job_id, "approve", reason, note, job_hash)
        )
        return answer

    def reject(self, job_id: str, reason: str = "", note: str = "") -> dict[str, Any]:
        """See :meth:`AsyncClient.reject`."""
        answer: dict[str, Any] = self._call(_jobs.resolve_call(job_id, "reject", reason, note))
        return answer

    def verify_audit(self, tenant: str | None = None) -> dict[str, Any]:
        """Verify the audit chain of ``tenant`` (default: every chain the key may read)."""
        report: dict[str, Any] = self._call(_audit.verify_call(tenant))
        return report

    def export_audit(self, destination: BinaryIO, tenant: str | None = None) -> int:
        """Stream a chain's NDJSON export into ``destination``; returns the bytes written."""
        params = None if tenant is None else {"tenant": tenant}
        written = 0
        try:
            with self._http.stream("GET", _audit.export_path(), params=params) as response:
                if not response.is_success:
                    response.read()
                    raise error_for(response)
                for chunk in response.iter_bytes():
                    destination.write(chunk)
                    written += len(chunk)
        except httpx.HTTPError as exc:
            raise CordumUnavailable(
                f"exporting the audit chain from {self.settings.url} failed: {exc}"
            ) from None
        return written

    def remediate(self, job_id: str, remediation_id: str) -> dict[str, Any]:
        """See :meth:`AsyncClient.remediate`."""
        answer: dict[str, Any] = self._call(_jobs.remediate_call(job_id, remediation_id))
        return answer

    def evaluate(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """See :meth:`AsyncClient.evaluate`."""
        decision: dict[str, Any] = self._call(_jobs.policy_call("evaluate", job))
        return decision

    def simulate(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """See :meth:`AsyncClient.simulate`."""
        decision: dict[str, Any] = self._call(_jobs.policy_call("simulate", job))
        return decision

    def explain(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """See :meth:`AsyncClient.explain`."""
        decision: dict[str, Any] = self._call(_jobs.policy_call("explain", job))
        return decision

    def create_key(
        self, name: str, role: str, tenants: Iterable[str] = ("default",)
    ) -> dict[str, Any]:
        """See :meth:`AsyncClient.create_key`."""
        created: dict[str, Any] = self._call(_keys.create_call(name, role, tenants))
        return created

    def list_keys(self) -> list[dict[str, Any]]:
        """See :meth:`AsyncClient.list_keys`."""
        keys: list[dict[str, Any]] = self._call(_keys.list_call())
        return keys

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """See :meth:`AsyncClient.revoke_key`."""
        revoked: dict[str, Any] = self._call(_keys.revoke_call(key_id))
        return revoked

    def policy_bundles(self) -> list[dict[str, Any]]:
        """See :meth:`AsyncClient.policy_bundles`."""
        listing: dict[str, Any] = self._call(_policy.bundles_call())
        bundles: list[dict[str, Any]] = listing["bundles"]
        return bundles

    def put_policy_bundle(self, bundle_id: str, text: str) -> dict[str, Any]:
        """See :meth:`AsyncClient.put_policy_bundle`."""
        answer: dict[str, Any] = self._call(_policy.put_bundle_call(bundle_id, text))
        return answer

    def delete_policy_bundle(self, bundle_id: str) -> None:
        """See :meth:`AsyncClient.delete_policy_bundle`."""
        self._call(_policy.delete_bundle_call(bundle_id))

    def publish_policy(self, message: str = "") -> dict[str, Any]:
        """See :meth:`AsyncClient.publish_policy`."""
        answer: dict[str, Any] = self._call(_policy.publish_call(message))
        return answer

    def policy_snapshots(self) -> dict[str, Any]:
        """See :meth:`AsyncClient.policy_snapshots`."""
        listing: dict[str, Any] = self._call(_policy.snapshots_call())
        return listing

    def policy_snapshot(self, ref: str | int) -> dict[str, Any]:
        """See :meth:`AsyncClient.policy_snapshot`."""
        snapshot: dict[str, Any] = self._call(_policy.snapshot_call(ref))
        return snapshot

    def rollback_policy(self, ref: str | int, message: str = "") -> dict[str, Any]:
        """See :meth:`AsyncClient.rollback_policy`."""
        answer: dict[str, Any] = self._call(_policy.rollback_call(ref, message))
        return answer

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
