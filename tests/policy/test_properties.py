"""Properties of the Safety Kernel that must hold for every policy and every job."""

from __future__ import annotations

import random
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cordum.models import Decision
from cordum.policy import InMemoryVelocityStore, load_text
from cordum.policy.engine import Policy
from cordum.policy.lint import lint
from tests.policy.naive import NaiveEvaluator, matches
from tests.policy.naive import normalize as naive_normalize
from tests.policy.strategies import jobs, policies


def _dump(document: Any, **options: Any) -> str:
    return yaml.dump(document, Dumper=yaml.CSafeDumper, **options)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(document: dict[str, Any]) -> Policy:
    policy = load_text(_dump(document, sort_keys=False))
    return policy.with_velocity_store(InMemoryVelocityStore(clock=lambda: 0.0))


@SETTINGS
@given(policies(), st.lists(jobs(), min_size=1, max_size=15))
def test_compiled_evaluator_agrees_with_a_naive_first_match_loop(document, job_list):
    policy = _load(document)
    naive = NaiveEvaluator(policy.document)
    for job in job_list:
        record = policy.evaluate(job)
        assert (record.decision, record.rule_id) == naive.evaluate(job), job


@SETTINGS
@given(policies(), jobs())
def test_evaluation_is_deterministic(document, job):
    text = _dump(document, sort_keys=False)
    first, second = load_text(text), load_text(text)
    assert first.snapshot_id == second.snapshot_id
    assert first.simulate(job) == first.simulate(job) == second.simulate(job)


@SETTINGS
@given(policies(), jobs())
def test_simulate_and_explain_never_count_velocity_and_agree(document, job):
    policy = _load(document)
    before = policy.simulate(job)
    for _ in range(5):
        explained = policy.explain(job)
        assert explained.record == before
        assert policy.simulate(job) == before
    selected = [t.rule_id for t in explained.rules if t.outcome == "selected"]
    assert selected == ([] if explained.default_applied else [before.rule_id])


def _shuffle_keys(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffle_keys(child, rng) for key, child in items}
    if isinstance(value, list):
        return [_shuffle_keys(child, rng) for child in value]
    return value


_SET_FIELDS = {
    "topics",
    "tenants",
    "capabilities",
    "requires",
    "pack_ids",
    "actor_ids",
    "actor_types",
}


def _reorder_sets(value: Any, rng: random.Random, parent: str = "") -> Any:
    """Reorder set-like lists and re-case decisions: meaning-preserving edits."""
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            if key == "decision" and isinstance(child, str):
                out[key] = rng.choice([child.upper(), child.lower(), child.title()])
            else:
                out[key] = _reorder_sets(child, rng, key)
        return out
    if isinstance(value, list):
        items = [_reorder_sets(child, rng, parent) for child in value]
        if parent in _SET_FIELDS:
            rng.shuffle(items)
        return items
    return value


@SETTINGS
@given(policies(), st.randoms(use_true_random=False), st.booleans())
def test_snapshot_id_survives_key_reordering_and_reformatting(document, rng, flow):
    original = load_text(_dump(document, sort_keys=False)).snapshot_id
    rewritten = _reorder_sets(_shuffle_keys(document, rng), rng)
    text = _dump(rewritten, sort_keys=False, default_flow_style=flow, indent=4, width=60)
    assert load_text("# reformatted\n" + text).snapshot_id == original


def _mutations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every single semantic edit we can make to the document."""
    import copy

    out = []
    rules = document["rules"]
    for i, rule in enumerate(rules):
        for decision in ("allow", "deny", "require_approval", "throttle"):
            if (
                Decision(decision.upper())
                != load_text(_dump({"rules": [rule]})).rules[0].rule.decision
            ):
                changed = copy.deepcopy(document)
                changed["rules"][i]["decision"] = decision
                changed["rules"][i].pop("constraints", None)
                out.append(changed)
                break
        changed = copy.deepcopy(document)
        changed["rules"][i]["reason"] = rule.get("reason", "") + " (edited)"
        out.append(changed)
        changed = copy.deepcopy(document)
        changed["rules"][i]["match"] = {**rule["match"], "pack_ids": ["brand-new-pack"]}
        out.append(changed)
        changed = copy.deepcopy(document)
        del changed["rules"][i]
        out.append(changed)
        if i:
            changed = copy.deepcopy(document)
            changed["rules"][i - 1], changed["rules"][i] = rules[i], rules[i - 1]
            out.append(changed)
    added = copy.deepcopy(document)
    added["rules"].append({"id": "added", "decision": "deny", "match": {"topics": ["job.x"]}})
    out.append(added)
    other_version = copy.deepcopy(document)
    other_version["version"] = document["version"] + ".1"
    out.append(other_version)
    return out


@settings(max_examples=100, deadline=None)
@given(policies(max_rules=6))
def test_snapshot_id_changes_under_every_semantic_change(document):
    original = load_text(_dump(document, sort_keys=False)).snapshot_id
    for changed in _mutations(document):
        assert load_text(_dump(changed, sort_keys=False)).snapshot_id != original, changed


@SETTINGS
@given(policies(), st.lists(jobs(), min_size=1, max_size=20))
def test_lint_never_calls_a_reachable_rule_shadowed(document, job_list):
    policy = load_text(_dump(document, sort_keys=False))
    by_id = {rule.rule.id: rule.rule for rule in policy.rules}
    for finding in lint(policy):
        if finding.code not in ("unreachable-rule", "allow-shadows-deny"):
            continue
        shadower = finding.message.split("`")[1]
        for job in job_list:
            normalized = naive_normalize(job, policy.document.default_tenant)
            if matches(by_id[finding.rule_id].match, normalized):
                assert matches(by_id[shadower].match, normalized), (finding, job)


@SETTINGS
@given(policies(), jobs())
def test_cached_and_uncached_candidates_agree(document, job):
    from cordum.policy.job_input import to_policy_input

    policy = load_text(_dump(document, sort_keys=False))
    normalized = to_policy_input(job, policy.document.default_tenant)
    index = policy._index
    assert index.candidates(normalized) == index.candidates_uncached(normalized)
