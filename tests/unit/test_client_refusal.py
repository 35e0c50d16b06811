"""The worker's refusal rules: the backoff, the limits, and the error it raises."""

from __future__ import annotations

import pytest

import gateway.client
from gateway.client import GatewayRefused, RefusalPolicy, Scope
from gateway.client.refusal import backoff_delay


def _upper(low: float, high: float) -> float:
    return high


@pytest.mark.parametrize(("attempt", "ceiling"), [
    (0, 0.5), (1, 1.0), (3, 4.0), (5, 16.0), (6, 30.0), (10, 30.0), (10_000, 30.0)])
def test_backoff_doubles_from_the_base_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, 0.5, 30.0, uniform=_upper) == ceiling


def test_backoff_is_full_jitter_from_zero() -> None:
    seen: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        seen.append((low, high))
        return low

    assert backoff_delay(4, 0.5, 30.0, uniform=record) == 0.0
    assert seen == [(0, 8.0)]
    assert all(0 <= backoff_delay(8, 0.5, 30.0) <= 30.0 for _ in range(200))


@pytest.mark.parametrize("kwargs", [
    {"connect_attempts": 0}, {"give_up_after": 0}, {"backoff_cap_seconds": 0}])
def test_a_policy_that_would_never_stop_or_never_wait_is_refused(
        kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RefusalPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("reconnecting", [False, True])
def test_the_error_names_the_scope_and_where_the_reason_is(reconnecting: bool) -> None:
    refused = GatewayRefused(Scope("etl", "grp.load", "manual__1"), 3,
                             reconnecting=reconnecting)
    text = str(refused)
    assert "dag `etl` task `grp.load` run `manual__1`" in text
    assert "3 times in a row" in text
    assert "GET /v1/grants?decision=deny&dag=etl&task=grp.load" in text
    assert "\n" not in text and not text.endswith(".") and text[0].islower()
    assert ("gave up" in text) is reconnecting


def test_the_audit_query_is_url_encoded() -> None:
    refused = GatewayRefused(Scope("etl", "a&b=c"), 1, reconnecting=False)
    assert refused.audit_query().endswith("task=a%26b%3Dc")


def test_the_refusal_types_are_public() -> None:
    assert {"GatewayRefused", "RefusalPolicy"} <= set(gateway.client.__all__)
