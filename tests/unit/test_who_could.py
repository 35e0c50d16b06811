"""Who could publish or subscribe on a subject (gateway/audit/who_could.py): the window,
the direction, deny wins, only grants, and grants whose answer never left."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.audit.record import AuditRecord
from gateway.audit.who_could import unsent_grant, who_could
from gateway.natsjwt.subjects import InvalidSubject

T0 = 1_800_000_000.0


def grant(name: str, *, at: float = T0, ttl: int | None = 600, decision: str = "grant",
          pub: dict[str, Any] | None = None, sub: dict[str, Any] | None = None,
          **fields: Any) -> AuditRecord:
    return AuditRecord(
        decision_id=name, decided_at=at, decision=decision, reason_code="granted",
        reason="granted", gateway_instance="gw", latency_ms=1.0, principal=f"p-{name}",
        dag_id="etl", task_id="load", policy_ids=("etl",),
        permissions={"pub": pub or {"allow": ["pipeline.data.etl.>"], "deny": []},
                     "sub": sub or {"allow": ["_INBOX.>"], "deny": []}},
        expires_at=None if ttl is None else int(at) + ttl, **fields)


def names(records: list[AuditRecord], subject: str = "pipeline.data.etl.complete",
          action: str = "publish", **kwargs: Any) -> list[str]:
    return [m.decision_id for m in who_could(records, subject, action,  # type: ignore[arg-type]
                                             **kwargs)]


def test_a_grant_covering_the_subject_is_listed_with_what_covered_it() -> None:
    [match] = list(who_could([grant("g1")], "pipeline.data.etl.complete", "publish"))
    assert match.matched_by == "pipeline.data.etl.>" and match.principal == "p-g1"
    assert match.valid_from == T0 and match.valid_until == T0 + 600
    assert match.policy_ids == ("etl",) and not match.unsent


def test_publish_and_subscribe_are_judged_by_their_own_permissions() -> None:
    records = [grant("g1")]
    assert names(records, "_INBOX.abc", "subscribe") == ["g1"]
    assert names(records, "_INBOX.abc", "publish") == []
    assert names(records, "pipeline.data.etl.x", "subscribe") == []


def test_deny_wins() -> None:
    records = [grant("g1", pub={"allow": ["pipeline.>"], "deny": ["pipeline.data.*.complete"]}),
               grant("g2", pub={"allow": ["pipeline.>"], "deny": ["pipeline.audit.>"]})]
    assert names(records) == ["g2"]


def test_denies_are_never_listed() -> None:
    assert names([grant("d1", decision="deny")]) == []


@pytest.mark.parametrize("since,until,listed", [
    (None, None, True),
    (T0 - 100, T0 + 1, True),    # granted inside the range
    (T0 + 300, T0 + 400, True),  # in force all through the range
    (T0 + 600, None, True),      # expires exactly at `since`: still in force then
    (T0 + 601, None, False),     # expired before the range
    (None, T0, False),           # `until` is exclusive: granted at it is after the range
    (None, T0 - 1, False),       # granted after the range
])
def test_the_window(since: float | None, until: float | None, listed: bool) -> None:
    assert names([grant("g1")], since=since, until=until) == (["g1"] if listed else [])


def test_a_grant_without_expiry_is_in_force_from_then_on() -> None:
    assert names([grant("g1", ttl=None)], since=T0 + 10**6) == ["g1"]


def test_malformed_permissions_on_record_grant_nothing_and_deny_nothing() -> None:
    no_allow = grant("g1", pub={"allow": "pipeline.>", "deny": []})
    odd_deny = grant("g2", pub={"allow": ["pipeline.>"], "deny": "pipeline.data.etl.>"})
    assert names([no_allow, odd_deny]) == ["g2"]


def test_a_grant_whose_answer_never_left_is_listed_and_marked() -> None:
    failed = AuditRecord(
        decision_id="f1", decided_at=T0 + 1, decision="deny", reason_code="reply_failed",
        reason="grant g1 was recorded but its answer could not be sent (TimeoutError); "
               "nats-server refused the connection", gateway_instance="gw", latency_ms=1.0)
    assert unsent_grant(failed) == "g1"
    assert unsent_grant(grant("g2")) is None
    [match] = list(who_could([grant("g1")], "pipeline.data.etl.x", "publish", unsent={"g1"}))
    assert match.unsent


def test_only_a_literal_subject_can_be_asked_about() -> None:
    with pytest.raises(InvalidSubject):
        names([grant("g1")], "pipeline.data.etl.*")
