"""The decision cache answers exactly as the uncached engine, reload after reload, never
keeps the clock-dependent part of a decision, and keeps what a reload cannot change."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import Scope
from gateway.errors import PolicyDenied
from gateway.policy.cache import DecisionCache
from gateway.policy.decide import ClientConnection, Decision, decide
from gateway.policy.load import PolicySet
from tests.unit.test_policy_engine import BOUND, IAM, RESTRICTED, _iam, _oidc, _set
from tests.unit.test_policy_index import _policy, clients, identities, policy_bodies, scopes

IDENTITIES = [
    _oidc(), _oidc(dag_id="etl", task_id="load"), _oidc(subject="other"),
    _oidc(expires=250), _iam(),
    _iam("arn:aws:sts::111111111111:assumed-role/airflow-prod-worker/laptop"),
]
SCOPES = [Scope("etl", "load"), Scope("etl", "extract"), Scope("d", "t", "r1")]
CLIENTS = [ClientConnection("10.20.1.2", "STANDARD"), ClientConnection("10.20.1.2", "WEBSOCKET"),
           ClientConnection("192.168.1.1", "STANDARD"), ClientConnection("fd12::1", "STANDARD")]


def _outcome(decide_with: Callable[..., Decision], *args: object) -> Decision | str:
    try:
        return decide_with(*args)
    except PolicyDenied as denial:
        return f"{denial.code}: {denial.description}"


@pytest.fixture
def policies(tmp_path: Path) -> PolicySet:
    return _set(tmp_path, IAM + BOUND + RESTRICTED)


def test_every_answer_equals_the_engine_on_miss_and_on_hit(policies: PolicySet) -> None:
    cache = DecisionCache(1000)
    combos = list(itertools.product(IDENTITIES, SCOPES, CLIENTS, (0, 200, 300)))
    outcomes = []
    for _ in range(2):  # the first pass fills the cache, the second is served from it
        for identity, scope, client, now in combos:
            expected = _outcome(decide, policies, identity, scope, client, now)
            got = _outcome(cache.decide, policies, identity, scope, client, now)
            assert got == expected, (identity.subject, scope, client, now)
            outcomes.append(got)
    # Two identities differ only in expiry, which is not part of the key: 5 keys, not 6.
    assert cache.misses == 5 * len(SCOPES) * len(CLIENTS)
    assert cache.hits == 2 * len(combos) - cache.misses
    kinds = {type(o) for o in outcomes}
    assert kinds == {Decision, str}, "the combinations must cover grants and denials"
    assert any(o.startswith("expired_identity") for o in outcomes if isinstance(o, str))


def test_expiry_is_computed_at_every_use(policies: PolicySet) -> None:
    cache = DecisionCache(10)
    identity, client = _oidc(expires=250), ClientConnection("10.20.1.2", "STANDARD")
    first = cache.decide(policies, identity, Scope("d", "t"), client, now=0)
    later = cache.decide(policies, identity, Scope("d", "t"), client, now=100)
    assert (first.expires, later.expires, cache.hits) == (250, 250, 1)
    with pytest.raises(PolicyDenied) as denied:
        cache.decide(policies, identity, Scope("d", "t"), client, now=250)
    assert denied.value.code == "expired_identity"


def test_a_new_policy_set_takes_effect_on_the_next_decision(tmp_path: Path) -> None:
    cache = DecisionCache(10)
    client = ClientConnection("10.20.1.2", "STANDARD")
    before = _set(tmp_path, RESTRICTED)
    assert cache.decide(before, _oidc(), Scope("d", "t"), client, now=0)
    after = _set(tmp_path, IAM)  # the OIDC grant is gone
    with pytest.raises(PolicyDenied) as denied:
        cache.decide(after, _oidc(), Scope("d", "t"), client, now=0)
    assert denied.value.code == "no_matching_policy" and cache.hits == 0


def test_bounded_least_recently_used_first(policies: PolicySet) -> None:
    cache = DecisionCache(2)
    client = ClientConnection("10.20.1.2", "STANDARD")
    for task in ("a", "b", "a", "c"):
        cache.decide(policies, _oidc(), Scope("d", task), client, now=0)
    assert len(cache) == 2
    cache.decide(policies, _oidc(), Scope("d", "a"), client, now=0)  # kept: used recently
    assert cache.hits == 2


def test_size_zero_is_the_plain_engine(policies: PolicySet) -> None:
    cache = DecisionCache(0)
    client = ClientConnection("10.20.1.2", "STANDARD")
    for _ in range(2):
        cache.decide(policies, _oidc(), Scope("d", "t"), client, now=0)
    assert (len(cache), cache.hits) == (0, 0)


def _team(n: int, *, subject: str | None = None, allow: str = "t.{dag_id}.>",
          issuer: str = "corp") -> str:
    return f"""\
- id: team-{n}
  match: {{oidc: {{issuer: {issuer}, subject: "{subject or f'sa:team-{n}:*'}"}}}}
  scopes: [{{dag: "*"}}]
  permissions: {{publish: {{allow: ["{allow}"]}}}}
"""


TEAM0 = _oidc(subject="sa:team-0:worker")
CLIENT = ClientConnection("10.20.1.2", "STANDARD")


def _warm(cache: DecisionCache, policies: PolicySet) -> Decision:
    decision = cache.decide(policies, TEAM0, Scope("d", "t"), CLIENT, now=0)
    assert (cache.misses, cache.hits) == (1, 0)
    return decision


def test_a_reload_that_cannot_affect_an_entry_keeps_it(tmp_path: Path) -> None:
    cache = DecisionCache(10)
    before = _set(tmp_path, _team(0) + _team(1) + _team(2))
    first = _warm(cache, before)
    # Another team's grant edited, one removed, one added: none is team-0's candidate.
    after = _set(tmp_path, _team(0) + _team(1, allow="other.>") + _team(3) +
                 _team(4, subject="*", issuer="elsewhere"))
    decision = cache.decide(after, TEAM0, Scope("d", "t"), CLIENT, now=0)
    assert (cache.misses, cache.hits, cache.kept) == (1, 1, 1)
    assert decision.permissions == first.permissions
    # The record names the set in force, not the one the shape was computed under.
    assert decision.policy_set_hash == after.content_hash != before.content_hash
    cache.decide(after, TEAM0, Scope("d", "t"), CLIENT, now=0)
    assert (cache.hits, cache.kept) == (2, 1)  # confirmed once, then a plain hit


@pytest.mark.parametrize("edit,expected", [
    (_team(0, allow="changed.>"), ("granted", ("changed.>",))),  # its policy edited
    (_team(0) + _team(9, subject="sa:team-*", allow="more.>"),  # a new candidate matches
     ("granted", ("t.d.>", "more.>"))),
    (_team(9, subject="sa:*", allow="x.>") + _team(0),  # a new one, earlier in the set
     ("granted", ("x.>", "t.d.>"))),
    (_team(1), ("no_matching_policy", ())),  # its policy removed
])
def test_a_reload_that_touches_a_candidate_takes_effect_at_once(
        tmp_path: Path, edit: str, expected: tuple[str, tuple[str, ...]]) -> None:
    cache = DecisionCache(10)
    _warm(cache, _set(tmp_path, _team(0) + _team(1)))
    after = _set(tmp_path, edit)
    outcome = _outcome(cache.decide, after, TEAM0, Scope("d", "t"), CLIENT, 0)
    assert outcome == _outcome(decide, after, TEAM0, Scope("d", "t"), CLIENT, 0)
    got = (("granted", outcome.permissions.pub_allow) if isinstance(outcome, Decision)
           else (outcome.split(":")[0], ()))
    assert got == expected
    assert (cache.misses, cache.hits, cache.invalidated) == (2, 0, 1)


pool = st.lists(policy_bodies, min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(pool, st.data())
def test_the_cache_answers_as_the_engine_across_any_reloads(
        bodies: list[dict[str, object]], data: st.DataObject) -> None:
    """Sets drawn from one pool of policies share, reorder, drop and add policies, so
    entries are kept, confirmed and invalidated; every answer must be the engine's."""
    policies = [_policy(n, body) for n, body in enumerate(bodies)]
    picks = st.lists(st.integers(0, len(policies) - 1), unique=True)
    sets = [PolicySet(tuple(policies[i] for i in chosen), f"sha256:{version}")
            for version, chosen in enumerate(data.draw(st.lists(picks, min_size=2,
                                                                max_size=5)))]
    queries = data.draw(st.lists(st.tuples(identities, scopes, clients), min_size=1,
                                 max_size=6))
    cache = DecisionCache(100)
    for policy_set in sets:
        for identity, scope, client in queries:
            assert _outcome(cache.decide, policy_set, identity, scope, client, 0) == \
                _outcome(decide, policy_set, identity, scope, client, 0)


def test_a_reordered_set_is_recomputed(tmp_path: Path) -> None:
    """Order is part of a decision (the policy ids and subjects in the record)."""
    cache = DecisionCache(10)
    wide = _team(9, subject="sa:team-*", allow="more.>")
    first = cache.decide(_set(tmp_path, _team(0) + wide), TEAM0, Scope("d", "t"), CLIENT, 0)
    after = _set(tmp_path, wide + _team(0))
    second = cache.decide(after, TEAM0, Scope("d", "t"), CLIENT, 0)
    assert second == decide(after, TEAM0, Scope("d", "t"), CLIENT, 0)
    assert first.policy_ids == ("team-0", "team-9") and second.policy_ids == (
        "team-9", "team-0")
    assert cache.invalidated == 1
