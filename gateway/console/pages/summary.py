"""Summary: decisions per DAG and a day-by-day timeline of grants and denies."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api.deps import Store
from gateway.console.chart import per_dag, timeline
from gateway.console.filters import parse_filters
from gateway.console.guard import Auditor
from gateway.console.render import page

router = APIRouter(prefix="/console")


@router.get("/summary", include_in_schema=False)
def summary(request: Request, session: Auditor, store: Store) -> Response:
    filters = parse_filters({k: v for k, v in request.query_params.items()
                             if k in ("dag", "since", "until")})
    rows = [] if filters.errors else store.summary(filters.query)
    return page(request, "summary.html", session, status=400 if filters.errors else 200,
                active="summary", filters=filters, dags=per_dag(rows), chart=timeline(rows))
