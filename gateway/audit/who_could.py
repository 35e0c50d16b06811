"""Who could publish or subscribe on a subject during a time range? From the grants on
record, each judged as nats-server judged the user JWT it carried.

A grant counts when its window overlaps the range (granted before ``until``, expiring at
or after ``since``; a grant with no expiry is open-ended) and its stored permissions for
the action cover the subject (``natsjwt.subjects``: allow minus deny). The permissions
judged are the ones recorded with the grant, not today's policies: a policy edited since
changes nothing here. A grant whose answer never reached nats-server (a later
``reply_failed`` record names it) is still listed, marked ``unsent``: an auditor is shown
more, never less. Response permissions (replying to requests received) are dynamic and
not judged. Pure: records in, matches out.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from gateway.audit.record import AuditRecord
from gateway.natsjwt.subjects import allowed, literal_subject, pattern_matches

__all__ = ["ACTIONS", "Action", "CouldAct", "in_window", "unsent_grant", "who_could"]

Action = Literal["publish", "subscribe"]
ACTIONS: dict[str, str] = {"publish": "pub", "subscribe": "sub"}
# The reason of a reply_failed record names the grant it follows (callout/handler.py).
_UNSENT = re.compile(r"^grant ([0-9A-Za-z_-]{1,64}) was recorded but its answer could not")


@dataclass(frozen=True)
class CouldAct:
    """One grant whose permissions covered the subject."""

    decision_id: str
    principal: str
    method: str
    dag_id: str
    task_id: str
    run_id: str
    policy_ids: tuple[str, ...]
    policy_set_hash: str
    valid_from: float
    valid_until: float | None
    matched_by: str  # the allow pattern that covers the subject
    gateway_instance: str
    chain_seq: int | None
    unsent: bool

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "policy_ids": list(self.policy_ids)}


def unsent_grant(record: AuditRecord) -> str | None:
    """The grant a ``reply_failed`` record says never reached nats-server."""
    if record.reason_code != "reply_failed":
        return None
    found = _UNSENT.match(record.reason)
    return found.group(1) if found else None


def in_window(record: AuditRecord, since: float | None, until: float | None) -> bool:
    """Was the grant in force at some time in [since, until)?"""
    if until is not None and record.decided_at >= until:
        return False
    return since is None or record.expires_at is None or record.expires_at >= since


def _patterns(permissions: dict[str, Any], direction: str) -> tuple[list[str], list[str]]:
    """Allow and deny of one direction; anything not a list of strings counts as none
    (allow: nothing granted; deny: nothing taken away, so the grant is shown)."""
    side = permissions.get(direction)
    side = side if isinstance(side, dict) else {}

    def strings(key: str) -> list[str]:
        value = side.get(key)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    return strings("allow"), strings("deny")


def _covering(record: AuditRecord, direction: str, subject: tuple[str, ...]) -> str | None:
    allow, deny = _patterns(record.permissions, direction)
    if not allowed(allow, deny, subject):
        return None
    return next(p for p in allow if pattern_matches(p, subject))


def who_could(records: Iterable[AuditRecord], subject: str, action: Action, *,
              since: float | None = None, until: float | None = None,
              unsent: Collection[str] = ()) -> Iterator[CouldAct]:
    """Each grant in ``records`` that let its holder ``action`` on ``subject`` during
    [since, until), in the order given. ``subject`` must be literal (InvalidSubject)."""
    tokens = literal_subject(subject)
    direction = ACTIONS[action]
    for record in records:
        if record.decision != "grant" or not in_window(record, since, until):
            continue
        pattern = _covering(record, direction, tokens)
        if pattern is None:
            continue
        yield CouldAct(
            decision_id=record.decision_id, principal=record.principal,
            method=record.method, dag_id=record.dag_id, task_id=record.task_id,
            run_id=record.run_id, policy_ids=record.policy_ids,
            policy_set_hash=record.policy_set_hash, valid_from=record.decided_at,
            valid_until=None if record.expires_at is None else float(record.expires_at),
            matched_by=pattern, gateway_instance=record.gateway_instance,
            chain_seq=record.chain_seq, unsent=record.decision_id in unsent)
