"""Bus subjects the services use (CAP names where CAP has one)."""

from __future__ import annotations

import re

SUBMIT = "sys.job.submit"
"""A job became PENDING and wants scheduling: ``{job_id}``."""

FINISHED = "sys.job.finished"
"""A dispatched job left its worker (result, cancel, timeout): ``{job_id, worker_id}``."""

CANCEL = "sys.job.cancel"
"""Tell a worker to stop a job: ``{job_id, worker_id}``."""

HEARTBEAT = "sys.heartbeat"
"""A worker registered, heartbeat or left: ``{worker_id, event}``."""

SCHEDULER_QUEUE = "scheduler"

WORKER_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def worker_jobs(worker_id: str) -> str:
    """The direct-dispatch subject of one worker."""
    return f"worker.{worker_id}.jobs"
