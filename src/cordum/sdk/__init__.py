"""The Cordum SDK: clients for agents, workers for the jobs they are allowed to run.

Importable without the server: it needs only httpx, websockets, pydantic and
``cordum.models``.
"""

from cordum.sdk.client import AsyncClient, Client
from cordum.sdk.context import JobContext
from cordum.sdk.errors import (
    ApprovalRequired,
    CordumAPIError,
    CordumError,
    CordumUnavailable,
    FatalError,
    JobCancelled,
    JobFailed,
    JobOutcomeError,
    JobTimedOut,
    OutputQuarantined,
    PolicyDenied,
    PolicyViolationError,
    Throttled,
    WaitTimeout,
)
from cordum.sdk.links import HttpLink, WorkerLink
from cordum.sdk.worker import Worker
from cordum.sdk.wslink import WebSocketLink

__all__ = [
    "ApprovalRequired",
    "AsyncClient",
    "Client",
    "CordumAPIError",
    "CordumError",
    "CordumUnavailable",
    "FatalError",
    "HttpLink",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobOutcomeError",
    "JobTimedOut",
    "OutputQuarantined",
    "PolicyDenied",
    "PolicyViolationError",
    "Throttled",
    "WaitTimeout",
    "WebSocketLink",
    "Worker",
    "WorkerLink",
]
