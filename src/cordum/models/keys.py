"""API keys and roles: who may do what, in which tenants."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

ALL_TENANTS = "*"
"""In a key's tenant list: every tenant."""
RESERVED_TENANT_PREFIX = "_"
"""Tenant ids starting with this name internal audit chains (``_system``); none may be used."""


class Role(StrEnum):
    """What a key may do (the exact sets are :data:`ROLE_PERMISSIONS`).

    ``admin`` everything; ``operator`` runs the system and approves; ``viewer`` reads;
    ``agent`` submits jobs and reads its own, never approves; ``worker`` executes jobs and
    nothing else. They do not form a ladder: ``operator`` may do all that ``viewer`` and
    ``agent`` may, but those two differ (a viewer audits, an agent submits), and ``worker``
    stands apart: only it and ``admin`` may ``work``, and it may do nothing else.
    """

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    AGENT = "agent"
    WORKER = "worker"


class ApiKeyRecord(BaseModel):
    """An API key as the store keeps it: never the secret, only its hash."""

    model_config = ConfigDict(frozen=True)

    key_id: str = Field(description="The public part of the key, e.g. `ck_3f9a...`.")
    name: str
    role: Role
    tenants: tuple[str, ...] = Field(description="Tenants it may act in; `*` means all.")
    secret_hash: str = Field(description="sha256 of the whole key, hex.")
    created_at: float
    created_by: str | None = None
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        """Whether the key may still be used."""
        return self.revoked_at is None


class Permission(StrEnum):
    """One kind of action a route performs; each role holds a fixed set."""

    READ = "read"
    """Read jobs, decisions, approvals, workers, DLQ, policy (within the key's tenants)."""
    SUBMIT = "submit"
    """Submit and cancel jobs, ask the policy (evaluate, simulate, explain)."""
    APPROVE = "approve"
    """Approve or reject jobs that wait for a human."""
    OPERATE = "operate"
    """Retry and delete DLQ entries, cancel any job, remove workers."""
    POLICY_ADMIN = "policy_admin"
    """Edit bundles, publish, roll back."""
    AUDIT = "audit"
    """Read, verify and export the audit chain."""
    KEYS_ADMIN = "keys_admin"
    """Create, list and revoke API keys."""
    WORK = "work"
    """Register as a worker, claim jobs, report results."""


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(
        {
            Permission.READ,
            Permission.SUBMIT,
            Permission.APPROVE,
            Permission.OPERATE,
            Permission.AUDIT,
        }
    ),
    Role.VIEWER: frozenset({Permission.READ, Permission.AUDIT}),
    Role.AGENT: frozenset({Permission.READ, Permission.SUBMIT}),
    Role.WORKER: frozenset({Permission.WORK}),
}
"""What each role may do. An agent reads only the jobs it submitted itself."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, role and tenants (``*`` = all)."""

    name: str
    role: Role
    tenants: frozenset[str]
    key_id: str | None = None
    """None when auth is off (``--insecure-no-auth``): then the name is what the caller said."""

    def may(self, permission: Permission) -> bool:
        """Whether the role holds ``permission``."""
        return permission in ROLE_PERMISSIONS[self.role]

    @property
    def all_tenants(self) -> bool:
        """Whether the key spans every tenant (and the system audit chain)."""
        return ALL_TENANTS in self.tenants

    def sees(self, tenant_id: str) -> bool:
        """Whether the key may act in ``tenant_id``."""
        return self.all_tenants or tenant_id in self.tenants

    @property
    def own_jobs_only(self) -> bool:
        """Agents see only what they submitted."""
        return self.role is Role.AGENT


def tenant_problem(tenant_id: str) -> str | None:
    """Why ``tenant_id`` cannot name a tenant (of a job or a key), or None when it can."""
    if tenant_id == ALL_TENANTS:
        return "`*` means every tenant and is not a tenant itself; name one tenant"
    if not tenant_id or tenant_id != tenant_id.strip():
        return "a tenant id must not be empty or start or end with spaces"
    if tenant_id.startswith(RESERVED_TENANT_PREFIX):
        return f"tenant ids starting with {RESERVED_TENANT_PREFIX!r} are reserved"
    return None
