"""Integrity: the result of `audit verify` per instance (records, last checkpoint, gaps,
problems), re-run on request. Verify reads every record, so it runs in a worker thread,
one run at a time (a second request waits for the first, then runs). The page
says "intact" only for a report with no problem; a verify that could not run says so
and claims nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gateway.audit.anchors import read_directory
from gateway.audit.store import AuditStore, CheckpointRow
from gateway.audit.verify import Problem, TrustedKey, VerifyReport, verify_store
from gateway.console.guard import Auditor, CsrfField, check_csrf
from gateway.console.render import page

__all__ = ["IntegrityView", "router", "run_verify"]

router = APIRouter(prefix="/console")
log = logging.getLogger(__name__)
GAP_KINDS = frozenset({"missing", "checkpoint_gap", "truncated", "checkpoint_missing"})


@dataclass
class InstanceView:
    instance: str
    records: int = 0
    last_seq: int | None = None
    last_at: float | None = None
    last_checkpoint: CheckpointRow | None = None
    gaps: list[Problem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class IntegrityView:
    checked_at: float
    report: VerifyReport | None
    instances: list[InstanceView]
    unplaced: list[Problem]  # problems of no instance (rows in no chain)
    anchor_dir: str | None
    error: str | None = None


def _instances(store: AuditStore, report: VerifyReport) -> tuple[list[InstanceView],
                                                                  list[Problem]]:
    views: dict[str, InstanceView] = {}
    for head in store.instance_heads():
        views[head["instance"]] = InstanceView(head["instance"], head["records"],
                                               head["last_seq"], head["last_at"])
    for checkpoint in store.checkpoint_rows():
        view = views.setdefault(checkpoint.gateway_instance,
                                InstanceView(checkpoint.gateway_instance))
        last = view.last_checkpoint
        if last is None or checkpoint.created_at >= last.created_at:
            view.last_checkpoint = checkpoint
    unplaced: list[Problem] = []
    for problem in report.problems:
        if not problem.instance:
            unplaced.append(problem)
            continue
        view = views.setdefault(problem.instance, InstanceView(problem.instance))
        view.problems.append(problem)
        if problem.kind in GAP_KINDS:
            view.gaps.append(problem)
    return sorted(views.values(), key=lambda v: v.instance), unplaced


def run_verify(store: AuditStore, trusted: tuple[str | TrustedKey, ...],
               anchor_dir: Path | None) -> IntegrityView:
    """verify_store with the configured anchor directory, and the per-instance view."""
    now = time.time()
    try:
        anchored = read_directory(anchor_dir)[0] if anchor_dir is not None else None
        report = verify_store(store, trusted, now=now, anchored=anchored)
        instances, unplaced = _instances(store, report)
    except Exception as exc:  # any failure: the page must not look like a clean report
        log.exception("console verify failed")
        return IntegrityView(now, None, [], [], str(anchor_dir) if anchor_dir else None,
                             error=f"verify could not run: {type(exc).__name__}")
    return IntegrityView(now, report, instances, unplaced,
                         str(anchor_dir) if anchor_dir else None)


async def _refresh(request: Request) -> IntegrityView:
    state = request.app.state.console
    async with state.verify_lock:
        state.last_verify = await asyncio.to_thread(
            run_verify, request.app.state.store, request.app.state.trusted_checkpoint_keys,
            state.anchor_dir)
    view: IntegrityView = state.last_verify
    return view


@router.get("/integrity", include_in_schema=False)
async def integrity(request: Request, session: Auditor) -> Response:
    view: IntegrityView | None = request.app.state.console.last_verify
    if view is None:
        view = await _refresh(request)
    return page(request, "integrity.html", session, active="integrity", view=view,
                age=time.time() - view.checked_at)


@router.post("/integrity", include_in_schema=False)
async def rerun(request: Request, session: Auditor, csrf: CsrfField = "") -> Response:
    check_csrf(session, csrf)
    await _refresh(request)
    return RedirectResponse("/console/integrity", status_code=303)
