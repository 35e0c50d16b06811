"""The decision filters of the console's forms (the API's filters), read from a query
string: each value checked as the API checks it (``gateway.api.params``), each problem a
message for the page rather than a 422. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from gateway.api.params import MAX_FILTER
from gateway.audit.store import DecisionQuery, decode_cursor

__all__ = ["FIELDS", "Filters", "parse_filters", "parse_time"]

# Form field -> DecisionQuery field.
FIELDS = {"dag": "dag_id", "task": "task_id", "run": "run_id", "decision": "decision",
          "reason": "reason_code", "method": "method", "principal": "principal",
          "policy": "policy_id"}
_TIMES = ("since", "until")
_CHOICES = {"decision": ("grant", "deny"), "method": ("oidc", "aws_iam")}


@dataclass
class Filters:
    values: dict[str, str] = field(default_factory=dict)  # as given, for forms and links
    errors: list[str] = field(default_factory=list)
    query: DecisionQuery = field(default_factory=DecisionQuery)

    def link(self, **extra: str) -> str:
        """This filter (and ``extra``) as a query string for a link."""
        return urlencode({**self.values, **extra})


def parse_time(name: str, text: str) -> tuple[float | None, str | None]:
    """An ISO 8601 time (UTC when no zone is given) as epoch seconds, or a problem."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None, f"`{name}` is not an ISO 8601 time such as 2026-11-28T14:00"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp(), None


def _value(name: str, raw: str, errors: list[str]) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if len(value) > MAX_FILTER or "\0" in value:
        errors.append(f"`{name}` must be at most {MAX_FILTER} characters, without NUL")
        return None
    if name in _CHOICES and value not in _CHOICES[name]:
        errors.append(f"`{name}` must be one of {', '.join(_CHOICES[name])}")
        return None
    return value


def parse_filters(params: Mapping[str, str], *, limit: int = 50) -> Filters:
    result = Filters()
    query: dict[str, object] = {"limit": limit}
    for name in (*FIELDS, *_TIMES):
        value = _value(name, params.get(name, ""), result.errors)
        if value is None:
            continue
        result.values[name] = value
        if name in FIELDS:
            query[FIELDS[name]] = value
            continue
        at, problem = parse_time(name, value)
        if problem is not None:
            result.errors.append(problem)
        query[name] = at
    cursor = params.get("cursor", "")
    if cursor:
        try:
            query["before_seq"] = decode_cursor(cursor)
        except ValueError:
            result.errors.append("`cursor` is not one the console issued: start again "
                                 "from the first page")
    result.query = DecisionQuery(**query)  # type: ignore[arg-type]
    return result
