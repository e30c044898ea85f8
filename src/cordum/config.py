"""Settings of a control plane: every runtime default of reference section 4, configurable.

Values come from keyword arguments (the CLI's flags) over environment variables
(``CORDUM_*``; ``POLICY_CHECK_FAIL_MODE`` is also read under the original's name) over
the defaults below. A bad value is a :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cordum.models.subjects import valid_subject
from cordum.services.safety import FailMode


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Everything the wiring needs to build and run a control plane."""

    host: str = "127.0.0.1"
    port: int = 8081
    data_dir: Path = Path(".cordum")
    policy: Path | None = None
    demo: bool = True
    fail_mode: FailMode = FailMode.CLOSED
    gate_a_timeout_s: float = 5.0
    gate_b_timeout_s: float = 2.0
    breaker_failures: int = 3
    breaker_open_s: float = 30.0
    breaker_probes: int = 3
    breaker_successes: int = 2
    max_scheduling_attempts: int = 50
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    throttle_requeue_s: float = 5.0
    dispatch_timeout_s: float = 300.0
    running_timeout_s: float = 900.0
    reconcile_interval_s: float = 30.0
    heartbeat_interval_s: float = 5.0
    worker_lost_after_s: float = 30.0
    default_max_retries: int = 0
    max_body_bytes: int = 1_048_576
    max_labels: int = 128
    max_wait_s: float = 60.0
    pool_queue_limit: int = 100_000
    pools: Mapping[str, str] = field(default_factory=dict)
    durable_writes: bool = False
    auth: bool = True
    """False only with ``--insecure-no-auth``: every caller is an admin of every tenant."""
    api_key: str | None = None
    """``CORDUM_API_KEY``: the bootstrap admin key (else one is minted on first start)."""
    audit_hmac_key: str | None = None
    """Hex or text secret: seal the audit chain with HMAC-SHA256 instead of plain SHA-256."""
    audit_signing_key: Path | None = None
    """File holding the Ed25519 seed (32 bytes, hex) that signs checkpoints; created if absent."""
    audit_checkpoint_s: float = 60.0
    approval_ttl_s: float = 86_400.0
    """How long an approval may wait before it expires (rules may set less or more)."""
    approval_sweep_s: float = 0.5
    public_url: str | None = None
    """Where people reach this control plane (links in notifications)."""
    notify_webhook_url: str | None = None
    """POST a signed JSON notice here when an approval is requested or resolved."""
    notify_webhook_secret: str | None = None
    """The HMAC-SHA256 key that signs webhook notices (required with the URL)."""
    notify_slack_url: str | None = None
    """A Slack incoming-webhook URL to post approval notices to (a secret: never logged)."""
    store_url: str | None = None
    """``redis://…``: keep state in Redis (distributed mode) instead of the SQLite file."""
    bus_url: str | None = None
    """``nats://…``: carry notices and CAP packets on NATS JetStream instead of in-process."""
    redis_prefix: str = "cordum:"
    """Prefix of every Redis key the control plane owns (not CAP's ``ctx:``/``res:``)."""
    redis_commit_linger_s: float = 0.005
    """How long a busy process waits before its next Redis commit, for more writes to join
    it (0: commit as soon as the last one finished)."""
    bus_subject_prefix: str | None = None
    """Prefix every NATS subject (isolates test runs; CAP workers need it unset)."""
    bus_stream: str = "CORDUM"
    """The JetStream stream that keeps submit notices and worker results."""
    kernel_url: str | None = None
    """``host:port`` of a ``cordum kernel`` (gRPC); unset: decide in this process."""
    kernel_token: str | None = None
    """Shared secret between the kernel service and its callers (metadata bearer token)."""
    kernel_listen: str = "127.0.0.1:50051"
    """Where ``cordum kernel`` listens."""
    pool_subjects: tuple[str, ...] = ()
    """Topic patterns whose jobs go to the CAP pool subject ``job.<topic>`` when no worker
    that announces itself serves them (for CAP workers that send no heartbeats)."""
    pool_subject_capacity: int = 64
    """Jobs in flight at once per pool subject (nobody reports the pool's real size)."""
    policy_follow_s: float = 2.0
    """How often a replica checks the store for a policy another replica published."""

    @property
    def distributed(self) -> bool:
        """Whether state and notices live in Redis and NATS (shared by replicas)."""
        return bool(self.store_url and self.bus_url)

    @property
    def store_path(self) -> Path:
        """The SQLite file under the data directory."""
        return self.data_dir / "cordum.db"

    @property
    def audit_signing_key_path(self) -> Path:
        """The checkpoint signing key: ``audit_signing_key``, else one in the data directory."""
        if self.audit_signing_key is not None:
            return self.audit_signing_key
        return self.data_dir / "audit-signing.key"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CORDUM_<NAME>`` variables, then ``overrides`` (None = not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            names = [f"CORDUM_{spec.name.upper()}"]
            if spec.name == "fail_mode":
                names.append("POLICY_CHECK_FAIL_MODE")
            for name in names:
                if env.get(name, "") != "":
                    values[spec.name] = _parse(name, env[name], spec.type)
                    break
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **values)
        settings.check()
        return settings

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "fail_mode", FailMode(str(self.fail_mode).lower()))
        except ValueError:
            raise SettingsError(
                f"fail_mode must be `closed` or `open` (got {self.fail_mode!r})"
            ) from None
        for name in ("data_dir", "policy", "audit_signing_key"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))

    def check(self) -> None:
        """Refuse values that would make the control plane misbehave."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise SettingsError(f"{spec.name} must not be negative (got {value})")
        if not 0 < self.port < 65536:
            raise SettingsError(f"port must be between 1 and 65535 (got {self.port})")
        if self.notify_webhook_url and not self.notify_webhook_secret:
            raise SettingsError(
                "CORDUM_NOTIFY_WEBHOOK_SECRET is required when CORDUM_NOTIFY_WEBHOOK_URL is"
                " set: receivers need it to check that a notice really came from Cordum"
            )
        if self.store_url and not self.store_url.startswith(("redis://", "rediss://")):
            raise SettingsError(
                "CORDUM_STORE_URL must be a redis:// or rediss:// URL (leave it unset for"
                " the embedded SQLite store)"
            )
        if self.bus_url and not self.bus_url.startswith(("nats://", "tls://")):
            raise SettingsError(
                "CORDUM_BUS_URL must be a nats:// or tls:// URL (leave it unset for the"
                " in-process bus)"
            )
        if bool(self.store_url) != bool(self.bus_url):
            raise SettingsError(
                "distributed mode needs both CORDUM_STORE_URL (Redis) and CORDUM_BUS_URL"
                " (NATS): replicas share state through the one and notices through the other"
            )
        host, _, port = self.kernel_listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise SettingsError(
                f"CORDUM_KERNEL_LISTEN must be HOST:PORT, e.g. 0.0.0.0:50051"
                f" (got {self.kernel_listen!r})"
            )
        for pattern in self.pool_subjects:
            if not valid_subject(pattern, pattern=True) or not pattern.startswith("job."):
                raise SettingsError(
                    f"CORDUM_POOL_SUBJECTS: {pattern!r} is not a topic pattern (job.<...>,"
                    " '*' for one token, a final '>' for the rest)"
                )
        for name in ("notify_webhook_url", "notify_slack_url", "public_url"):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                # Not echoed: a Slack webhook URL is a secret.
                raise SettingsError(f"{name} must be an http:// or https:// URL")


def _parse(name: str, text: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if "FailMode" in kind:
            return FailMode(text.strip().lower())
        if "bool" in kind:
            return _parse_bool(text)
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if "Mapping" in kind:
            return _parse_pools(text)
        if kind.startswith("tuple"):
            return tuple(filter(None, (part.strip() for part in text.split(","))))
        if "Path" in kind:
            return Path(text)
    except ValueError as exc:
        raise SettingsError(f"{name}={text!r}: {exc}") from None
    return text


def _parse_bool(text: str) -> bool:
    folded = text.strip().lower()
    if folded in ("1", "true", "yes", "on"):
        return True
    if folded in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_pools(text: str) -> dict[str, str]:
    """``job.k8s.>=k8s,job.db.*=db``: topic pattern = pool, comma separated."""
    pools: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        pattern, sep, pool = item.partition("=")
        if not sep or not pattern.strip() or not pool.strip():
            raise ValueError(f"expected TOPIC_PATTERN=POOL, got {item!r}")
        pools[pattern.strip()] = pool.strip()
    return pools
