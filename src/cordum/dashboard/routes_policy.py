"""Policy: the active snapshot and its rules, the history, diffs, a simulator, and
(for policy admins) publish and rollback.

Everything shown comes from the policy API's route functions, called in-process with
the viewer's key, so the page shows the policy's text only to those the API shows it to.
Publishing, rolling back and simulating are forms sent to the JSON API itself.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Iterator, Mapping
from itertools import zip_longest
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from cordum.api import routes_policy
from cordum.api.deps import plane_of
from cordum.api.errors import ApiError
from cordum.dashboard.access import viewer
from cordum.dashboard.render import page
from cordum.models.keys import Permission
from cordum.policy import PolicyLoadError
from cordum.policy.loader import bundle_order
from cordum.policy.raw import RULE_LISTS, spelling
from cordum.policy.source import parse_yaml
from cordum.services.policy_admin import text_digest

router = APIRouter(include_in_schema=False)

CONTEXT_LINES: Final = 3
"""Unchanged lines shown around each change in a diff; longer stretches are folded."""
MAX_DIFF_LINES: Final = 20_000
"""Both sides together; beyond this a diff would keep a worker thread busy too long."""
MAX_REF: Final = 200


@router.get("/policy")
async def policy(request: Request) -> Response:
    """The active snapshot (rules and source), the history, the simulator, publish and
    rollback for policy admins."""
    principal = await viewer(request)
    listing = await routes_policy.list_snapshots(request, principal)
    snapshots: list[dict[str, Any]] = listing["snapshots"]
    active = next((s for s in snapshots if s["active"]), None)
    # What the API lets change the policy: policy_admin with a key of every tenant.
    may_change = principal.may(Permission.POLICY_ADMIN) and principal.all_tenants
    sources: dict[str, str] | None = None
    rules: list[dict[str, str]] | None = None
    drafts_changed: list[str] | None = None
    # Asked before fetching, so a viewer opening the page is not audited as refused.
    if active is not None and routes_policy.reads_policy_text(principal):
        reads = [routes_policy.get_snapshot(request, str(active["version"]), principal)]
        if may_change:
            reads.append(routes_policy.list_bundles(request, principal))
        full, *drafts = await asyncio.gather(*reads)
        sources = {
            bundle_id: full["bundles"][bundle_id] for bundle_id in bundle_order(full["bundles"])
        }
        max_bytes = plane_of(request).policy_admin.max_bytes
        rules = await asyncio.to_thread(summarise, sources, max_bytes)
        if drafts:
            drafts_changed = _changed_drafts(sources, drafts[0]["bundles"])
    return page(
        request,
        "policy.html",
        principal,
        section="policy",
        active=active,
        snapshots=snapshots,
        sources=sources,
        rules=rules,
        drafts_changed=drafts_changed,
        may_simulate=principal.may(Permission.SUBMIT),
        may_change=may_change,
    )


def _changed_drafts(sources: Mapping[str, str], drafts: list[dict[str, Any]]) -> list[str]:
    """Bundle ids whose draft differs from the active snapshot (edited, added or removed):
    what a publish would change."""
    draft_digests = {d["bundle_id"]: d["sha256"] for d in drafts}
    active_digests = {bundle_id: text_digest(text) for bundle_id, text in sources.items()}
    return sorted(
        bundle_id
        for bundle_id in draft_digests.keys() | active_digests.keys()
        if draft_digests.get(bundle_id) != active_digests.get(bundle_id)
    )


def summarise(sources: Mapping[str, str], max_bytes: int) -> list[dict[str, str]] | None:
    """One line per rule of each bundle (bundle, kind, id, decision, topics, reason), in
    merge order; None when a bundle does not parse here (the source is still shown).

    Read from the YAML rather than by compiling the policy: a page view must stay cheap,
    and a stored snapshot already passed the loader when it was published.
    """
    lines: list[dict[str, str]] = []
    for bundle_id, text in sources.items():
        try:
            data = parse_yaml(text, bundle_id, max_bytes=max_bytes).data
        except PolicyLoadError:
            return None
        if not isinstance(data, dict):
            continue
        for kind in RULE_LISTS:
            rules = data.get(kind)
            for rule in rules if isinstance(rules, list) else ():
                if isinstance(rule, dict):
                    lines.append(_rule_line(bundle_id, kind, rule))
    return lines


def _rule_line(bundle_id: str, kind: str, rule: dict[str, Any]) -> dict[str, str]:
    match = rule.get(spelling(rule, ("match", "when")))
    topics = match.get("topics") if isinstance(match, dict) else None
    if isinstance(topics, list):
        topics = ", ".join(str(topic) for topic in topics)
    return {
        "bundle": bundle_id,
        "kind": kind.replace("_", " "),
        "id": str(rule.get(spelling(rule, ("id", "name")), "")),
        "decision": str(rule.get("decision", "")).upper(),
        "topics": "any" if topics is None else str(topics),
        "reason": str(rule.get("reason", "")),
    }


@router.get("/policy/diff")
async def policy_diff(request: Request, left: str = "", right: str = "") -> Response:
    """Two snapshots side by side (by version or snapshot id); by default the active one
    against the one published before it."""
    principal = await viewer(request)
    listing = await routes_policy.list_snapshots(request, principal)
    snapshots: list[dict[str, Any]] = listing["snapshots"]
    left, right = left.strip()[:MAX_REF], right.strip()[:MAX_REF]
    if not right and snapshots:
        right = str(listing["active_version"] or snapshots[0]["version"])
    if not left:
        earlier = [s for s in snapshots if str(s["version"]) != right]
        left = str(earlier[0]["version"]) if earlier else ""
    sides: tuple[dict[str, Any], dict[str, Any]] | None = None
    rows: list[dict[str, Any]] | None = None
    problem = None
    status = 200
    if left and right:
        # The API's own check (and its audit of a refusal): the text may name any tenant.
        await routes_policy.may_read_text(request, principal)
        try:
            sides = await asyncio.gather(
                routes_policy.get_snapshot(request, left, principal),
                routes_policy.get_snapshot(request, right, principal),
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            problem, status = exc.message, 404
    if sides is not None:
        before, after = policy_lines(sides[0]["bundles"]), policy_lines(sides[1]["bundles"])
        if len(before) + len(after) > MAX_DIFF_LINES:
            problem = (
                f"these snapshots have {len(before) + len(after)} lines together, more than"
                f" the {MAX_DIFF_LINES} this page compares; compare their bundles through"
                " GET /api/v1/policy/snapshots/{ref}"
            )
        else:
            rows = await asyncio.to_thread(side_by_side, before, after)
    return page(
        request,
        "policy_diff.html",
        principal,
        section="policy",
        status_code=status,
        snapshots=snapshots,
        left=left,
        right=right,
        sides=sides,
        rows=rows,
        problem=problem,
    )


def policy_lines(bundles: Mapping[str, str]) -> list[str]:
    """A snapshot as one text: each bundle, in merge order, under a line naming it."""
    lines: list[str] = []
    for bundle_id in bundle_order(bundles):
        lines.append(f"── bundle {bundle_id} ──")
        lines.extend(bundles[bundle_id].splitlines())
    return lines


def side_by_side(before: list[str], after: list[str]) -> list[dict[str, Any]]:
    """Rows of a two-column diff: ``kind`` is ``same``, ``changed`` or ``fold`` (that many
    unchanged lines not shown); line numbers are 1-based, None where a side has no line.
    Empty when both sides are the same."""
    if before == after:
        return []
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    rows: list[dict[str, Any]] = []
    shown_to = 0
    for group in matcher.get_grouped_opcodes(CONTEXT_LINES):
        first = group[0][1]
        if first > shown_to:
            rows.append({"kind": "fold", "hidden": first - shown_to})
        for tag, i1, i2, j1, j2 in group:
            rows.extend(_rows(tag, before, after, i1, i2, j1, j2))
        shown_to = group[-1][2]
    if shown_to < len(before):
        rows.append({"kind": "fold", "hidden": len(before) - shown_to})
    return rows


def _rows(
    tag: str, before: list[str], after: list[str], i1: int, i2: int, j1: int, j2: int
) -> Iterator[dict[str, Any]]:
    """The rows of one opcode: equal lines side by side, changed ones paired up in order."""
    pairs = zip_longest(range(i1, i2), range(j1, j2))
    for i, j in pairs:
        yield {
            "kind": "same" if tag == "equal" else "changed",
            "left_no": None if i is None else i + 1,
            "left": None if i is None else before[i],
            "right_no": None if j is None else j + 1,
            "right": None if j is None else after[j],
        }
