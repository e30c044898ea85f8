"""Every error the SDK raises, each able to explain itself to a language model.

An agent usually hands a refusal back to the model that asked for the action, so each
error has :meth:`CordumError.as_tool_result`: a JSON-ready dict with the facts (decision,
rule, remediations, job id) and one paragraph telling the model what it may do next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class CordumError(Exception):
    """Base of every SDK error, so one ``except CordumError`` covers them all."""

    def as_tool_result(self) -> dict[str, Any]:
        """What a model should see instead of a traceback."""
        return {"status": "error", "error": type(self).__name__, "message": str(self)}


class CordumAPIError(CordumError):
    """The control plane answered with an error envelope ``{error, code, status}``."""

    def __init__(
        self, status: int, code: str, message: str, body: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.body: dict[str, Any] = dict(body or {})

    def as_tool_result(self) -> dict[str, Any]:
        """The refusal's code and message; the model can usually fix its request from them."""
        return {
            "status": "error",
            "code": self.code,
            "http_status": self.status,
            "message": f"Cordum refused the request: {self.message}",
        }


class CordumUnavailable(CordumError):  # noqa: N818 - public name, kept short
    """The control plane could not be reached, or a proxy in front of it failed."""

    def as_tool_result(self) -> dict[str, Any]:
        """Say plainly that nothing is known to have happened, and how to retry safely."""
        return {
            "status": "unavailable",
            "message": (
                f"The Cordum control plane could not be reached ({self}), so the action may "
                "not have been submitted. Try again later; reuse the same idempotency key so "
                "a repeat cannot run the action twice."
            ),
        }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class PolicyViolationError(CordumError):
    """The Safety Kernel did not let an action run as asked; carries what is needed to re-plan."""

    tool_status: ClassVar[str] = "blocked"
    default_decision: ClassVar[str] = "DENY"

    def __init__(self, rejection: Mapping[str, Any]) -> None:
        self.rejection: dict[str, Any] = dict(rejection)
        self.decision = str(rejection.get("decision") or self.default_decision)
        self.reason = str(rejection.get("reason") or "no reason given")
        self.rule_id = _text(rejection.get("rule_id"))
        self.policy_snapshot = _text(rejection.get("policy_snapshot"))
        self.remediations: list[dict[str, Any]] = [
            dict(r) for r in rejection.get("remediations") or () if isinstance(r, Mapping)
        ]
        self.job_id = _text(rejection.get("job_id"))
        self.trace_id = _text(rejection.get("trace_id"))
        super().__init__(f"{self.decision} by {self._rule()}: {self.reason}")

    def _rule(self) -> str:
        return f"policy rule {self.rule_id!r}" if self.rule_id else "the default policy"

    def _because(self) -> str:
        return self.reason.rstrip(". ")

    def advice(self) -> str:
        """One paragraph telling a model what happened and what it may do instead."""
        return (
            f"The action was blocked by {self._rule()} because {self._because()}. "
            f"{self._alternatives()}Do not retry the same action unchanged."
        )

    def _alternatives(self) -> str:
        if not self.remediations:
            return "No safer alternative was offered; choose a different approach or ask a human. "
        options = "; ".join(
            f"{r.get('title') or r.get('id')} (remediation id {r.get('id')!r})"
            for r in self.remediations
        )
        return f"You may instead: {options}. "

    def as_tool_result(self) -> dict[str, Any]:
        """The decision, the rule, the remediations and the advice, ready for a model."""
        return {
            "status": self.tool_status,
            "decision": self.decision,
            "reason": self.reason,
            "rule_id": self.rule_id,
            "policy_snapshot": self.policy_snapshot,
            "remediations": self.remediations,
            "job_id": self.job_id,
            "message": self.advice(),
        }


class PolicyDenied(PolicyViolationError):  # noqa: N818 - public name, kept short
    """Policy denied the action; it did not run and will not run as submitted."""


class ApprovalRequired(PolicyViolationError):  # noqa: N818 - public name, kept short
    """Policy wants a human to approve the action first; the job waits for that decision."""

    tool_status = "approval_required"
    default_decision = "REQUIRE_APPROVAL"

    def advice(self) -> str:
        """Tell the model to wait on the job rather than submit it again."""
        return (
            f"The action has not run: {self._rule()} requires a human's approval "
            f"({self._because()}). A human must approve job {self.job_id}; wait for the "
            "outcome with that job_id instead of submitting the action again."
        )

    def as_tool_result(self) -> dict[str, Any]:
        """The base result plus the approval reference, if the server gave one."""
        return {**super().as_tool_result(), "approval_ref": self.rejection.get("approval_ref")}


class Throttled(PolicyViolationError):  # noqa: N818 - public name, kept short
    """Policy rate-limited the action; the same action may pass after ``retry_after`` seconds."""

    tool_status = "throttled"
    default_decision = "THROTTLE"

    def __init__(self, rejection: Mapping[str, Any], retry_after: float | None = None) -> None:
        super().__init__(rejection)
        hinted = rejection.get("retry_after")
        if retry_after is None and isinstance(hinted, int | float):
            retry_after = float(hinted)
        self.retry_after = retry_after

    def advice(self) -> str:
        """Tell the model when the same action may be tried again."""
        when = "later" if self.retry_after is None else f"after {self.retry_after:g} seconds"
        return (
            f"The action has not run: {self._rule()} rate-limited it ({self._because()}). "
            f"Retry the same action {when}."
        )

    def as_tool_result(self) -> dict[str, Any]:
        """The base result plus ``retry_after_seconds``."""
        return {**super().as_tool_result(), "retry_after_seconds": self.retry_after}


class OutputQuarantined(PolicyViolationError):  # noqa: N818 - public name, kept short
    """The action ran but policy withheld its output."""

    tool_status = "quarantined"
    default_decision = "QUARANTINE"

    def advice(self) -> str:
        """Tell the model the output is withheld and retrying will not reveal it."""
        return (
            f"The action ran, but its output was quarantined by policy ({self._because()}) "
            "and is withheld. Do not retry the action to obtain the output; tell the user "
            "that it needs a human's review."
        )


class JobOutcomeError(CordumError):
    """A job ended without a result; ``job`` is the job as the server last showed it."""

    tool_status: ClassVar[str] = "error"

    def __init__(self, job: Mapping[str, Any], message: str) -> None:
        super().__init__(message)
        self.job: dict[str, Any] = dict(job)
        self.job_id = _text(job.get("job_id"))
        self.state = _text(job.get("state"))

    def as_tool_result(self) -> dict[str, Any]:
        """The job id, its state and what happened."""
        return {
            "status": self.tool_status,
            "job_id": self.job_id,
            "state": self.state,
            "message": str(self),
        }


class JobFailed(JobOutcomeError):  # noqa: N818 - public name, kept short
    """The job ran and failed (after any retries the server allowed)."""

    tool_status = "failed"

    def __init__(self, job: Mapping[str, Any]) -> None:
        error = job.get("error")
        error = error if isinstance(error, Mapping) else {}
        self.code = str(error.get("code") or "failed")
        self.message = str(error.get("message") or "")
        super().__init__(job, f"The action ran and failed with {self.code}: {self.message}")

    def as_tool_result(self) -> dict[str, Any]:
        """The base result plus the error's code and message."""
        error = {"code": self.code, "message": self.message}
        return {**super().as_tool_result(), "error": error}


class JobCancelled(JobOutcomeError):  # noqa: N818 - public name, kept short
    """The job was cancelled before it finished."""

    tool_status = "cancelled"

    def __init__(self, job: Mapping[str, Any]) -> None:
        super().__init__(job, "The job was cancelled before it finished; it will not complete.")


class JobTimedOut(JobOutcomeError):  # noqa: N818 - public name, kept short
    """The job ran out of time on the server."""

    tool_status = "timeout"

    def __init__(self, job: Mapping[str, Any]) -> None:
        super().__init__(job, "The job ran out of time and was stopped; it has no result.")


class WaitTimeout(CordumError):  # noqa: N818 - public name, kept short
    """The client stopped waiting; the job itself is still going and may finish later."""

    def __init__(self, job_id: str, waited: float | None, state: str | None) -> None:
        self.job_id = job_id
        self.waited = waited
        self.state = state
        super().__init__(f"job {job_id} is still {state or 'running'} after waiting {waited}s")

    def as_tool_result(self) -> dict[str, Any]:
        """Tell the model to wait again on the same job instead of re-submitting."""
        return {
            "status": "pending",
            "job_id": self.job_id,
            "state": self.state,
            "message": (
                f"The job is still {self.state or 'running'}. Wait for it again later with "
                f"job_id {self.job_id}; do not submit the action again."
            ),
        }


class FatalError(Exception):
    """Raise from a worker handler to fail the job for good: the server will not retry it."""
