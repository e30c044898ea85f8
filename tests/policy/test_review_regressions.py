"""Regressions for problems found in review: each once gave a wrong decision or a crash."""

from __future__ import annotations

import pytest

from cordum.policy import PolicyLoadError, load, load_text
from tests.policy.helpers import decide, dump, policy, rule


def load_error(text: str) -> list[tuple[str, str | None]]:
    with pytest.raises(PolicyLoadError) as caught:
        load_text(text)
    return [(issue.code, issue.field) for issue in caught.value.issues]


@pytest.mark.parametrize(
    ("written", "job_value"),
    [
        ("1.10", "1.10"),
        ("010", "010"),
        ("0x1F", "0x1F"),
        ("on", "on"),
        ("NO", "no"),
        ("12:30", "12:30"),
    ],
)
def test_label_values_are_compared_as_written_not_as_yaml_retyped_them(written, job_value):
    text = f"rules:\n  - id: r\n    decision: deny\n    match:\n      labels: {{v: {written}}}\n"
    loaded = load_text(text)
    assert loaded.evaluate({"topic": "job.x", "labels": {"v": job_value}}).rule_id == "r"
    implicit = f"rules:\n  - id: r\n    decision: deny\n    match:\n      v: [{written}]\n"
    assert (
        load_text(implicit).evaluate({"topic": "job.x", "labels": {"v": job_value}}).rule_id == "r"
    )


@pytest.mark.parametrize(
    ("key", "where"),
    [
        ("any", "risk_tags"),
        ("allow_tools", "mcp"),
        ("scanners", "input rule"),
        ("has_error", "output rule"),
        ("max_requests", "velocity"),
        ("reason", "rule itself"),
        ("budgets", "constraints"),
    ],
)
def test_field_names_placed_under_match_by_mistake_are_errors(key, where):
    text = dump({"rules": [{"id": "r", "decision": "deny", "match": {key: ["x"]}}]})
    with pytest.raises(PolicyLoadError) as caught:
        load_text(text)
    issue = caught.value.issues[0]
    assert (issue.code, issue.field) == ("misplaced_field", f"match.{key}")
    assert where in issue.message


@pytest.mark.parametrize(
    "match",
    [{"region": []}, {"region": [["eu"]]}, {"region": [{"a": "b"}]}, {"region": ["eu", None]}],
)
def test_implicit_label_values_must_be_a_non_empty_list_of_text(match):
    assert ("bad_label_value", "match.region") in load_error(dump({"rules": [rule(**match)]}))


def test_a_label_with_no_values_is_an_error_not_a_dead_rule():
    assert ("empty_value", "match.labels.env") in load_error(
        dump({"rules": [rule(labels={"env": []})]})
    )


@pytest.mark.parametrize(
    "document",
    [
        {"rules": [rule(label_threshold={"n": 10**400})]},
        {"rules": [rule(label_threshold={"n": float("inf")})]},
        {
            "rules": [
                {"id": "r", "decision": "allow", "constraints": {"max_runtime_sec": float("inf")}}
            ]
        },
        {
            "rules": [
                {
                    "id": "r",
                    "decision": "throttle",
                    "velocity": {"max_requests": 2**63, "window_seconds": 1, "key": "tenant"},
                }
            ]
        },
    ],
)
def test_out_of_range_numbers_are_load_errors_not_crashes(document):
    with pytest.raises(PolicyLoadError) as caught:
        load_text(dump(document))
    assert caught.value.issues[0].code in {"bad_number", "out_of_range"}


def test_two_long_patterns_that_fit_together_still_load():
    document = {
        "input_rules": [
            {"id": "i", "decision": "deny", "match": {"content_patterns": ["a" * 1500, "b" * 1500]}}
        ]
    }
    loaded = policy({"id": "ok", "decision": "allow"}, **document)
    assert decide(loaded, prompt="x" + "b" * 1500)[1] == "i"


@pytest.mark.parametrize("source", ["/dev/zero", "a\x00b", "x" * 5000])
def test_unusable_paths_are_load_errors(source):
    with pytest.raises(PolicyLoadError) as caught:
        load(source)
    assert caught.value.issues[0].code in {"too_large", "file_unreadable", "file_not_found"}


def test_an_empty_velocity_store_is_still_the_store_used():
    from cordum.policy import InMemoryVelocityStore

    class Empty(InMemoryVelocityStore):
        def __len__(self) -> int:
            return 0

    store = Empty()
    assert load_text("rules: []\n", velocity_store=store).velocity_store is store


@pytest.mark.parametrize(
    "job",
    [
        {"labels": []},
        {"labels": ""},
        {"risk_tags": ""},
        {"risk_tags": 0},
        {"requires": "gpu"},
        {1: "a", "topic": "job.x"},
    ],
)
def test_wrong_types_are_refused_even_when_empty_or_falsy(job):
    from cordum.policy import InvalidJobError

    with pytest.raises(InvalidJobError):
        policy(rule()).evaluate({"topic": "job.x", **job})


def test_shared_decision_records_cannot_be_edited_in_place():
    loaded = policy(
        {
            "id": "r",
            "decision": "deny",
            "remediations": [{"id": "m", "title": "t", "add_labels": {"env": "dev"}}],
        }
    )
    record = loaded.evaluate({"topic": "job.x"})
    with pytest.raises(TypeError):
        record.remediations[0].add_labels["env"] = "prod"
    assert loaded.evaluate({"topic": "job.x"}).remediations[0].add_labels == {"env": "dev"}
