""""Who could?": the grants whose permissions covered a subject in a time range, found
by the same function as ``GET /v1/grants/who-could``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api.deps import Store
from gateway.api.params import MAX_FILTER
from gateway.api.routes.who_could import WhoCould, find_grants
from gateway.console.filters import parse_time
from gateway.console.guard import Auditor
from gateway.console.render import page
from gateway.natsjwt.subjects import InvalidSubject

router = APIRouter(prefix="/console")
LIMIT = 500


@router.get("/who-could", include_in_schema=False)
def who_could_page(request: Request, session: Auditor, store: Store) -> Response:
    params = request.query_params
    form = {name: params.get(name, "").strip() for name in ("subject", "since", "until")}
    form["action"] = "subscribe" if params.get("action") == "subscribe" else "publish"
    errors: list[str] = []
    bounds: dict[str, float | None] = {"since": None, "until": None}
    for name in ("since", "until"):
        if form[name]:
            bounds[name], problem = parse_time(name, form[name])
            errors += [problem] if problem else []
    result: WhoCould | None = None
    if form["subject"] and len(form["subject"]) > MAX_FILTER:
        errors.append(f"`subject` must be at most {MAX_FILTER} characters")
    elif form["subject"] and not errors:
        try:
            result = find_grants(store, form["subject"], form["action"],  # type: ignore[arg-type]
                                 since=bounds["since"], until=bounds["until"], limit=LIMIT)
        except InvalidSubject as exc:
            errors.append(f"the subject is {exc}")
    return page(request, "who_could.html", session, status=400 if errors else 200,
                active="who-could", form=form, errors=errors, result=result)
