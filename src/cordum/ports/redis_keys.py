"""Where the Redis store keeps each record: every key name, in one place.

Every name is ``<prefix><kind>:<variable part>`` with one variable part, always last, so
no tenant, job or subject id can make two kinds of key collide (``job:x:events`` could be
the events of ``x`` or the job ``x:events``; ``events:x`` cannot). What needs two
variable parts (an idempotency key in a tenant) is a field of a per-tenant hash instead.
"""

from __future__ import annotations

from cordum.models.approval import ApprovalStatus
from cordum.models.state import JobState


class Keys:
    """The key names of one store namespace (``prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        p = prefix
        self.jobs = f"{p}jobs"
        """Sorted set of every job id, scored by creation order (the listing order)."""
        self.jobs_seq = f"{p}jobs:seq"
        self.dlq = f"{p}dlq"
        """Hash: job id -> DLQ entry."""
        self.dlq_order = f"{p}dlq:order"
        self.dlq_seq = f"{p}dlq:seq"
        self.workers = f"{p}workers"
        self.approvals = f"{p}approvals"
        """Sorted set of every job id with an approval, scored by first request."""
        self.approvals_seq = f"{p}approvals:seq"
        self.bundles = f"{p}policy:bundles"
        self.snapshots = f"{p}policy:snapshots"
        """Hash: version -> snapshot."""
        self.policy_version = f"{p}policy:version"
        self.policy_active = f"{p}policy:active"
        self.api_keys = f"{p}apikeys"
        self.api_keys_order = f"{p}apikeys:order"
        self.api_keys_seq = f"{p}apikeys:seq"
        self.audit_chains = f"{p}audit:chains"
        self.audit_sealing = f"{p}audit:sealing"
        self.audit_sealer = f"{p}audit:sealer"
        """String, expiring: the token of the process sealing this namespace's chains now."""

    def job(self, job_id: str) -> str:
        """String: the job record."""
        return f"{self.prefix}job:{job_id}"

    def events(self, job_id: str) -> str:
        """List: the job's state changes, oldest first."""
        return f"{self.prefix}events:{job_id}"

    def decisions(self, job_id: str) -> str:
        """List: the job's decisions, oldest first."""
        return f"{self.prefix}decisions:{job_id}"

    def tally(self, minute: int) -> str:
        """Hash: ``"<decision>|<1 if fail-open else 0>|<tenant>"`` -> how many decisions of
        that kind the tenant had in the minute starting at ``minute`` (epoch seconds)."""
        return f"{self.prefix}tally:{minute}"

    def jobs_in_state(self, state: JobState) -> str:
        """Sorted set: ids of the jobs in ``state``, scored as in :attr:`jobs`."""
        return f"{self.prefix}jobs:state:{state.value}"

    def jobs_of_tenant(self, tenant_id: str) -> str:
        """Sorted set: ids of the tenant's jobs, scored as in :attr:`jobs`."""
        return f"{self.prefix}jobs:tenant:{tenant_id}"

    def idempotency(self, tenant_id: str) -> str:
        """Hash: idempotency key -> first answer, for one tenant."""
        return f"{self.prefix}idem:{tenant_id}"

    def approval(self, job_id: str) -> str:
        """String: the job's approval record."""
        return f"{self.prefix}approval:{job_id}"

    def approvals_in(self, status: ApprovalStatus) -> str:
        """Sorted set: job ids whose approval has ``status``, scored as in :attr:`approvals`."""
        return f"{self.prefix}approvals:status:{status.value}"

    def audit_head(self, tenant_id: str) -> str:
        """String ``"<seq> <event_hash>"``: the newest event of a chain."""
        return f"{self.prefix}audit:head:{tenant_id}"

    def audit_rows(self, tenant_id: str) -> str:
        """List: the chain's rows; the event with seq ``n`` is at index ``n - 1``."""
        return f"{self.prefix}audit:rows:{tenant_id}"

    def audit_pending(self, tenant_id: str) -> str:
        """List: events of the chain recorded by writes and not sealed yet, oldest first."""
        return f"{self.prefix}audit:pending:{tenant_id}"

    def audit_subjects(self, tenant_id: str) -> str:
        """Sorted set of ``"<subject>\\0<seq, 20 digits>"`` (all score 0), for lex ranges."""
        return f"{self.prefix}audit:subjects:{tenant_id}"

    def audit_checkpoints(self, tenant_id: str) -> str:
        """Hash: seq -> signed checkpoint, for one chain."""
        return f"{self.prefix}audit:checkpoints:{tenant_id}"
