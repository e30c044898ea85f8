"""Approval notifications, delivered to a real HTTP server on loopback.

Pinned: a webhook receives the notice's exact JSON with a signature that
``verify_signature`` accepts and that fails for a tampered body, a wrong secret or a stale
timestamp; a Slack message links to the approval and escapes user text; deliveries are
retried on 5xx, 429 (after the capped Retry-After) and network errors, never on other
4xx; the hub returns at once, ``drain`` gives up on a receiver that never answers, and
one notifier failing or hanging does not hold up another; nothing logs a secret;
settings refuse a webhook without its secret and build the configured notifiers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.pipeline.harness import running_plane

from cordum.config import Settings, SettingsError
from cordum.models.approval import ApprovalRecord, ApprovalStatus
from cordum.models.job import Job
from cordum.models.keys import Role
from cordum.models.pipeline import JobRecord
from cordum.models.state import JobState
from cordum.services.notify import (
    ApprovalNotice,
    NotifierHub,
    SlackNotifier,
    WebhookNotifier,
    hub_from_settings,
    verify_signature,
)

pytestmark = pytest.mark.anyio

SECRET = "whsec-test-0123456789"
SLACK_TOKEN_PATH = "/services/T0000/B0000/XOXSECRETTOKEN"
NOW = 1_700_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- a scripted receiver -------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How the receiver answers one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    """Never answer (until the test ends)."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """Records every POST and answers from a per-path script (then 200)."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Received] = []
        self.script: dict[str, list[Answer]] = {}
        self.release = asyncio.Event()
        self._arrived = asyncio.Condition()

    def on(self, path: str) -> list[Received]:
        """The requests received on ``path``."""
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until ``count`` requests reached ``path``."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.on(path)) >= count), timeout
            )
        return self.on(path)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.requests.append(
            Received(path, dict(request.headers), await request.body(), time.monotonic())
        )
        async with self._arrived:
            self._arrived.notify_all()
        script = self.script.get(path, [])
        answer = script.pop(0) if script else Answer()
        if answer.hang:
            await self.release.wait()
        text = "ok" if answer.status < 400 else "invalid_payload"
        return Response(text, status_code=answer.status, headers=answer.headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A :class:`Receiver` served by uvicorn on a free loopback port, in the test's loop."""
    recv = Receiver()
    app = Starlette(routes=[Route("/{path:path}", recv.handle, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    recv.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    with anyio.fail_after(5):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield recv
    finally:
        recv.release.set()
        server.should_exit = True
        await task
        sock.close()


# -- records -------------------------------------------------------------------------------


def make_job(**spec: Any) -> JobRecord:
    job = Job(
        topic=spec.pop("topic", "job.k8s.delete-namespace"),
        context=spec.pop("context", {"namespace": "prod", "force": True}),
        risk_tags=("destructive",),
        **spec,
    )
    return JobRecord(
        id="job-1",
        trace_id="trace-1",
        tenant_id="acme",
        spec=job,
        state=JobState.APPROVAL_REQUIRED,
        submitter="agent-7",
        created_at=NOW,
        updated_at=NOW,
    )


def make_approval(**changes: Any) -> ApprovalRecord:
    values: dict[str, Any] = {
        "job_id": "job-1",
        "tenant_id": "acme",
        "topic": "job.k8s.delete-namespace",
        "gate": "A",
        "rule_id": "prod-deletes-need-a-human",
        "reason": "deleting a production namespace",
        "policy_snapshot": "v1:abc123",
        "job_hash": "f" * 64,
        "requested_by": "agent-7",
        "created_at": NOW,
        "expires_at": NOW + 3600,
    }
    values.update(changes)
    return ApprovalRecord(**values)


def independent_signature(secret: str, timestamp: str | int, body: bytes) -> str:
    """The documented scheme, computed here without the module's help."""
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def hub_for(*notifiers: Any, **options: Any) -> NotifierHub:
    options.setdefault("backoff_s", 0.01)
    return NotifierHub(notifiers, approvals_url="https://cordum.example/approvals", **options)


# -- webhook -------------------------------------------------------------------------------


async def test_webhook_receives_the_exact_signed_notice(receiver: Receiver) -> None:
    hub = hub_for(WebhookNotifier(f"{receiver.url}/hook", SECRET))
    approval, job = make_approval(), make_job()

    hub.approval_requested(approval, job)
    # It returned without awaiting anything: the delivery has not even started.
    assert receiver.requests == []
    assert hub.pending == 1
    assert await hub.drain(5)

    [got] = receiver.on("/hook")
    headers = got.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-cordum-event"] == "approval.requested"
    assert len(headers["x-cordum-delivery"]) >= 16
    timestamp, signature = headers["x-cordum-timestamp"], headers["x-cordum-signature"]
    assert abs(int(timestamp) - time.time()) < 60
    assert signature == independent_signature(SECRET, timestamp, got.body)
    assert verify_signature(SECRET, timestamp, got.body, signature)

    payload = json.loads(got.body)
    assert payload["event"] == "approval.requested"
    assert payload["id"] == headers["x-cordum-delivery"]
    assert payload["url"] == "https://cordum.example/approvals/job-1"
    assert payload["approval"] == approval.model_dump(mode="json")
    assert payload["job"] == {
        "id": "job-1",
        "tenant_id": "acme",
        "topic": "job.k8s.delete-namespace",
        "submitter": "agent-7",
        "capability": None,
        "risk_tags": ["destructive"],
        "context": {"namespace": "prod", "force": True},
    }
    assert abs(payload["at"] - time.time()) < 60
    assert (hub.sent, hub.failed) == (1, 0)


async def test_signature_fails_for_a_tampered_body_or_a_wrong_secret(
    receiver: Receiver,
) -> None:
    hub = hub_for(WebhookNotifier(f"{receiver.url}/hook", SECRET))
    hub.approval_resolved(make_approval(status=ApprovalStatus.APPROVED), make_job())
    assert await hub.drain(5)
    [got] = receiver.on("/hook")
    timestamp, signature = got.headers["x-cordum-timestamp"], got.headers["x-cordum-signature"]

    tampered = got.body.replace(b'"approved"', b'"rejected"')
    assert tampered != got.body
    assert not verify_signature(SECRET, timestamp, tampered, signature)
    assert not verify_signature("another-secret", timestamp, got.body, signature)
    assert not verify_signature(SECRET, str(int(timestamp) + 1), got.body, signature)
    assert verify_signature(SECRET, timestamp, got.body, signature)


@pytest.mark.parametrize(
    ("age_s", "genuine"), [(10, True), (299, True), (301, False), (-400, False), (3600, False)]
)
def test_signature_fails_for_a_stale_or_future_timestamp(age_s: int, genuine: bool) -> None:
    body = b'{"event":"approval.requested"}'
    timestamp = str(int(time.time()) - age_s)
    signature = independent_signature(SECRET, timestamp, body)
    assert verify_signature(SECRET, timestamp, body, signature) is genuine


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [("yesterday", "sha256=00"), ("", "sha256=00"), (None, "sha256=ünïcode")],
)
def test_signature_check_refuses_garbage_without_raising(
    timestamp: str | None, signature: str
) -> None:
    stamp = str(int(time.time())) if timestamp is None else timestamp
    assert not verify_signature(SECRET, stamp, b"{}", signature)


# -- retries -------------------------------------------------------------------------------


async def test_retries_server_errors_with_the_same_delivery_id(receiver: Receiver) -> None:
    receiver.script["/hook"] = [Answer(500), Answer(503)]
    hub = hub_for(WebhookNotifier(f"{receiver.url}/hook", SECRET), retries=3)
    hub.approval_requested(make_approval(), make_job())
    assert await hub.drain(5)

    attempts = receiver.on("/hook")
    assert len(attempts) == 3
    assert len({a.headers["x-cordum-delivery"] for a in attempts}) == 1
    assert len({a.body for a in attempts}) == 1
    for attempt in attempts:
        headers = attempt.headers
        assert verify_signature(
            SECRET, headers["x-cordum-timestamp"], attempt.body, headers["x-cordum-signature"]
        )
    assert (hub.sent, hub.failed) == (1, 0)


async def test_gives_up_after_the_last_retry(receiver: Receiver) -> None:
    receiver.script["/hook"] = [Answer(502)] * 10
    hub = hub_for(WebhookNotifier(f"{receiver.url}/hook", SECRET), retries=2)
    hub.approval_requested(make_approval(), make_job())
    assert await hub.drain(5)
    assert len(receiver.on("/hook")) == 3
    assert (hub.sent, hub.failed) == (0, 1)


async def test_client_errors_are_not_retried_and_secrets_stay_out_of_logs(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script["/hook"] = [Answer(400)]
    receiver.script[SLACK_TOKEN_PATH] = [Answer(404)]
    hub = hub_for(
        WebhookNotifier(f"{receiver.url}/hook", SECRET),
        SlackNotifier(f"{receiver.url}{SLACK_TOKEN_PATH}"),
        retries=3,
    )
    with caplog.at_level(logging.INFO, logger="cordum.services.notify"):
        hub.approval_requested(make_approval(job_id="job-1"), make_job())
        assert await hub.drain(5)

    assert len(receiver.on("/hook")) == 1
    assert len(receiver.on(SLACK_TOKEN_PATH)) == 1
    assert (hub.sent, hub.failed) == (0, 2)
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 2
    assert any("webhook" in m and "job-1" in m and "HTTP 400" in m for m in failures)
    assert any("slack" in m and "job-1" in m and "HTTP 404" in m for m in failures)
    assert SECRET not in caplog.text
    assert "XOXSECRETTOKEN" not in caplog.text


@pytest.mark.parametrize(
    "retry_after", ["30", formatdate(time.time() + 3600, usegmt=True)], ids=["seconds", "date"]
)
async def test_429_waits_for_retry_after_capped(receiver: Receiver, retry_after: str) -> None:
    receiver.script["/hook"] = [Answer(429, {"Retry-After": retry_after})]
    # No backoff of its own: any wait between the attempts comes from Retry-After.
    hub = hub_for(
        WebhookNotifier(f"{receiver.url}/hook", SECRET), backoff_s=0.0, max_retry_after_s=0.3
    )
    hub.approval_requested(make_approval(), make_job())
    assert await hub.drain(10)

    first, second = receiver.on("/hook")
    assert 0.3 <= second.at - first.at < 10  # waited, but the cap, not 30s or an hour
    assert (hub.sent, hub.failed) == (1, 0)


async def test_network_errors_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # bound, never listening: connections refused
        hub = hub_for(WebhookNotifier(f"http://127.0.0.1:{closed_port}/hook", SECRET), retries=2)
        with caplog.at_level(logging.INFO, logger="cordum.services.notify"):
            hub.approval_requested(make_approval(), make_job())
            assert await hub.drain(5)
    assert (hub.sent, hub.failed) == (0, 1)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    [final] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "after 3 attempt(s)" in final.getMessage()
    assert "ConnectError" in final.getMessage()


# -- isolation -----------------------------------------------------------------------------


class Boom:
    """A notifier with a bug."""

    name = "boom"

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, notice: ApprovalNotice) -> None:
        self.calls += 1
        raise RuntimeError("notifier bug")


async def test_a_raising_notifier_does_not_affect_the_others(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    boom = Boom()
    hub = hub_for(boom, WebhookNotifier(f"{receiver.url}/hook", SECRET), retries=3)
    with caplog.at_level(logging.WARNING, logger="cordum.services.notify"):
        hub.approval_requested(make_approval(), make_job())  # does not raise
        assert await hub.drain(5)

    assert len(receiver.on("/hook")) == 1
    assert boom.calls == 1  # a bug is not retried
    assert (hub.sent, hub.failed) == (1, 1)
    [record] = caplog.records
    assert "boom" in record.getMessage()
    assert "job-1" in record.getMessage()
    assert record.exc_info is not None  # a bug gets its traceback


async def test_a_receiver_that_never_answers_blocks_nothing(receiver: Receiver) -> None:
    receiver.script["/slow"] = [Answer(hang=True)]
    hub = hub_for(
        WebhookNotifier(f"{receiver.url}/slow", SECRET, timeout=60),
        SlackNotifier(f"{receiver.url}/slack"),
    )
    hub.approval_requested(make_approval(), make_job())
    assert hub.pending == 2

    # The Slack delivery completes while the webhook is stuck mid-request.
    await receiver.wait_for("/slow", 1)
    await receiver.wait_for("/slack", 1)
    with anyio.fail_after(5):
        while hub.sent < 1:
            await asyncio.sleep(0.01)
    assert hub.pending == 1

    with anyio.fail_after(5):  # drain keeps its own deadline, not the notifier's 60s
        assert not await hub.drain(0.2)
    assert hub.pending == 0
    assert (hub.sent, hub.failed) == (1, 1)


async def test_a_hub_without_notifiers_does_nothing() -> None:
    hub = hub_from_settings(Settings())
    hub.approval_requested(make_approval(), make_job())
    assert hub.pending == 0
    assert await hub.drain(0)


# -- Slack ---------------------------------------------------------------------------------

HOSTILE = "<!channel> wipe & <https://evil.example|click here>"
HOSTILE_ESCAPED = "&lt;!channel&gt; wipe &amp; &lt;https://evil.example|click here&gt;"


def block(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in message["blocks"] if b["type"] == kind]


async def test_slack_request_links_to_the_approval_and_escapes_text(receiver: Receiver) -> None:
    hub = hub_for(SlackNotifier(f"{receiver.url}/slack"))
    hub.approval_requested(make_approval(reason=HOSTILE, requested_by="<@U123>"), make_job())
    assert await hub.drain(5)
    [got] = receiver.on("/slack")

    assert "<!channel>" not in got.body.decode()
    assert "<@U123>" not in got.body.decode()
    message = json.loads(got.body)
    assert HOSTILE_ESCAPED in message["text"]
    assert "job.k8s.delete-namespace" in message["text"]

    [header] = block(message, "header")
    assert header["text"]["text"] == "Approval requested: job.k8s.delete-namespace"
    [actions] = block(message, "actions")
    [button] = actions["elements"]
    assert button["text"]["text"] == "Review approval"
    assert button["url"] == "https://cordum.example/approvals/job-1"

    sections = block(message, "section")
    fields = dict(f["text"].split("\n", 1) for f in sections[0]["fields"])
    assert fields["*Topic*"] == "job.k8s.delete-namespace"
    assert fields["*Tenant*"] == "acme"
    assert fields["*Rule*"] == "prod-deletes-need-a-human"
    assert fields["*Requested by*"] == "&lt;@U123&gt;"
    assert fields["*Expires*"].startswith(f"<!date^{int(NOW + 3600)}^")
    assert fields["*Expires*"].endswith("|2023-11-14 23:13 UTC>")
    assert sections[1]["text"]["text"] == f"*Reason*\n{HOSTILE_ESCAPED}"


async def test_slack_resolution_says_who_and_why(receiver: Receiver) -> None:
    hub = hub_for(SlackNotifier(f"{receiver.url}/slack"))
    rejected = make_approval(
        status=ApprovalStatus.REJECTED,
        resolved_by="bob & <alice>",
        resolved_at=NOW + 60,
        resolution_reason=HOSTILE,
    )
    hub.approval_resolved(rejected, make_job())
    assert await hub.drain(5)
    message = json.loads(receiver.on("/slack")[0].body)

    assert message["text"] == (
        "Rejected by bob &amp; &lt;alice&gt;: job.k8s.delete-namespace (tenant acme)"
    )
    [header] = block(message, "header")
    assert header["text"]["text"] == "Rejected: job.k8s.delete-namespace"
    summary = block(message, "section")[1]["text"]["text"]
    assert summary == f"*Rejected by bob &amp; &lt;alice&gt;*\n*Why*: {HOSTILE_ESCAPED}"
    [actions] = block(message, "actions")
    assert actions["elements"][0]["url"] == "https://cordum.example/approvals/job-1"
    assert actions["elements"][0]["text"]["text"] == "View approval"


def test_slack_says_when_nobody_answered() -> None:
    expired = make_approval(status=ApprovalStatus.EXPIRED, resolved_at=NOW + 3600)
    notice = ApprovalNotice.build(
        "approval.resolved", expired, make_job(), url="https://cordum.example/approvals/job-1"
    )
    message = SlackNotifier("https://hooks.slack.invalid/x").message(notice)
    assert message["text"] == "Expired: job.k8s.delete-namespace (tenant acme)"
    summary = block(message, "section")[1]["text"]["text"]
    assert summary == "*Expired*\nNobody answered in time, so the job will not run."


# -- settings ------------------------------------------------------------------------------


def test_a_webhook_url_needs_its_secret() -> None:
    with pytest.raises(SettingsError, match="CORDUM_NOTIFY_WEBHOOK_SECRET is required"):
        Settings.load(environ={"CORDUM_NOTIFY_WEBHOOK_URL": "https://hooks.example/cordum"})
    with pytest.raises(SettingsError, match="CORDUM_NOTIFY_WEBHOOK_SECRET is required"):
        hub_from_settings(Settings(notify_webhook_url="https://hooks.example/cordum"))


def test_notify_urls_must_be_http_and_are_not_echoed() -> None:
    with pytest.raises(SettingsError, match="notify_slack_url must be an http") as caught:
        Settings.load(environ={"CORDUM_NOTIFY_SLACK_URL": "hooks.slack.com/XOXSECRETTOKEN"})
    assert "XOXSECRETTOKEN" not in str(caught.value)


def test_hub_from_settings_builds_the_configured_notifiers() -> None:
    settings = Settings.load(
        environ={
            "CORDUM_NOTIFY_WEBHOOK_URL": "https://hooks.example/cordum",
            "CORDUM_NOTIFY_WEBHOOK_SECRET": SECRET,
            "CORDUM_NOTIFY_SLACK_URL": "https://hooks.slack.com/services/T/B/X",
            "CORDUM_PUBLIC_URL": "https://cordum.example/",
        }
    )
    hub = hub_from_settings(settings)
    assert [n.name for n in hub.notifiers] == ["webhook", "slack"]
    assert hub.approval_url("job-1") == "https://cordum.example/approvals/job-1"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:8081/api/v1/approvals/job%2F1"),
        ("::1", "http://[::1]:8081/api/v1/approvals/job%2F1"),
    ],
)
def test_links_fall_back_to_the_api(host: str, expected: str) -> None:
    hub = hub_from_settings(Settings(host=host))
    assert hub.approval_url("job/1") == expected


# -- wired into the control plane ----------------------------------------------------------


async def test_the_control_plane_notifies_on_request_and_resolution(
    receiver: Receiver, tmp_path: Path
) -> None:
    secret = "wired-secret"
    async with running_plane(
        tmp_path,
        notify_webhook_url=f"{receiver.url}/hook",
        notify_webhook_secret=secret,
        public_url="https://cordum.example.com",
    ) as harness:
        response = await harness.submit("job.test.admin", context={"replicas": 3})
        job_id = response.json()["job_id"]
        (requested,) = await receiver.wait_for("/hook", 1)
        headers = requested.headers
        assert verify_signature(
            secret, headers["x-cordum-timestamp"], requested.body, headers["x-cordum-signature"]
        )
        notice = json.loads(requested.body)
        assert notice["event"] == "approval.requested"
        assert notice["url"] == f"https://cordum.example.com/approvals/{job_id}"
        assert notice["job"]["context"] == {"replicas": 3}

        approver, _ = await harness.plane.keys.create(
            name="alice", role=Role.OPERATOR, tenants=["default"]
        )
        await harness.http.post(
            f"/api/v1/approvals/{job_id}/reject",
            json={"reason": "not today"},
            headers={"X-API-Key": approver},
        )
        _, resolved = await receiver.wait_for("/hook", 2)
        body = json.loads(resolved.body)
        assert body["event"] == "approval.resolved"
        assert body["approval"]["status"] == "rejected"
        assert body["approval"]["resolved_by"] == "alice"
