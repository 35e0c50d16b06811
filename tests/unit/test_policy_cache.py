"""The decision cache answers exactly as the uncached engine, reload after reload, and
never keeps the clock-dependent part of a decision."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.envelope import Scope
from gateway.errors import PolicyDenied
from gateway.policy.cache import DecisionCache
from gateway.policy.decide import ClientConnection, Decision, decide
from gateway.policy.load import PolicySet
from tests.unit.test_policy_engine import BOUND, IAM, RESTRICTED, _iam, _oidc, _set

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
