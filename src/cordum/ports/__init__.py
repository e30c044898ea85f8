"""The ports the services depend on (Store, Bus) and the adapters that implement them.

Services import the protocols from here; only :mod:`cordum.wiring` picks an adapter.
"""

from cordum.ports.bus import Bus, BusHandler, Message, Subscription, subject_matches
from cordum.ports.store import (
    ApprovalFilter,
    ApprovalPage,
    AuditFilter,
    ConflictError,
    CreateOutcome,
    DecisionCount,
    DLQPage,
    JobFilter,
    JobNotFoundError,
    JobPage,
    Store,
    TransitionOutcome,
)

__all__ = [
    "ApprovalFilter",
    "ApprovalPage",
    "AuditFilter",
    "Bus",
    "BusHandler",
    "ConflictError",
    "CreateOutcome",
    "DLQPage",
    "DecisionCount",
    "JobFilter",
    "JobNotFoundError",
    "JobPage",
    "Message",
    "Store",
    "Subscription",
    "TransitionOutcome",
    "subject_matches",
]
