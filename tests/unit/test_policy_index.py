"""The policy index (gateway/policy/index.py) only narrows the scan: random policy sets and
identities decide exactly as the unindexed reference does, grants, denials and reasons."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import Scope
from gateway.errors import PolicyDenied
from gateway.identity.model import Identity
from gateway.policy.decide import (
    ClientConnection,
    decision_from,
    matching,
    matching_unindexed,
    shape_of,
)
from gateway.policy.index import literal_prefix
from gateway.policy.load import PolicySet
from gateway.policy.model import Policy

ISSUERS = ["corp", "https://idp.example", "k8s", ""]
ACCOUNTS = ["111111111111", "222222222222"]
# Few letters, so random globs and values collide often; every fnmatch special included.
globs = st.text(alphabet="ab:-*?[]!", max_size=6)
values = st.text(alphabet="ab:-[]!", max_size=6)
role_globs = st.one_of(st.just("*"), st.builds(
    lambda account, name: f"arn:aws:iam::{account}:role/{name}",
    st.sampled_from([*ACCOUNTS, "*", "11111111111?"]), globs.filter(bool)))


def _oidc_match() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"issuer": st.sampled_from(ISSUERS), "subject": globs},
                                 optional={"claims": st.dictionaries(
                                     st.just("/ns"), globs, max_size=1),
                                     "audience": st.sampled_from(["nats", "other"])})


def _iam_match() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"account": st.sampled_from(ACCOUNTS), "role": role_globs},
                                 optional={"session": globs})


def _policy(position: int, data: dict[str, Any]) -> Policy:
    return Policy.model_validate({"id": f"p{position}", **data})


policy_bodies = st.fixed_dictionaries({
    "match": st.one_of(_oidc_match().map(lambda m: {"oidc": m}),
                       _iam_match().map(lambda m: {"aws_iam": m})),
    "scopes": st.lists(st.fixed_dictionaries({"dag": st.sampled_from(["*", "a*", "b"])}),
                       min_size=1, max_size=2),
    "permissions": st.sampled_from([
        {"publish": {"allow": ["x.{dag_id}.{task_id}"]}},
        {"subscribe": {"deny": ["x.>"]}},
        {"publish": {"allow": ["y.>"]}, "connection_types": ["WEBSOCKET"]},
        {"publish": {"allow": ["z.{dag_id}"]}, "source_networks": ["10.0.0.0/8"]},
    ]),
}, optional={"ttl_seconds": st.integers(1, 1000), "account": st.sampled_from(["A", "B"])})

policy_sets = st.lists(policy_bodies, max_size=12).map(
    lambda bodies: PolicySet(tuple(_policy(n, b) for n, b in enumerate(bodies)), "sha256:x"))

oidc_identities = st.builds(
    lambda issuer, name, subject, ns, aud: Identity(
        method="oidc", issuer=issuer, issuer_name=name, subject=subject, expires=10_000,
        fingerprint="", claims={"sub": subject, "ns": ns, "aud": aud}),
    st.sampled_from(ISSUERS), st.sampled_from(ISSUERS), values, values,
    st.sampled_from(["nats", ["nats", "other"], "x"]))
iam_identities = st.builds(
    lambda account, role, session: Identity(
        method="aws_iam", issuer="sts", subject=str(role), expires=10_000, fingerprint="",
        claims={k: v for k, v in (("account", account), ("role_arn", role),
                                  ("session_name", session)) if v is not None}),
    st.one_of(st.sampled_from(ACCOUNTS), st.none(), st.just(111111111111)),
    st.one_of(st.builds(lambda account, name: f"arn:aws:iam::{account}:role/{name}",
                        st.sampled_from(ACCOUNTS), values), st.none()),
    values)
identities = st.one_of(oidc_identities, iam_identities, st.builds(
    lambda s: Identity(method="other", issuer="corp", issuer_name="corp", subject=s,
                       expires=10_000, fingerprint=""), values))
scopes = st.builds(Scope, st.sampled_from(["a", "ab", "b"]), st.just("t"))
clients = st.sampled_from([ClientConnection("10.1.2.3", "STANDARD"),
                           ClientConnection("192.168.1.1", "WEBSOCKET")])


def _outcome(matched: list[Policy], identity: Identity, scope: Scope,
             client: ClientConnection) -> object:
    try:
        return decision_from(shape_of(matched, identity, scope, client), "h", identity, 0)
    except PolicyDenied as denial:
        return (denial.code, denial.description)


@settings(max_examples=600)
@given(policy_sets, identities, scopes, clients)
def test_indexed_decisions_equal_the_unindexed_reference(
        policy_set: PolicySet, identity: Identity, scope: Scope,
        client: ClientConnection) -> None:
    indexed = matching(policy_set, identity, scope)
    reference = matching_unindexed(policy_set, identity, scope)
    assert [p.id for p in indexed] == [p.id for p in reference]
    assert _outcome(indexed, identity, scope, client) == _outcome(
        reference, identity, scope, client)


@settings(max_examples=300)
@given(globs, values)
def test_a_matching_value_starts_with_the_literal_prefix(pattern: str, value: str) -> None:
    from fnmatch import fnmatchcase
    if fnmatchcase(value, pattern):
        assert value.startswith(literal_prefix(pattern))


def test_literal_prefixes() -> None:
    assert literal_prefix("system:serviceaccount:team-1:*") == "system:serviceaccount:team-1:"
    assert literal_prefix("*") == ""
    assert literal_prefix("ab?c") == "ab"
    assert literal_prefix("a[bc]") == "a"
    assert literal_prefix("exact") == "exact"


def test_only_candidates_of_the_issuer_and_prefix_are_checked() -> None:
    def team(n: int, issuer: str = "k8s", subject: str | None = None) -> Policy:
        return _policy(n, {"match": {"oidc": {"issuer": issuer, "subject": subject or
                                              f"system:serviceaccount:team-{n}:*"}},
                           "scopes": [{"dag": "*"}],
                           "permissions": {"publish": {"allow": ["a.>"]}}})
    policies = PolicySet((team(0), team(1), team(2, "corp"), team(3, subject="*"),
                          team(10)), "sha256:x")
    who = Identity(method="oidc", issuer="https://k8s", issuer_name="k8s", expires=1,
                   subject="system:serviceaccount:team-1:w", fingerprint="")
    assert [p.id for p in policies.index.candidates(who)] == ["p1", "p3"]
