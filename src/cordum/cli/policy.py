"""``cordum policy``: check, lint, test, simulate, explain, hash and schema.

Exit codes: 0 success, 1 the check ran and found failures (lint findings, failing
tests), 2 the input could not be used (invalid policy, job or fixture, bad usage).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from cordum.cli import render
from cordum.cli.jobs import JobFlags, build_job
from cordum.cli.output import EXIT_FAILED, EXIT_USAGE, console, print_json
from cordum.models import Decision, Job
from cordum.policy import Policy, PolicyLoadError, load
from cordum.policy.errors import PolicyIssue
from cordum.policy.lint import SEVERITIES, lint
from cordum.policy.schema import DIALECTS, document_json_schema
from cordum.policy.source import DEFAULT_MAX_BYTES
from cordum.policy.testing import discover_test_files, load_test_cases, run_tests

policy_app = typer.Typer(
    help="Check, lint, test and try out safety policies (the Safety Kernel's input);"
    " publish, roll back and diff them on a running server.",
    no_args_is_help=True,
)

T = TypeVar("T")
DECISION_EXIT_CODES = {
    Decision.ALLOW: 0,
    Decision.ALLOW_WITH_CONSTRAINTS: 0,
    Decision.DENY: 3,
    Decision.REQUIRE_APPROVAL: 4,
    Decision.THROTTLE: 5,
}

PolicyArg = typer.Argument(
    ..., help="A policy file, or a directory of bundles (base.yaml first, then key order)."
)
DialectOpt = typer.Option(
    "cordum",
    "--dialect",
    help="`original`: read the policy as the original Cordum does (plain risk_tags = any of).",
)
MaxBytesOpt = typer.Option(
    DEFAULT_MAX_BYTES, "--max-bytes", help="Refuse policy files larger than this."
)
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _guard(action: Callable[[], T], *, json_output: bool, headline: str) -> T:
    """Run ``action``; print load errors and exit 2 instead of raising."""
    try:
        return action()
    except PolicyLoadError as exc:
        if json_output:
            print_json({"ok": False, "errors": [issue.to_dict() for issue in exc.issues]})
        else:
            render.issues(exc.issues, headline)
        raise typer.Exit(EXIT_USAGE) from None


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise typer.BadParameter(f"use one of: {', '.join(DIALECTS)}", param_hint="--dialect")


def _load(
    policy: Path,
    *,
    dialect: str,
    json_output: bool,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Policy:
    _check_dialect(dialect)
    return _guard(
        lambda: load(policy, dialect=dialect, strict=strict, max_bytes=max_bytes),
        json_output=json_output,
        headline=f"{policy}: policy not loaded",
    )


@policy_app.command()
def check(
    policy: Path = PolicyArg,
    strict: bool = typer.Option(False, "--strict", help="Refuse match keys that are not fields."),
    dialect: str = DialectOpt,
    max_bytes: int = MaxBytesOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Validate a policy: exit 0 if it loads, 2 (with every error) if it does not."""
    loaded = _load(
        policy, dialect=dialect, json_output=json_output, strict=strict, max_bytes=max_bytes
    )
    warnings = [note for note in loaded.merged.notes if note.severity != "info"]
    infos = [note for note in loaded.merged.notes if note.severity == "info"]
    if json_output:
        print_json(
            {
                "ok": True,
                "snapshot_id": loaded.snapshot_id,
                "rules": len(loaded.rules),
                "input_rules": len(loaded.all_input_rules),
                "output_rules": len(loaded.output_rules),
                "bundles": list(loaded.merged.bundle_ids),
                "warnings": [note.to_dict() for note in warnings],
                "notes": [note.to_dict() for note in infos],
            }
        )
        return
    console.print(
        f"[bold green]✔[/] {policy}: {len(loaded.rules)} rules, {len(loaded.all_input_rules)} input"
        f" rules, {len(loaded.output_rules)} output rules, default {loaded.default_decision.value}"
    )
    console.print(f"  snapshot {loaded.snapshot_id}")
    if len(loaded.merged.bundle_ids) > 1:
        console.print(f"  bundles, in merge order: {', '.join(loaded.merged.bundle_ids)}")
    render.notes([*warnings, *infos])


@policy_app.command("lint")
def lint_command(
    policy: Path = PolicyArg,
    dialect: str = DialectOpt,
    label_key: list[str] = typer.Option(
        [], "--label-key", help="A label key your agents send (repeatable); others are flagged."
    ),
    fail_on: str = typer.Option(
        "warning",
        "--fail-on",
        help="Exit 1 on findings of this severity or worse: error, warning, info, never.",
    ),
    max_bytes: int = MaxBytesOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Find rules that never fire, allows shadowing denies, unknown labels, missing reasons."""
    if fail_on not in (*SEVERITIES, "never"):
        raise typer.BadParameter("use error, warning, info or never", param_hint="--fail-on")
    loaded = _load(policy, dialect=dialect, json_output=json_output, max_bytes=max_bytes)
    findings = lint(loaded, label_keys=label_key)
    if json_output:
        print_json({"ok": True, "findings": [finding.to_dict() for finding in findings]})
    else:
        render.lint_findings(findings)
    if fail_on != "never":
        threshold = SEVERITIES.index(fail_on)
        if any(SEVERITIES.index(f.severity) <= threshold for f in findings):
            raise typer.Exit(EXIT_FAILED)


@policy_app.command("test")
def run_policy_tests(
    policy: Path = PolicyArg,
    tests: list[Path] = typer.Argument(
        None, help="Fixture files or directories (default: *_test.yaml files next to POLICY)."
    ),
    min_coverage: float = typer.Option(
        0.0, "--min-coverage", help="Fail below this rule coverage (percent)."
    ),
    dialect: str = DialectOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Run policy tests: YAML jobs with the decision (and rule) they must get."""
    loaded = _load(policy, dialect=dialect, json_output=json_output)
    paths = list(tests) if tests else [policy if policy.is_dir() else policy.parent]
    files = discover_test_files(paths)
    if not files:
        _fail_usage(
            json_output, "no_tests", f"no *_test.yaml files under {', '.join(map(str, paths))}"
        )
    cases = _guard(
        lambda: load_test_cases(files), json_output=json_output, headline="test fixtures not loaded"
    )
    report = run_tests(loaded, cases)
    if json_output:
        print_json({"ok": True, **report.to_dict()})
    else:
        render.test_report(report)
    if not report.passed or report.coverage_percent < min_coverage:
        raise typer.Exit(EXIT_FAILED)


def job_from_options(
    job: str | None,
    topic: str | None,
    tenant: str | None,
    capability: str | None,
    risk_tag: list[str],
    requires: list[str],
    label: list[str],
    actor_id: str | None,
    actor_type: str | None,
    pack_id: str | None,
    context: str | None,
    json_output: bool,
) -> Job:
    flags = JobFlags(
        topic=topic,
        tenant=tenant,
        capability=capability,
        actor_id=actor_id,
        actor_type=actor_type,
        pack_id=pack_id,
        risk_tags=risk_tag,
        requires=requires,
        labels=label,
        context=context,
    )
    return _guard(lambda: build_job(job, flags), json_output=json_output, headline="job not usable")


JobArg = typer.Argument(
    None, help="A JSON or YAML file with the fields of POST /api/v1/jobs ('-' = stdin)."
)
TopicOpt = typer.Option(None, "--topic", help="Job topic, e.g. job.k8s.delete-namespace.")
TenantOpt = typer.Option(None, "--tenant", help="Tenant id.")
CapabilityOpt = typer.Option(None, "--capability", help="Capability the job needs.")
RiskTagOpt = typer.Option([], "--risk-tag", help="Risk tag (repeatable).")
RequiresOpt = typer.Option([], "--requires", help="Required item (repeatable).")
LabelOpt = typer.Option([], "--label", help="Label key=value (repeatable).")
ActorIdOpt = typer.Option(None, "--actor-id")
ActorTypeOpt = typer.Option(None, "--actor-type")
PackIdOpt = typer.Option(None, "--pack-id")
ContextOpt = typer.Option(None, "--context", help="The job input as JSON.")


@policy_app.command()
def simulate(
    policy: Path = PolicyArg,
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
    dialect: str = DialectOpt,
    exit_code: bool = typer.Option(
        False, "--exit-code", help="Exit 3 on DENY, 4 on REQUIRE_APPROVAL, 5 on THROTTLE."
    ),
    json_output: bool = JsonOpt,
) -> None:
    """Decide a job without side effects and print the decision record."""
    loaded = _load(policy, dialect=dialect, json_output=json_output)
    the_job = job_from_options(
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
    result = loaded.simulate(the_job)
    if json_output:
        print_json(result.to_dict())
    else:
        render.record(result)
    if exit_code:
        raise typer.Exit(DECISION_EXIT_CODES[result.decision])


@policy_app.command()
def explain(
    policy: Path = PolicyArg,
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
    dialect: str = DialectOpt,
    show_all: bool = typer.Option(False, "--all", help="Also list rules for other topics."),
    json_output: bool = JsonOpt,
) -> None:
    """Decide a job and show, for every rule in order, whether it matched and why not."""
    loaded = _load(policy, dialect=dialect, json_output=json_output)
    the_job = job_from_options(
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
    result = loaded.explain(the_job)
    if json_output:
        print_json(result.to_dict())
    else:
        render.explanation(result, show_all=show_all)


@policy_app.command("hash")
def hash_command(
    policy: Path = PolicyArg,
    dialect: str = DialectOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Print the snapshot id: "<version>:<sha256>" of the policy's canonical form."""
    loaded = _load(policy, dialect=dialect, json_output=json_output)
    if json_output:
        version, _, digest = loaded.snapshot_id.partition(":")
        print_json({"snapshot_id": loaded.snapshot_id, "version": version, "sha256": digest})
    else:
        print(loaded.snapshot_id)


@policy_app.command()
def schema(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to a file instead of stdout."
    ),
) -> None:
    """Print the JSON Schema of policy documents (for editor completion and validation)."""
    document = document_json_schema()
    if output is None:
        print_json(document)
        return
    import json

    try:
        output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        _fail_usage(False, "write_failed", f"cannot write {output}: {exc.strerror}")
    console.print(f"wrote {output}")


def _fail_usage(json_output: bool, code: str, message: str) -> Any:
    issue = PolicyIssue(code=code, message=message, file="cordum")
    if json_output:
        print_json({"ok": False, "errors": [issue.to_dict()]})
    else:
        render.issues([issue], message)
    raise typer.Exit(EXIT_USAGE)
