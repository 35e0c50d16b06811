"""What the audit API accepts in its query strings and paths, checked before any query.

Every value an auditor sends either becomes a well-formed store query or is refused with
a 422 naming the parameter (``gateway.api.problems``); none may reach the database in a
shape it rejects, which would be a 500. PostgreSQL refuses NUL in text, so a filter
holding one is refused here on every store: the same request gets the same answer on
SQLite and PostgreSQL. Lengths are bounded so one request asks bounded work of the
database. Times without a zone are UTC (the server's zone is no input of the auditor's,
and a local-time conversion of year 1 or 9999 overflows).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

__all__ = ["MAX_FILTER", "DecisionId", "Filter", "When"]

MAX_FILTER = 4096
_MAX_DECISION_ID = 64  # the decision_id column's width


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\0" in value:
        raise PydanticCustomError("nul_character", "must not contain a NUL character")
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


Filter = Annotated[str | None, Query(max_length=MAX_FILTER), AfterValidator(_no_nul)]
When = Annotated[datetime | None, Query(description="ISO 8601; UTC when no zone is given"),
                 AfterValidator(_utc)]
DecisionId = Annotated[str, Path(max_length=_MAX_DECISION_ID), AfterValidator(_no_nul)]
