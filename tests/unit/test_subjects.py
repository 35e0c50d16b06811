"""Subject matching as nats-server applies permissions (gateway/natsjwt/subjects.py): the
vector file, which the real server also answers (test_subject_matching_server.py), and
the subjects "who could?" refuses to be asked about."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.natsjwt.subjects import InvalidSubject, allowed, literal_subject, valid_pattern

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" /
                      "nats_subject_matching.json").read_text())["cases"]


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_the_nats_server_vectors(case: dict[str, Any]) -> None:
    subject = literal_subject(case["subject"])
    assert allowed(case["allow"], case["deny"], subject) is case["allowed"]


def test_an_empty_allow_list_allows_nothing() -> None:
    """The gateway never issues an empty allow list (claims.user_claims denies `>`
    instead), so an empty one on record granted nothing."""
    assert not allowed([], [], literal_subject("a.b"))


@pytest.mark.parametrize("subject,problem", [
    ("", "not a valid subject"), ("a..b", "not a valid subject"),
    (".a", "not a valid subject"), ("a.", "not a valid subject"),
    ("a b", "not a valid subject"), ("a.\tb", "not a valid subject"),
    ("a.*", "a wildcard"), ("a.>", "a wildcard"), (">", "a wildcard"),
])
def test_only_one_literal_subject_can_be_asked_about(subject: str, problem: str) -> None:
    with pytest.raises(InvalidSubject, match=problem):
        literal_subject(subject)


def test_a_token_that_merely_contains_a_wildcard_character_is_literal() -> None:
    assert literal_subject("a.b*.c>") == ("a", "b*", "c>")


@pytest.mark.parametrize("pattern,valid", [
    ("a.b", True), ("a.*", True), ("a.>", True), (">", True), ("*.>", True),
    ("a.>.b", False), ("", False), ("a..b", False), ("a. b", False),
])
def test_which_patterns_nats_server_would_insert(pattern: str, valid: bool) -> None:
    assert valid_pattern(pattern) is valid
