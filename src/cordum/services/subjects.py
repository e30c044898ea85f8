"""Bus subjects the services use, and what each carries.

Subjects CAP defines (reference section 6) keep their CAP names; on NATS they carry CAP
protobuf packets, so third-party CAP workers take part unchanged. The rest are the
control plane's own notices (JSON on NATS).
"""

from __future__ import annotations

import re

SUBMIT = "sys.job.submit"
"""A job became PENDING and wants scheduling: ``{job_id, topic}`` (CAP job request)."""

RESULT = "sys.job.result"
"""A worker's outcome: ``{job_id, worker_id, succeeded, result?, error?, retryable?}``."""

PROGRESS = "sys.job.progress"
"""A worker's progress report: ``{job_id, worker_id, percent, message}``."""

CANCEL = "sys.job.cancel"
"""Tell a worker to stop a job: ``{job_id, worker_id, reason?}``."""

CAP_HEARTBEAT = "sys.heartbeat"
"""A CAP worker is alive: ``{worker_id, pool, active_jobs, max_parallel, topics, labels}``."""

HANDSHAKE = "sys.handshake"
"""A CAP worker came up: ``{worker_id, topics, role}``."""

CLAIM = "sys.job.claim"
"""Request/reply: a bus worker asks to run a job before running it: ``{job_id, worker_id}``
answered ``{assignment}`` (None: not yours to run). Not a CAP subject."""

FINISHED = "sys.job.finished"
"""A dispatched job left its worker (result, cancel, timeout): ``{job_id, worker_id}``."""

WORKER_EVENTS = "sys.worker.event"
"""A worker registered, heartbeat or left: ``{event, worker, job_ids?}`` (every scheduler)."""

POLICY_CHANGED = "sys.policy.changed"
"""The active policy snapshot changed: ``{version, snapshot_id}`` (every kernel)."""

KEYS_CHANGED = "sys.keys.changed"
"""An API key was created or revoked: ``{key_id}`` (every gateway drops its cache)."""

SCHEDULER_QUEUE = "scheduler"

WORKER_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

POOL_DISPATCH_PREFIX = "pool:"
"""Marks a job dispatched to a pool subject: any worker of the pool may answer for it
(``:`` is not allowed in worker ids, so no real worker can be mistaken for one)."""


def worker_jobs(worker_id: str) -> str:
    """The direct-dispatch subject of one worker."""
    return f"worker.{worker_id}.jobs"


def pool_holder(topic: str) -> str:
    """The ``worker_id`` recorded for a job published to the pool subject ``topic``."""
    return POOL_DISPATCH_PREFIX + topic


def dispatched_to_pool(worker_id: str | None) -> bool:
    """Whether a job's ``worker_id`` stands for a pool subject rather than one worker."""
    return worker_id is not None and worker_id.startswith(POOL_DISPATCH_PREFIX)
