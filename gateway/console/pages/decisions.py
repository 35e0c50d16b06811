"""Decisions: the API's filters, cursor pages, one decision in full, and the current
filter exported as CSV or JSON Lines (the API's own export)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api.deps import Store
from gateway.api.routes.grants import export_response
from gateway.audit.store import DecisionQuery, encode_cursor
from gateway.console.filters import parse_filters
from gateway.console.guard import Auditor
from gateway.console.render import page

router = APIRouter(prefix="/console")
PAGE_SIZE = 50


@router.get("/decisions", include_in_schema=False)
def decisions(request: Request, session: Auditor, store: Store) -> Response:
    filters = parse_filters(request.query_params, limit=PAGE_SIZE)
    if filters.errors:
        return page(request, "decisions.html", session, status=400, active="decisions",
                    filters=filters, items=[], next_link=None)
    result = store.page(filters.query)
    next_link = None if result.next_before_seq is None else filters.link(
        cursor=encode_cursor(result.next_before_seq))
    return page(request, "decisions.html", session, active="decisions", filters=filters,
                items=result.items, next_link=next_link)


@router.get("/decisions/{decision_id}", include_in_schema=False)
def decision(request: Request, session: Auditor, store: Store, decision_id: str) -> Response:
    # The API's bounds (gateway.api.params): a longer id or a NUL matches no record.
    well_formed = len(decision_id) <= 64 and "\0" not in decision_id
    record = store.get(decision_id) if well_formed else None
    if record is None:
        return page(request, "error.html", session, status=404, active="decisions",
                    title="Decision not found", message="no decision with this id")
    return page(request, "decision.html", session, active="decisions", record=record)


@router.get("/export", include_in_schema=False)
def export(request: Request, session: Auditor, store: Store,
           format: Literal["csv", "jsonl"] = "csv") -> Response:
    filters = parse_filters(request.query_params)
    if filters.errors:
        return page(request, "decisions.html", session, status=400, active="decisions",
                    filters=filters, items=[], next_link=None)
    everything = DecisionQuery(**{**filters.query.__dict__, "before_seq": None})
    return export_response(store.iterate(everything), format)
