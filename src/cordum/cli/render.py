"""Human output of the policy commands (``--json`` prints data instead)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from cordum.cli.output import SEVERITY_STYLES, console, decision_text, err_console
from cordum.models import DecisionRecord, Explanation, RuleOutcome, RuleTrace
from cordum.policy.errors import PolicyIssue
from cordum.policy.lint import LintFinding
from cordum.policy.testing import PolicyTestReport

_OUTCOME_MARKS = {
    RuleOutcome.SELECTED: "[bold green]✔ decides[/]",
    RuleOutcome.MATCHED: "[green]✔ matches[/]",
    RuleOutcome.BELOW_VELOCITY: "[yellow]… below rate[/]",
    RuleOutcome.NO_MATCH: "[dim]✘ no match[/]",
    RuleOutcome.NOT_EVALUATED: "[dim]– skipped[/]",
}
MAX_ISSUES_SHOWN = 50


def issues(problems: Sequence[PolicyIssue], headline: str) -> None:
    """Load errors on stderr, compiler style, with a count."""
    err_console.print(f"[bold red]{escape(headline)}[/]")
    for issue in problems[:MAX_ISSUES_SHOWN]:
        err_console.print(escape(issue.format()))
    hidden = len(problems) - MAX_ISSUES_SHOWN
    if hidden > 0:
        err_console.print(f"… and {hidden} more (use --json to see all)")


def notes(problems: Sequence[PolicyIssue]) -> None:
    """Warnings and notes from loading a policy that did load."""
    for issue in problems:
        style = SEVERITY_STYLES.get(issue.severity, "")
        console.print(f"  [{style}]{issue.severity}[/]: {escape(issue.format())}")


def record(result: DecisionRecord) -> None:
    """A decision record as a short report."""
    console.print(f"decision  {decision_text(result.decision)}")
    console.print(f"reason    {escape(result.reason)}")
    console.print(f"rule      {escape(result.rule_id or '(default decision)')}")
    console.print(f"snapshot  [dim]{escape(result.policy_snapshot)}[/]")
    if result.approval_required:
        console.print("approval  [yellow]required before the job may run[/]")
    if result.retry_after_seconds is not None:
        console.print(f"retry     after {result.retry_after_seconds:.1f}s")
    for finding in result.findings:
        console.print(f"found     {escape(finding)}")
    constraints = result.constraints.to_dict()
    if constraints:
        console.print("constraints")
        for line in _flatten(constraints):
            console.print(f"  {escape(line)}")
    if result.remediations:
        console.print("remediations")
        for item in result.remediations:
            target = f" → {item.replacement_topic}" if item.replacement_topic else ""
            console.print(f"  • [bold]{escape(item.id)}[/]: {escape(item.title)}{escape(target)}")
            if item.summary:
                console.print(f"    {escape(item.summary)}")


def _flatten(data: dict[str, object], prefix: str = "") -> list[str]:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.extend(_flatten(value, f"{prefix}{key}."))
        else:
            lines.append(f"{prefix}{key}: {value}")
    return lines


def explanation(result: Explanation, show_all: bool = False) -> None:
    """The decision, then one row per rule whose topics fit the job, in evaluation order."""
    record(result.record)
    shown = [t for t in result.rules if show_all or t.failed_field != "topics"]
    console.print(_trace_table("rules, in evaluation order", shown))
    hidden = len(result.rules) - len(shown)
    if hidden:
        console.print(f"[dim]{hidden} rule(s) for other topics not shown (--all shows them)[/]")
    if result.default_applied:
        console.print("no rule matched: the default decision applied")
    if result.input_rules:
        console.print(_trace_table("input rules", result.input_rules))


def _trace_table(title: str, traces: Sequence[RuleTrace]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("rule", ratio=2, overflow="fold")
    table.add_column("decision", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("why", ratio=3, overflow="fold")
    for trace in traces:
        why = trace.detail
        if trace.failed_field is not None:
            why = f"{trace.failed_field}: {why}"
        table.add_row(
            str(trace.position + 1),
            escape(trace.rule_id),
            decision_text(trace.decision),
            _OUTCOME_MARKS[trace.outcome],
            escape(why),
        )
    return table


def lint_findings(findings: Sequence[LintFinding]) -> None:
    """Lint findings, most severe first."""
    if not findings:
        console.print("[green]✔ no findings[/]")
        return
    for finding in findings:
        style = SEVERITY_STYLES[finding.severity]
        where = f"{finding.source}: " if finding.source and finding.source.line else ""
        rule = f"rule `{finding.rule_id}`: " if finding.rule_id else ""
        console.print(
            f"{escape(where)}[{style}]{finding.severity}[/]\\[{finding.code}]: "
            f"{escape(rule + finding.message)}"
        )
        if finding.hint:
            console.print(f"    hint: {escape(finding.hint)}")
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITY_STYLES}
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n)
    console.print(summary)


def test_report(report: PolicyTestReport) -> None:
    """A table of test results, the failures in detail, and rule coverage."""
    table = Table(title="policy tests", title_justify="left")
    table.add_column("", width=1)
    table.add_column("test", ratio=3)
    table.add_column("decision", no_wrap=True)
    table.add_column("rule", ratio=2, overflow="fold")
    for result in report.results:
        mark = "[green]✔[/]" if result.passed else "[bold red]✘[/]"
        table.add_row(
            mark,
            escape(result.name),
            decision_text(result.actual.decision),
            escape(result.actual.rule_id or "(default)"),
        )
    console.print(table)
    for result in report.failures:
        console.print(
            f"[bold red]FAIL[/] {escape(result.name)}  [dim]{escape(str(result.source))}[/]"
        )
        expected = result.expected
        wanted = expected.decision.value
        if expected.rule_id != "":
            wanted += f" by {expected.rule_id or 'the default decision'}"
        console.print(f"    expected {escape(wanted)}")
        for problem in result.problems:
            console.print(f"    {escape(problem)}")
        console.print(f"    reason: {escape(result.actual.reason)}")
    total = len(report.results)
    failed = len(report.failures)
    status = "[bold red]FAILED[/]" if failed else "[bold green]PASSED[/]"
    console.print(f"{status}: {total - failed}/{total} tests passed")
    console.print(
        f"rule coverage: {report.coverage_percent:.1f}%"
        f" ({len(report.rule_ids) - len(report.uncovered)}/{len(report.rule_ids)} rules)"
    )
    for rule_id in report.uncovered:
        source = report.sources.get(rule_id)
        console.print(f"  [yellow]not exercised[/]: {escape(rule_id)}  [dim]{source or ''}[/]")
