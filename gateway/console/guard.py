"""Who may see a console page, and the browser-side defences every page gets.

- A page needs a live session (``sessions.py``) from the session cookie; without one the
  browser is sent to the sign-in page. A page for admins refuses an auditor with a 403
  page naming the role.
- Every form that changes something or runs work (sign-out, re-run verify, explain,
  purge) carries the session's CSRF token, compared in constant time; the session
  cookie is also ``SameSite=Strict``. The sign-in form, which has no session yet, uses a
  double-submit cookie instead.
- Every ``/console`` response: a Content-Security-Policy that allows no script at all
  and styles only from the console's own stylesheet (so markup injected through a client
  name could neither run nor restyle anything), no framing (clickjacking on purge), no
  referrer (filters in URLs stay here), no caching of pages holding audit data.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Form, Request
from starlette.responses import Response

from gateway.console.sessions import Session, SessionStore

__all__ = ["COOKIE", "HEADERS", "SIGNIN_COOKIE", "Admin", "Auditor", "CsrfRefused",
           "RoleRefused", "SignInRequired", "check_csrf", "security_headers"]

COOKIE = "nats_gateway_console"
SIGNIN_COOKIE = "nats_gateway_console_signin"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SignInRequired(Exception):
    """No session, or it ended: the browser goes to the sign-in page."""


class RoleRefused(Exception):
    """A signed-in caller without the role a page needs (403)."""

    def __init__(self, role: str) -> None:
        super().__init__(f"the `{role}` role is required")


class CsrfRefused(Exception):
    """A form without this session's CSRF token (403)."""


def sessions_of(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console.sessions
    return store


def _require(role: str) -> Callable[[Request], Awaitable[Session]]:
    async def session_with_role(request: Request) -> Session:
        session_id = request.cookies.get(COOKIE)
        session = sessions_of(request).get(session_id) if session_id else None
        if session is None:
            raise SignInRequired
        if not session.caller.has(role):
            raise RoleRefused(role)
        return session

    return session_with_role


Auditor = Annotated[Session, Depends(_require("auditor"))]
Admin = Annotated[Session, Depends(_require("admin"))]


def check_csrf(session: Session, token: str) -> None:
    if not token or not session.csrf_matches(token):
        raise CsrfRefused("this form has expired or did not come from the console: "
                          "reload the page and try again")


def signin_token_matches(request: Request, token: str) -> bool:
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    return bool(cookie) and bool(token) and hmac.compare_digest(cookie.encode(),
                                                                token.encode())


CsrfField = Annotated[str, Form(max_length=128)]


async def security_headers(request: Request,
                           call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    if request.url.path == "/console" or request.url.path.startswith("/console/"):
        response.headers.update(HEADERS)
    return response
