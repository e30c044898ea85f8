"""Topic globs: validation, and the fast shapes agree with fnmatch on every topic."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cordum.policy.globs import GlobError, compile_glob, example_topic, glob_covers, normalize_glob

ALPHABET = "ab.*?"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=1, max_size=8), st.text(alphabet="ab.", max_size=10))
def test_compiled_globs_agree_with_fnmatch(glob, topic):
    assert compile_glob(glob)(topic) == fnmatch.fnmatchcase(topic, glob)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=1, max_size=6))
def test_example_topics_match_their_glob(glob):
    assert compile_glob(glob)(example_topic(glob))


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=ALPHABET, min_size=1, max_size=5),
    st.text(alphabet=ALPHABET, min_size=1, max_size=5),
    st.text(alphabet="ab.", max_size=8),
)
def test_coverage_is_sound(general, specific, topic):
    if glob_covers(general, specific) and compile_glob(specific)(topic):
        assert compile_glob(general)(topic)


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("", "empty"),
        ("job. x", "whitespace"),
        ("job.>", "NATS"),
        ("job.[ab", "never closed"),
        ("job.a]", "without a matching"),
        ("job.[]", "empty character class"),
        ("job.[z-a]", "reversed"),
        ("job\\.x", "backslash"),
    ],
)
def test_bad_globs_are_refused(glob, message):
    with pytest.raises(GlobError, match=message):
        normalize_glob(glob)


def test_pathological_globs_stay_linear():
    matches = compile_glob("*a*a*a*a*a*a*a*a*a*a*b")
    assert matches("a" * 5_000) is False
