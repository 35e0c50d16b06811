"""``GET /v1/grants/who-could``: every grant on record whose permissions covered a subject
during a time range (``gateway.audit.who_could``). Role: auditor."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from gateway.api.deps import Auditor, Store
from gateway.api.params import MAX_FILTER, When
from gateway.api.problems import bounded
from gateway.audit.store import AuditStore, DecisionQuery
from gateway.audit.who_could import Action, CouldAct, unsent_grant, who_could
from gateway.natsjwt.subjects import InvalidSubject, literal_subject

__all__ = ["WhoCould", "find_grants", "router"]

router = APIRouter(prefix="/v1/grants", tags=["audit"])
MAX_MATCHES = 1000


@dataclass(frozen=True)
class WhoCould:
    matches: list[CouldAct]
    truncated: bool  # more grants matched than the limit


def _unsent(store: AuditStore, since: float | None) -> set[str]:
    """Grants that a reply_failed record says never left (rare: read them all)."""
    records = store.iterate(DecisionQuery(reason_code="reply_failed", since=since))
    return {grant for grant in map(unsent_grant, records) if grant is not None}


def find_grants(store: AuditStore, subject: str, action: Action, *, since: float | None,
                until: float | None, limit: int = 100) -> WhoCould:
    """Newest first; InvalidSubject for a subject that is not one literal subject."""
    literal_subject(subject)  # refuse before reading the store
    grants = store.iterate(DecisionQuery(decision="grant", until=until, expires_from=since))
    found = who_could(grants, subject, action, since=since, until=until,
                      unsent=_unsent(store, since))
    matches = list(itertools.islice(found, limit + 1))
    return WhoCould(matches[:limit], len(matches) > limit)


def _time(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def _out(match: CouldAct) -> dict[str, Any]:
    out = match.as_dict()
    out["valid_from"], out["valid_until"] = _time(match.valid_from), _time(match.valid_until)
    return out


@router.get("/who-could")
def who_could_route(
    store: Store, _: Auditor,
    subject: Annotated[str, Query(min_length=1, max_length=MAX_FILTER,
                                  description="one literal subject, e.g. `a.b.c`")],
    action: Action = "publish", since: When = None, until: When = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MATCHES)] = 100,
) -> dict[str, Any]:
    """Every grant whose recorded permissions let its holder publish (or subscribe) on
    `subject` at some time in [`since`, `until`), newest first, judged as nats-server
    matches subjects (`*` one token, `>` one or more, deny wins)."""
    try:
        result = find_grants(store, subject, action,
                             since=since.timestamp() if since else None,
                             until=until.timestamp() if until else None, limit=limit)
    except InvalidSubject as exc:
        raise HTTPException(422, f"invalid query parameter `subject`: `{bounded(subject)}` "
                                 f"is {exc}") from None
    return {"subject": subject, "action": action, "since": since, "until": until,
            "matches": [_out(m) for m in result.matches], "truncated": result.truncated}
