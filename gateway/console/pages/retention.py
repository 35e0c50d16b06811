"""Retention (admins only): purge records older than N days, as ``POST
/v1/audit/purge`` does, leaving a signed purge anchor per chain."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from gateway.api.deps import Store
from gateway.api.routes.audit import MAX_PURGE_DAYS
from gateway.audit.chain import CheckpointSigner
from gateway.audit.retention import PurgeResult, purge
from gateway.console.guard import Admin, CsrfField, check_csrf
from gateway.console.render import page

router = APIRouter(prefix="/console")
log = logging.getLogger(__name__)
Days = Annotated[str, Form(max_length=16)]


def _page(request: Request, session: Admin, *, status: int = 200, error: str = "",
          result: PurgeResult | None = None, days: int = 0) -> Response:
    signer: CheckpointSigner | None = request.app.state.checkpoint_signer
    return page(request, "retention.html", session, status=status, active="retention",
                signed=signer is not None, max_days=MAX_PURGE_DAYS, error=error,
                result=result, days=days)


@router.get("/retention", include_in_schema=False)
def retention(request: Request, session: Admin) -> Response:
    return _page(request, session)


@router.post("/retention", include_in_schema=False)
def purge_form(request: Request, session: Admin, store: Store, csrf: CsrfField = "",
               older_than_days: Days = "") -> Response:
    check_csrf(session, csrf)
    signer: CheckpointSigner | None = request.app.state.checkpoint_signer
    text = older_than_days.strip()
    days = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= days <= MAX_PURGE_DAYS:
        return _page(request, session, status=422,
                     error=f"the age must be a whole number of days from 1 to {MAX_PURGE_DAYS}")
    if signer is None:
        return _page(request, session, status=409,
                     error="no checkpoint key is configured: purges must be signed")
    result = purge(store, signer, older_than_seconds=days * 86400, now=time.time())
    log.info("console purge by %s: %d record(s) older than %d day(s)", session.caller.name,
             result.deleted, days)
    return _page(request, session, result=result, days=days)
