"""Tell people that an approval is waiting for them, and how it was settled.

A :class:`NotifierHub` is fired by the approval service when an approval is requested and
when it is resolved. It hands an :class:`ApprovalNotice` to every configured
:class:`Notifier` in the background: the approval path never waits for a notifier and
never fails because of one. Two notifiers ship here: a generic :class:`WebhookNotifier`
that signs its body with HMAC-SHA256, and a :class:`SlackNotifier` for Slack incoming
webhooks. A notification is a courtesy, not a record: the store and the audit chain hold
the approval; a lost notification loses nothing but a ping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from cordum.models.approval import ApprovalRecord, ApprovalStatus
from cordum.models.pipeline import JobRecord

if TYPE_CHECKING:
    # Type only: services must not import the configuration at run time (config imports
    # services), and hub_from_settings reads nothing but plain attributes.
    from cordum.config import Settings

log = logging.getLogger(__name__)

NoticeEvent = Literal["approval.requested", "approval.resolved"]

DEFAULT_TIMEOUT_S = 10.0
# The API of a plane on the default host and port; hub_from_settings uses the real ones.
DEFAULT_APPROVALS_URL = "http://127.0.0.1:8081/api/v1/approvals"
SIGNATURE_PREFIX = "sha256="

# Network trouble worth another try. Anything else a notifier raises (a bug, a refused
# payload) would fail the same way again.
_TRANSIENT_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    ConnectionError,
)


class JobSummary(BaseModel):
    """What a reviewer needs to know about the job behind an approval."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    topic: str
    submitter: str | None = None
    capability: str | None = None
    risk_tags: tuple[str, ...] = ()
    context: Any = None
    """The job's input, as submitted."""

    @classmethod
    def of(cls, job: JobRecord) -> JobSummary:
        """The summary of a stored job."""
        return cls(
            id=job.id,
            tenant_id=job.tenant_id,
            topic=job.topic,
            submitter=job.submitter,
            capability=job.spec.capability,
            risk_tags=job.spec.risk_tags,
            context=job.spec.context,
        )


class ApprovalNotice(BaseModel):
    """One thing to tell: an approval was requested or resolved.

    Its JSON form (``model_dump_json()``) is the body of a webhook delivery.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    """Unique per notice; a webhook sends it as ``X-Cordum-Delivery``."""
    event: NoticeEvent
    approval: dict[str, Any]
    """The approval record, JSON-ready (see :class:`~cordum.models.approval.ApprovalRecord`)."""
    job: JobSummary
    url: str
    """Where a person reviews the approval."""
    at: float
    """When the notice was made (Unix seconds)."""

    @classmethod
    def build(
        cls,
        event: NoticeEvent,
        approval: ApprovalRecord,
        job: JobRecord,
        *,
        url: str,
        at: float | None = None,
    ) -> ApprovalNotice:
        """A notice about ``approval`` on ``job``, reviewed at ``url``, made now by default."""
        return cls(
            event=event,
            approval=approval.model_dump(mode="json"),
            job=JobSummary.of(job),
            url=url,
            at=time.time() if at is None else at,
        )


class Notifier(Protocol):
    """Something that delivers approval notices somewhere.

    ``send`` raises on failure: :class:`DeliveryError` says whether another try may
    succeed; network errors from httpx are retried too; anything else is not.
    """

    name: str
    """Names the notifier in logs (never a URL: those can hold secrets)."""

    async def send(self, notice: ApprovalNotice) -> None:
        """Deliver one notice, or raise."""
        ...


class DeliveryError(Exception):
    """A notice was not delivered.

    ``retryable`` says whether the same delivery may succeed later (5xx, 429);
    ``retry_after`` is how long the receiver asked us to wait, in seconds, if it did.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


# -- webhook -------------------------------------------------------------------------------


def sign_body(secret: str, timestamp: str | int, body: bytes) -> str:
    """The ``X-Cordum-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``"{ts}.{body}"``.

    The timestamp is inside the signed message so a captured delivery cannot be replayed
    later under a fresh timestamp.
    """
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes,
    signature: str,
    tolerance_s: float = 300,
) -> bool:
    """Whether a webhook delivery is genuine and recent.

    ``timestamp`` and ``signature`` are the ``X-Cordum-Timestamp`` and
    ``X-Cordum-Signature`` headers, ``body`` the raw request body (before any JSON
    parsing). False if the signature does not match or the timestamp is more than
    ``tolerance_s`` seconds away from now (either way: clocks drift).
    """
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent_at) > tolerance_s:
        return False
    # As bytes: compare_digest refuses non-ASCII text, and a header may hold anything.
    expected = sign_body(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.encode())


class WebhookNotifier:
    """POST each notice as JSON to a URL, signed with a shared secret (neither is logged).

    Headers: ``X-Cordum-Event`` (the notice's event), ``X-Cordum-Delivery`` (the notice's
    id, the same on every retry, so receivers can drop duplicates), ``X-Cordum-Timestamp``
    (Unix seconds, fresh on every attempt) and ``X-Cordum-Signature`` (see
    :func:`sign_body`; check it with :func:`verify_signature`).
    """

    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._url = url
        self._secret = secret
        self.timeout = timeout

    async def send(self, notice: ApprovalNotice) -> None:
        """POST the notice; raise :class:`DeliveryError` unless the receiver answers 2xx."""
        body = notice.model_dump_json().encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Cordum-Event": notice.event,
            "X-Cordum-Delivery": notice.id,
            "X-Cordum-Timestamp": timestamp,
            "X-Cordum-Signature": sign_body(self._secret, timestamp, body),
        }
        await _post(self._url, body, headers, self.timeout)


# -- Slack ---------------------------------------------------------------------------------

# Slack's limits: header text 150 characters, section text 3000, a field 2000.
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000


def slack_escape(text: str) -> str:
    """Text safe inside Slack mrkdwn: ``&``, ``<`` and ``>`` as entities.

    Without this, a job's reason could carry ``<!channel>`` or a disguised
    ``<https://evil|link>`` into the approvers' channel.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(f"*{label}*\n{slack_escape(value)}", _FIELD_MAX)}


def _slack_time(at: float) -> str:
    """A time Slack shows in the reader's time zone, with UTC text as the fallback."""
    utc = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at)}^{{date_short_pretty}} {{time}}|{utc}>"


class SlackNotifier:
    """Post each notice to a Slack incoming webhook, with a button to the approval.

    The webhook URL is a secret (whoever holds it can post to the channel), so it is never
    logged.
    """

    name = "slack"

    def __init__(self, webhook_url: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._webhook_url = webhook_url
        self.timeout = timeout

    async def send(self, notice: ApprovalNotice) -> None:
        """Post the message; raise :class:`DeliveryError` unless Slack answers 2xx."""
        body = json.dumps(self.message(notice)).encode()
        await _post(self._webhook_url, body, {"Content-Type": "application/json"}, self.timeout)

    def message(self, notice: ApprovalNotice) -> dict[str, Any]:
        """The incoming-webhook payload: ``text`` for notifications, ``blocks`` for display."""
        if notice.event == "approval.requested":
            return self._requested(notice)
        return self._resolved(notice)

    def _requested(self, notice: ApprovalNotice) -> dict[str, Any]:
        approval, job = notice.approval, notice.job
        reason = approval.get("reason") or "(no reason given)"
        fields = [
            _field("Topic", job.topic),
            _field("Tenant", job.tenant_id),
            _field("Rule", approval.get("rule_id") or "-"),
            _field("Requested by", approval.get("requested_by") or job.submitter or "unknown"),
        ]
        expires_at = approval.get("expires_at")
        if expires_at is not None:
            fields.append({"type": "mrkdwn", "text": f"*Expires*\n{_slack_time(expires_at)}"})
        text = (
            f"Approval requested for {slack_escape(job.topic)} "
            f"(tenant {slack_escape(job.tenant_id)}): {slack_escape(reason)}"
        )
        blocks = [
            _header(f"Approval requested: {job.topic}"),
            {"type": "section", "fields": fields},
            _section(f"*Reason*\n{slack_escape(reason)}"),
            _button("Review approval", notice.url, primary=True),
            _context(notice),
        ]
        return {"text": _clip(text, _SECTION_MAX), "blocks": blocks}

    def _resolved(self, notice: ApprovalNotice) -> dict[str, Any]:
        approval, job = notice.approval, notice.job
        status = ApprovalStatus(approval["status"])
        by = approval.get("resolved_by")
        outcome = status.value.capitalize() + (f" by {slack_escape(by)}" if by else "")
        lines = [f"*{outcome}*"]
        if status is ApprovalStatus.EXPIRED:
            lines.append("Nobody answered in time, so the job will not run.")
        if approval.get("resolution_reason"):
            lines.append(f"*Why*: {slack_escape(approval['resolution_reason'])}")
        if approval.get("note"):
            lines.append(f"*Note*: {slack_escape(approval['note'])}")
        text = f"{outcome}: {slack_escape(job.topic)} (tenant {slack_escape(job.tenant_id)})"
        fields = [_field("Topic", job.topic), _field("Tenant", job.tenant_id)]
        blocks = [
            _header(f"{status.value.capitalize()}: {job.topic}"),
            {"type": "section", "fields": fields},
            _section("\n".join(lines)),
            _button("View approval", notice.url, primary=False),
            _context(notice),
        ]
        return {"text": _clip(text, _SECTION_MAX), "blocks": blocks}


def _header(text: str) -> dict[str, Any]:
    # plain_text is not parsed for markup, so it needs no escaping.
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(text, _HEADER_MAX)}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, _SECTION_MAX)}}


def _button(label: str, url: str, *, primary: bool) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "url": url,
    }
    if primary:
        button["style"] = "primary"
    return {"type": "actions", "elements": [button]}


def _context(notice: ApprovalNotice) -> dict[str, Any]:
    approval = notice.approval
    parts = [f"job {notice.job.id}", f"gate {approval.get('gate', '?')}"]
    if approval.get("policy_snapshot"):
        parts.append(f"policy {approval['policy_snapshot']}")
    text = slack_escape(" · ".join(parts))
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


# -- delivery ------------------------------------------------------------------------------


async def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    """POST ``body``; raise :class:`DeliveryError` for any answer but 2xx.

    A client per call: notices are rare (one per approval event), and a short-lived client
    leaves nothing to close on shutdown. Redirects are not followed: a signed body must
    not end up somewhere its sender did not choose.
    """
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.post(url, content=body, headers=headers)
    if response.is_success:
        return
    status = response.status_code
    retryable = status == 429 or status >= 500
    raise DeliveryError(
        f"HTTP {status}: {_clip(response.text.strip(), 200)}",
        retryable=retryable,
        retry_after=_retry_after(response.headers.get("Retry-After")) if retryable else None,
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class NotifierHub:
    """Fan approval notices out to notifiers, in the background, with retries.

    ``approval_requested`` and ``approval_resolved`` return at once: every (notice,
    notifier) pair is its own task, so a slow or failing notifier holds up neither the
    approval nor the other notifiers. A delivery is retried up to ``retries`` more times
    on network errors and on 5xx or 429 answers, waiting ``backoff_s`` doubled at each
    try, or what a ``Retry-After`` header asks (at most ``max_retry_after_s``); other
    answers (4xx) are not retried. Deliveries for one approval may arrive out of order;
    receivers can order them by ``at`` and the approval's ``status``.
    """

    def __init__(
        self,
        notifiers: Iterable[Notifier],
        *,
        approvals_url: str = DEFAULT_APPROVALS_URL,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_retry_after_s: float = 30.0,
    ) -> None:
        self.notifiers = tuple(notifiers)
        self.approvals_url = approvals_url.rstrip("/")
        """Links in notices are ``{approvals_url}/{job_id}``."""
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent = 0
        self._failed = 0

    @property
    def sent(self) -> int:
        """Deliveries that succeeded (one per notice and notifier)."""
        return self._sent

    @property
    def failed(self) -> int:
        """Deliveries given up on: refused, out of retries, or still running at ``drain``."""
        return self._failed

    @property
    def pending(self) -> int:
        """Deliveries still running (retries included)."""
        return sum(1 for task in self._tasks if not task.done())

    def approval_url(self, job_id: str) -> str:
        """Where a person reviews the approval of ``job_id``."""
        return f"{self.approvals_url}/{quote(job_id, safe='')}"

    def approval_requested(self, approval: ApprovalRecord, job: JobRecord) -> None:
        """Announce a new approval; returns at once (call it inside the running loop)."""
        self._notify("approval.requested", approval, job)

    def approval_resolved(self, approval: ApprovalRecord, job: JobRecord) -> None:
        """Announce how an approval was settled; returns at once (inside the running loop)."""
        self._notify("approval.resolved", approval, job)

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for deliveries in flight, then cancel the rest.

        Returns True if nothing had to be cancelled. Cancelled deliveries count as failed.
        Called on shutdown, so a stuck receiver cannot hold the process.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while running := {task for task in self._tasks if not task.done()}:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(running, timeout=remaining)
        if not running:
            return True
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        self._failed += len(running)
        log.warning(
            "notify: gave up on %d delivery(ies) still running after %.1fs: %s",
            len(running),
            timeout,
            ", ".join(sorted(task.get_name() for task in running)),
        )
        return False

    def _notify(self, event: NoticeEvent, approval: ApprovalRecord, job: JobRecord) -> None:
        if not self.notifiers:
            return
        notice = ApprovalNotice.build(event, approval, job, url=self.approval_url(approval.job_id))
        loop = asyncio.get_running_loop()
        for notifier in self.notifiers:
            task = loop.create_task(
                self._deliver(notifier, notice),
                name=f"notify {notifier.name} {event} {approval.job_id}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, notifier: Notifier, notice: ApprovalNotice) -> None:
        approval_id = notice.approval["job_id"]
        attempt = 1
        while True:
            try:
                await notifier.send(notice)
            except Exception as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    self._failed += 1
                    log.warning(
                        "notify: %s failed to deliver %s for approval %s after %d attempt(s): %s",
                        notifier.name,
                        notice.event,
                        approval_id,
                        attempt,
                        _describe(exc),
                        # A traceback only for what is neither a refusal nor the network:
                        # that is a bug in the notifier.
                        exc_info=not isinstance(exc, (DeliveryError, *_TRANSIENT_ERRORS)),
                    )
                    return
                log.info(
                    "notify: %s attempt %d for approval %s failed (%s); retrying in %.2fs",
                    notifier.name,
                    attempt,
                    approval_id,
                    _describe(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                attempt += 1
            else:
                self._sent += 1
                return

    def _retry_delay(self, exc: Exception, attempt: int) -> float | None:
        """Seconds before the next attempt, or None when this failure is final."""
        if attempt > self.retries:
            return None
        if isinstance(exc, DeliveryError):
            if not exc.retryable:
                return None
            if exc.retry_after is not None:
                return min(exc.retry_after, self.max_retry_after_s)
        elif not isinstance(exc, _TRANSIENT_ERRORS):
            return None
        return float(self.backoff_s * 2 ** (attempt - 1))


def _describe(exc: Exception) -> str:
    # The class name and message only: httpx's repr of a request would name the URL, and
    # a Slack webhook URL is a secret.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def approvals_url(settings: Settings) -> str:
    """Where approvals are reviewed: the public URL's pages, else this plane's own API."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/approvals"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/api/v1/approvals"


def hub_from_settings(settings: Settings) -> NotifierHub:
    """A hub with the notifiers ``settings`` configure (none at all is a valid hub)."""
    # Settings built directly (not through load) are unchecked: refuse a webhook URL
    # without its secret here too, rather than skip the webhook silently.
    settings.check()
    notifiers: list[Notifier] = []
    if settings.notify_webhook_url and settings.notify_webhook_secret:
        notifiers.append(
            WebhookNotifier(settings.notify_webhook_url, settings.notify_webhook_secret)
        )
    if settings.notify_slack_url:
        notifiers.append(SlackNotifier(settings.notify_slack_url))
    return NotifierHub(notifiers, approvals_url=approvals_url(settings))
