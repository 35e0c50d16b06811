"""Property tests: the id encoding is injective and never makes subject syntax, and no two
distinct (dag, task) pairs get overlapping publish rights under the shipped policies."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from gateway.client import task_subject
from gateway.envelope import Scope
from gateway.identity.model import Identity
from gateway.policy.decide import rendered_subjects
from gateway.policy.encode import decode_token, encode_token
from gateway.policy.load import load_policy_dir
from gateway.policy.match import scope_mismatches
from gateway.policy.model import Policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIRS = [ROOT / "policies", ROOT / "policies" / "examples", ROOT / "examples" / "policies"]
SHIPPED: list[Policy] = [p for d in SHIPPED_DIRS for p in load_policy_dir(d).policies]

# Airflow's id alphabet (KEY_REGEX plus `.` for task groups), dots over-weighted because
# they are what could split a subject token.
airflow_ids = st.text(
    alphabet=st.sampled_from(list("ab._-.0Z.")) | st.characters(
        categories=["Ll", "Lu", "Nd"], max_codepoint=127),
    min_size=1, max_size=24)


def subject_matches(pattern: str, subject: str) -> bool:
    """nats-server's wildcard matching of a concrete subject."""
    p, s = pattern.split("."), subject.split(".")
    for index, token in enumerate(p):
        if token == ">":
            return len(s) > index
        if index >= len(s) or (token != "*" and token != s[index]):
            return False
    return len(p) == len(s)


def patterns_overlap(a: str, b: str) -> bool:
    """Is there a concrete subject both patterns match?"""
    x, y = a.split("."), b.split(".")
    for index in range(max(len(x), len(y)) + 1):
        if index < len(x) and x[index] == ">":
            return index < len(y)
        if index < len(y) and y[index] == ">":
            return index < len(x)
        if index == len(x) or index == len(y):
            return len(x) == len(y)
        if "*" not in (x[index], y[index]) and x[index] != y[index]:
            return False
    raise AssertionError("unreachable")


def publish_rights(dag_id: str, task_id: str) -> tuple[str, ...]:
    """What the shipped policies whose scopes cover (dag, task) let it publish. Identity
    matching is left out (any identity may match); claim binding is satisfied."""
    scope = Scope(dag_id, task_id)
    identity = Identity(method="oidc", issuer="i", subject="s", expires=0, fingerprint="",
                        claims={"dag_id": dag_id, "task_id": task_id})
    covering = [p for p in SHIPPED if next(scope_mismatches(p, identity, scope), None) is None]
    return rendered_subjects(covering, scope, "publish", "allow")


def test_the_shipped_policies_are_all_loaded() -> None:
    ids = {p.id for p in SHIPPED}
    assert {"dev-airflow-workers", "team-data-workers", "team-ml-workers", "prod-airflow-role",
            "staging-airflow-role", "per-task-tokens", "reporting-sensors", "etl-producer",
            "etl-consumer-watcher"} <= ids
    assert publish_rights("etl_producer", "publish_complete")  # the property bites


@given(st.text(min_size=1, max_size=40))
def test_encoding_round_trips_and_makes_one_plain_token(value: str) -> None:
    token = encode_token(value)
    assert re.fullmatch(r"[A-Za-z0-9_%\-]+", token)
    assert decode_token(token) == value


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_encoding_is_injective(first: str, second: str) -> None:
    assume(first != second)
    assert encode_token(first) != encode_token(second)


@settings(max_examples=500)
@given(airflow_ids, airflow_ids, airflow_ids, airflow_ids)
@example("a.b", "c", "a", "b.c")
@example("grp", "load", "grp.load", "x")
@example("etl", "grp.load", "etl.grp", "load")
@example("etl_producer", "publish_complete", "etl_producer", "other")
@example("etl_producer", "publish_complete", "data_x", "publish_complete")
def test_distinct_tasks_never_share_publish_rights(d1: str, t1: str, d2: str, t2: str) -> None:
    assume((d1, t1) != (d2, t2))
    first, second = publish_rights(d1, t1), publish_rights(d2, t2)
    for a in first:
        for b in second:
            assert not patterns_overlap(a, b), (a, b)


def test_the_task_group_case_concretely() -> None:
    assert publish_rights("a.b", "c")[0] == "airflow.a%2Eb.c.>"
    assert publish_rights("a", "b.c")[0] == "airflow.a.b%2Ec.>"
    assert task_subject("airflow", "a.b", "c", "done") == "airflow.a%2Eb.c.done"
    assert task_subject("airflow", "a", "b.c", "done") == "airflow.a.b%2Ec.done"


subjects = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4).map(".".join)
patterns = st.lists(st.sampled_from(["a", "b", "*"]), min_size=0, max_size=3).flatmap(
    lambda head: st.sampled_from(["a", "*", ">"]).map(lambda last: ".".join([*head, last])))


@settings(max_examples=400)
@given(patterns, patterns, subjects)
def test_the_overlap_oracle_agrees_with_matching(a: str, b: str, subject: str) -> None:
    """The test's own oracle: a subject matched by both patterns implies an overlap."""
    if subject_matches(a, subject) and subject_matches(b, subject):
        assert patterns_overlap(a, b)


def test_the_overlap_oracle_on_known_cases() -> None:
    assert patterns_overlap("airflow.a.>", "airflow.*.b")
    assert patterns_overlap("a.>", "a.b.c")
    assert not patterns_overlap("a.>", "a")
    assert not patterns_overlap("airflow.a%2Eb.c.>", "airflow.a.b%2Ec.>")
    assert not patterns_overlap("a.*", "a.b.c")
