"""Commands that talk to a running control plane over its API: job, approve, reject, demo.

They use the SDK client, so they read ``CORDUM_URL``, ``CORDUM_API_KEY`` and
``CORDUM_TENANT_ID`` like every other client. A server that cannot be reached is one
clear line and exit code 3, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.table import Table

from cordum.cli.output import EXIT_FAILED, EXIT_USAGE, console, fail, print_json
from cordum.cli.policy import (
    ActorIdOpt,
    ActorTypeOpt,
    CapabilityOpt,
    ContextOpt,
    JobArg,
    LabelOpt,
    PackIdOpt,
    RequiresOpt,
    RiskTagOpt,
    TenantOpt,
    TopicOpt,
    job_from_options,
)
from cordum.models.pipeline import DEFAULT_TENANT
from cordum.sdk import (
    ApprovalRequired,
    Client,
    CordumAPIError,
    CordumError,
    CordumUnavailable,
    PolicyDenied,
    PolicyViolationError,
    Throttled,
)

EXIT_UNAVAILABLE = 3
T = TypeVar("T")

job_app = typer.Typer(
    help="Submit and inspect jobs on a running control plane.", no_args_is_help=True
)
UrlOpt = typer.Option(
    None, "--url", help="Control plane URL (default: $CORDUM_URL or http://127.0.0.1:8081)."
)
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")


@contextmanager
def _client(url: str | None) -> Iterator[Client]:
    with Client(url) as client:
        yield client


def _call(action: Callable[[], T], json_output: bool) -> T:
    """Run an API call; known failures become a message and an exit code."""
    try:
        return action()
    except CordumUnavailable as exc:
        fail(json_output, str(exc), code="unavailable", exit_code=EXIT_UNAVAILABLE)
    except CordumAPIError as exc:
        message = str(exc)
        if exc.status == 401:
            message += "\nThe CLI sends $CORDUM_API_KEY: export CORDUM_API_KEY=<your key>."
        fail(
            json_output,
            message,
            code=exc.code,
            exit_code=EXIT_USAGE if exc.status < 500 else EXIT_FAILED,
        )
    raise AssertionError("unreachable")


STATE_STYLES = {
    "SUCCEEDED": "bold green",
    "FAILED": "bold red",
    "DENIED": "bold red",
    "CANCELLED": "yellow",
    "TIMEOUT": "red",
    "APPROVAL_REQUIRED": "bold yellow",
    "OUTPUT_QUARANTINED": "bold magenta",
}


def _state(state: str) -> str:
    style = STATE_STYLES.get(state, "cyan")
    return f"[{style}]{state}[/]"


def _print_rejection(exc: PolicyViolationError) -> None:
    decision = exc.decision or "?"
    console.print(f"[bold]{decision}[/]  job {exc.job_id}")
    console.print(f"  rule:   {exc.rule_id or '(default decision)'}")
    console.print(f"  reason: {exc.reason}")
    for remediation in exc.remediations:
        target = remediation.get("replacement_topic")
        hint = f" -> {target}" if target else ""
        console.print(
            f"  remediation [cyan]{remediation.get('id')}[/]: {remediation.get('title')}{hint}"
        )
    if isinstance(exc, ApprovalRequired):
        console.print(f"  approve with: [bold]cordum approve {exc.job_id}[/]")
    if isinstance(exc, Throttled) and exc.retry_after:
        console.print(f"  retry after {exc.retry_after:g} s")


def _print_job(job: dict[str, Any]) -> None:
    console.print(f"job {job['job_id']}  {_state(job['state'])}  topic {job['topic']}")
    if job.get("safety_decision"):
        console.print(
            f"  decision: {job['safety_decision']} by {job.get('safety_rule_id') or 'default'}"
            f" — {job.get('safety_reason')}"
        )
    if job.get("waiting_reason") and job["state"] == "PENDING":
        console.print(f"  waiting:  {job['waiting_reason']}")
    if job.get("result") is not None:
        console.print(f"  result:   {job['result']}")
    if job.get("error"):
        console.print(f"  error:    {job['error'].get('code')}: {job['error'].get('message')}")


@job_app.command("submit")
def submit(
    job: str | None = JobArg,
    topic: str | None = TopicOpt,
    tenant: str | None = TenantOpt,
    capability: str | None = CapabilityOpt,
    risk_tag: list[str] = RiskTagOpt,
    requires: list[str] = RequiresOpt,
    label: list[str] = LabelOpt,
    actor_id: str | None = ActorIdOpt,
    actor_type: str | None = ActorTypeOpt,
    pack_id: str | None = PackIdOpt,
    context: str | None = ContextOpt,
    idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job to finish."),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Submit a job; prints the verdict (exit 1 when refused or when it fails)."""
    spec = job_from_options(
        job,
        topic,
        tenant,
        capability,
        risk_tag,
        requires,
        label,
        actor_id,
        actor_type,
        pack_id,
        context,
        json_output,
    )
    fields = spec.model_dump(exclude_defaults=True, exclude={"topic", "context"})
    fields["input"] = spec.context
    if idempotency_key:
        fields["idempotency_key"] = idempotency_key
    with _client(url) as client:
        try:
            answer = _call(lambda: client.submit(spec.topic, wait=wait, **fields), json_output)
        except PolicyViolationError as exc:
            if json_output:
                print_json({"ok": False, **exc.as_tool_result()})
            else:
                _print_rejection(exc)
            raise typer.Exit(EXIT_FAILED) from None
        except CordumError as exc:
            fail(json_output, str(exc), code="job_failed", exit_code=EXIT_FAILED)
    if json_output:
        print_json({"ok": True, "result" if wait else "answer": answer})
    elif wait:
        console.print(f"[bold green]SUCCEEDED[/]  result: {answer}")
    else:
        console.print(
            f"[bold green]{answer.get('decision', 'ALLOW')}[/]  job {answer['job_id']} accepted"
            f" (rule {answer.get('rule_id') or 'default'})"
        )


@job_app.command("get")
def get(
    job_id: str = typer.Argument(..., help="The job id."),
    wait: float = typer.Option(0, "--wait", help="Seconds to wait for the job to finish."),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Show a job (optionally waiting for it to finish)."""
    with _client(url) as client:
        if wait > 0:
            with contextlib.suppress(CordumError):  # the outcome is shown from the job below
                client.wait(job_id, timeout=wait)
        job = _call(lambda: client.get_job(job_id), json_output)
    if json_output:
        print_json(job)
    else:
        _print_job(job)


@job_app.command("list")
def list_jobs(
    state: str | None = typer.Option(None, "--state", help="A state or comma-separated states."),
    topic: str | None = typer.Option(None, "--topic"),
    limit: int = typer.Option(20, "--limit", min=1, max=500),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """List jobs, newest first."""
    with _client(url) as client:
        page = _call(lambda: client.list_jobs(state=state, topic=topic, limit=limit), json_output)
    if json_output:
        print_json(page)
        return
    table = Table("job", "state", "topic", "decision", "rule", "created")
    for job in page["jobs"]:
        table.add_row(
            job["job_id"],
            _state(job["state"]),
            job["topic"],
            job.get("safety_decision") or "",
            job.get("safety_rule_id") or "",
            job["created_at"],
        )
    console.print(table)


@job_app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., help="The job id."),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Cancel a job that has not finished."""
    with _client(url) as client:
        job = _call(lambda: client.cancel(job_id), json_output)
    if json_output:
        print_json(job)
    else:
        _print_job(job)


def _resolve(job_id: str, approve: bool, reason: str, url: str | None, json_output: bool) -> None:
    with _client(url) as client:
        if approve:
            # Approve exactly what is shown: the server refuses if the request changed.
            asked = _call(lambda: client.get_approval(job_id), json_output)
            if not json_output:
                _print_request(asked)
            job_hash = asked["approval"]["job_hash"]
            answer = _call(
                lambda: client.approve(job_id, reason=reason, job_hash=job_hash), json_output
            )
        else:
            answer = _call(lambda: client.reject(job_id, reason=reason), json_output)
    if json_output:
        print_json(answer)
        return
    console.print(f"{answer['status']}: job {job_id} is now {_state(answer['job']['state'])}")


def _print_request(asked: dict[str, Any]) -> None:
    approval, job = asked["approval"], asked["job"]
    console.print(f"approving job {job['job_id']}  topic {job['topic']}  tenant {job['tenant_id']}")
    console.print(f"  asked by: {approval.get('rule_id') or 'default'} — {approval.get('reason')}")
    console.print(f"  input:    {json.dumps(job.get('input'), ensure_ascii=False)}")


def approve(
    job_id: str = typer.Argument(..., help="The job waiting for approval."),
    reason: str = typer.Option("", "--reason", help="Why (kept with the approval)."),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Approve a job that waits for a human; it then goes through gate B and runs."""
    _resolve(job_id, True, reason, url, json_output)


def reject(
    job_id: str = typer.Argument(..., help="The job waiting for approval."),
    reason: str = typer.Option("", "--reason", help="Why (kept with the rejection)."),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Reject a job that waits for a human; it is DENIED."""
    _resolve(job_id, False, reason, url, json_output)


DEMO_JOBS = (
    ("job.demo.greet", {"name": "Ada"}, "say hello"),
    ("job.demo.delete-all", {"scope": "all-customers"}, "delete every customer record"),
    ("job.demo.admin", {"user": "mallory"}, "grant admin rights"),
)


def _demo_row(client: Client, topic: str, data: dict[str, Any]) -> tuple[str, str, str, str]:
    """(decision, rule, outcome, job id) of one demo job."""
    try:
        result = _call(lambda: client.submit(topic, data, wait=True, timeout=30), False)
    except PolicyDenied as exc:
        remedy = "; ".join(str(r.get("title")) for r in exc.remediations)
        outcome = f"blocked: {exc.reason}" + (f"\nremediation: {remedy}" if remedy else "")
        return "[bold red]DENY[/]", exc.rule_id or "default", outcome, exc.job_id or ""
    except ApprovalRequired as exc:
        return (
            "[bold yellow]REQUIRE_APPROVAL[/]",
            exc.rule_id or "",
            f"waiting for a human: {exc.reason}",
            exc.job_id or "",
        )
    return "[bold green]ALLOW[/]", "demo-greet", f"ran, result: {result}", ""


DEMO_AGENT = "cordum-demo-agent"


def _new_demo_key(you: Client) -> dict[str, Any] | None:
    """A fresh agent key in your tenant, or None when your key may not create keys."""
    try:
        return you.create_key(DEMO_AGENT, "agent", [you.settings.tenant or DEFAULT_TENANT])
    except CordumAPIError as exc:
        if exc.code == "forbidden":
            return None
        raise


@contextmanager
def _demo_agent(you: Client) -> Iterator[Client]:
    """A client acting as an agent: a temporary agent key, revoked when the demo ends.

    Nobody may approve their own job, so the demo's jobs must not be yours if you are to
    approve the one that waits for a human. A key that may not create keys submits them
    itself (and another key has to approve).
    """
    created = _call(lambda: _new_demo_key(you), False)
    if created is None:
        console.print(
            "[dim]Your key may not create keys: the jobs go in as you, and approving one"
            " needs another key.[/]"
        )
        yield you
        return
    console.print(
        f"[dim]The jobs go in under a temporary agent key ({created['key_id']}), revoked"
        " when the demo ends: you approve with your own key.[/]"
    )
    settings = you.settings
    agent = Client(settings.url, api_key=created["key"], tenant=settings.tenant)
    try:
        yield agent
    finally:
        agent.close()
        with contextlib.suppress(CordumError):  # the key is the demo's; failing to tidy is harmless
            you.revoke_key(created["key_id"])


def demo(
    url: str | None = UrlOpt,
    approve_it: bool = typer.Option(
        False, "--approve", help="Also approve the third job and show it succeed."
    ),
) -> None:
    """Submit the demo pack's three jobs as an agent and show what the Safety Kernel decided.

    Uses your key ($CORDUM_API_KEY) to make a temporary agent key for the jobs, and your
    key to approve.
    """
    table = Table("agent wants to", "decision", "rule", "outcome", show_lines=True)
    pending = ""
    with _client(url) as client, _demo_agent(client) as agent:
        for topic, data, intent in DEMO_JOBS:
            decision, rule, outcome, job_id = _demo_row(agent, topic, data)
            table.add_row(f"{intent}\n[dim]{topic}[/]", decision, rule, outcome)
            if "APPROVAL" in decision:
                pending = job_id
        console.print(table)
        if not pending:
            return
        if not approve_it:
            console.print(
                f"Approve the third job:  [bold]cordum approve {pending}[/]\n"
                f"then see it run:        [bold]cordum job get {pending} --wait 10[/]"
            )
            return
        _call(lambda: client.approve(pending, reason="approved in the demo"), False)
        result = _call(lambda: client.wait(pending, timeout=30), False)
        console.print(f"approved job {pending}: [bold green]SUCCEEDED[/]  result: {result}")
