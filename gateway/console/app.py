"""Mount the console on the API's FastAPI app: same process, same port, same roles.

The console reads what the API reads (``app.state``: the store, the authenticator, the
policies, the checkpoint keys and signer) and keeps its own state beside it: the
sessions, the templates, and the last verify report.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment

from gateway.config import ApiConsoleSettings
from gateway.console.guard import (
    COOKIE,
    CsrfRefused,
    RoleRefused,
    SignInRequired,
    security_headers,
    sessions_of,
)
from gateway.console.pages import (
    decisions,
    integrity,
    policies,
    retention,
    signin,
    summary,
    who_could,
)
from gateway.console.pages.integrity import IntegrityView
from gateway.console.render import environment, page
from gateway.console.sessions import SessionStore

__all__ = ["ConsoleState", "mount_console"]


@dataclass
class ConsoleState:
    sessions: SessionStore
    templates: Environment
    oidc_issuer: str | None
    anchor_dir: Path | None
    verify_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_verify: IntegrityView | None = None


async def _sign_in(request: Request, _: Exception) -> Response:
    ended = "?ended=1" if request.cookies.get(COOKIE) else ""
    response = RedirectResponse(f"/console/login{ended}", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


async def _refused(request: Request, exc: Exception) -> Response:
    session_id = request.cookies.get(COOKIE)
    session = sessions_of(request).get(session_id) if session_id else None
    return page(request, "error.html", session, status=403, title="Refused",
                message=str(exc))


def mount_console(app: FastAPI, settings: ApiConsoleSettings, *,
                  oidc_issuer: str | None = None, anchor_dir: Path | None = None) -> FastAPI:
    app.state.console = ConsoleState(
        sessions=SessionStore(idle=settings.session_idle_minutes * 60,
                              max_age=settings.session_max_hours * 3600,
                              capacity=settings.max_sessions),
        templates=environment(), oidc_issuer=oidc_issuer, anchor_dir=anchor_dir)
    app.middleware("http")(security_headers)
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(RoleRefused, _refused)
    app.add_exception_handler(CsrfRefused, _refused)
    for module in (signin, decisions, who_could, summary, integrity, policies, retention):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=str(files("gateway.console") /
                                                           "static")), name="console-static")
    return app
