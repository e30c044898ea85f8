"""API keys: minting, storing only a hash, and recognising a presented key.

A key is ``cordum_`` followed by 32 random bytes (URL-safe base64). The store keeps
``sha256(key)`` and an id derived from the same hash, so any string can be a key (the
bootstrap key of ``CORDUM_API_KEY`` included) and looking one up is one indexed read.
Keys carry 256 bits of randomness, so a plain hash is as strong as a slow one here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable

from cordum.models.audit import SYSTEM_CHAIN, AuditDraft
from cordum.models.keys import ALL_TENANTS, ApiKeyRecord, Principal, Role, tenant_problem
from cordum.ports import Store

log = logging.getLogger(__name__)

KEY_PREFIX = "cordum_"
MIN_KEY_LENGTH = 20
BOOTSTRAP_NAME = "bootstrap-admin"


class KeyCreationError(ValueError):
    """A key cannot be created as asked (bad role, tenants, or too short a secret)."""


class LastAdminKeyError(ValueError):
    """Revoking this key would leave no active admin key for every tenant."""


def key_hash(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str:
    """The public id of a key: safe to log, show and put in audit events."""
    return "ck_" + key_hash(key)[:12]


def new_key() -> str:
    """A fresh random key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyService:
    """Creates keys and recognises them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(
        self,
        *,
        name: str,
        role: Role,
        tenants: Iterable[str],
        created_by: str | None = None,
        key: str | None = None,
    ) -> tuple[str, ApiKeyRecord]:
        """Store a new key (``key`` or a fresh one); returns the key, shown only now."""
        tenant_list = tuple(sorted({t.strip() for t in tenants if t.strip()}))
        if not tenant_list:
            raise KeyCreationError("a key needs at least one tenant (or `*` for every tenant)")
        for tenant in tenant_list:
            problem = None if tenant == ALL_TENANTS else tenant_problem(tenant)
            if problem is not None:
                raise KeyCreationError(f"tenant {tenant!r}: {problem}")
        if ALL_TENANTS in tenant_list and len(tenant_list) > 1:
            raise KeyCreationError("`*` already means every tenant; give it alone")
        secret = new_key() if key is None else key
        if len(secret) < MIN_KEY_LENGTH:
            raise KeyCreationError(f"a key must be at least {MIN_KEY_LENGTH} characters long")
        record = ApiKeyRecord(
            key_id=key_id_of(secret),
            name=name,
            role=role,
            tenants=tenant_list,
            secret_hash=key_hash(secret),
            created_at=time.time(),
            created_by=created_by,
        )
        event = AuditDraft(
            tenant_id=SYSTEM_CHAIN,
            kind="key.created",
            subject=record.key_id,
            actor=created_by,
            data={"name": name, "role": role.value, "tenants": ",".join(tenant_list)},
        )
        await self.store.put_api_key(record, audit=[event])
        return secret, record

    async def revoke(self, key_id: str, *, by: str | None = None) -> ApiKeyRecord | None:
        """Revoke a key; None when unknown. Revoking twice keeps the first time.

        Raises :class:`LastAdminKeyError` rather than lock everyone out: the last active
        admin key of every tenant stays until another one exists.
        """
        record = await self.store.get_api_key(key_id)
        if record is None or not record.active:
            return record
        if _is_root(record) and not any(
            _is_root(other) and other.key_id != key_id for other in await self.store.list_api_keys()
        ):
            raise LastAdminKeyError(
                f"{key_id} is the last active admin key for every tenant; create another"
                " (`cordum keys create --role admin --tenant '*'`) before revoking it"
            )
        revoked = record.model_copy(update={"revoked_at": time.time()})
        event = AuditDraft(
            tenant_id=SYSTEM_CHAIN, kind="key.revoked", subject=key_id, actor=by, data={}
        )
        await self.store.put_api_key(revoked, audit=[event])
        return revoked

    async def principal_for(self, key: str) -> Principal | None:
        """Who ``key`` belongs to, or None when it is unknown or revoked."""
        record = await self.store.get_api_key(key_id_of(key))
        if record is None or not record.active:
            return None
        if not hmac.compare_digest(record.secret_hash, key_hash(key)):
            return None
        return Principal(
            name=record.name,
            role=record.role,
            tenants=frozenset(record.tenants),
            key_id=record.key_id,
        )

    async def ensure_bootstrap(self, key: str | None) -> str | None:
        """Make sure an admin key exists; returns a newly minted key to print once, or None.

        With ``key`` (``CORDUM_API_KEY``) that key is installed as an admin key of every
        tenant when the store does not know it. A key the store knows is left as it is: a
        revoked one stays revoked (an error is logged: a revocation must not be undone by
        a restart with an old environment), and a key of another role or fewer tenants
        keeps them (a warning is logged). Without ``key``, a key is minted only when the
        store holds no key at all.
        """
        if key is not None:
            record = await self.store.get_api_key(key_id_of(key))
            if record is None:
                await self.create(
                    name=BOOTSTRAP_NAME, role=Role.ADMIN, tenants=[ALL_TENANTS], key=key
                )
            elif not hmac.compare_digest(record.secret_hash, key_hash(key)):
                log.error(
                    "CORDUM_API_KEY has the id %s of another key; it is not installed:"
                    " choose another CORDUM_API_KEY",
                    record.key_id,
                )
            elif not record.active:
                log.error(
                    "CORDUM_API_KEY is the revoked key %s: it stays revoked and cannot be used;"
                    " unset CORDUM_API_KEY or set it to an active key (a stopped server's"
                    " store takes `cordum keys create --role admin --tenant '*' --data-dir"
                    " DIR`)",
                    record.key_id,
                )
            elif not _is_root(record):
                log.warning(
                    "CORDUM_API_KEY is the key %s (role %s, tenants %s), not an admin key of"
                    " every tenant; it is left as it is",
                    record.key_id,
                    record.role.value,
                    ",".join(record.tenants),
                )
            return None
        if await self.store.list_api_keys():
            return None
        secret, _ = await self.create(name=BOOTSTRAP_NAME, role=Role.ADMIN, tenants=[ALL_TENANTS])
        return secret


def _is_root(record: ApiKeyRecord) -> bool:
    """An active admin key of every tenant: one of these must always remain."""
    return record.active and record.role is Role.ADMIN and ALL_TENANTS in record.tenants
