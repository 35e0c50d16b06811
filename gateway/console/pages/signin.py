"""Sign-in and sign-out: the same credentials as the API (an API token, or an OIDC access
token from the API's issuer with the role claim), posted once and never kept: the
browser gets only a session id (HttpOnly, SameSite=Strict, Secure over HTTPS)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from gateway.api.auth import ApiAuthenticator, NotAuthenticated
from gateway.console.guard import (
    COOKIE,
    SIGNIN_COOKIE,
    Auditor,
    CsrfField,
    check_csrf,
    sessions_of,
    signin_token_matches,
)
from gateway.console.render import page

router = APIRouter(prefix="/console")
MAX_TOKEN = 16384  # an OIDC access token with many claims; more is no credential of ours


def _signin_page(request: Request, *, error: str = "", status: int = 200,
                 notice: str = "") -> Response:
    nonce = secrets.token_urlsafe(24)
    response = page(request, "signin.html", None, status=status, error=error, notice=notice,
                    nonce=nonce, oidc_issuer=request.app.state.console.oidc_issuer)
    response.set_cookie(SIGNIN_COOKIE, nonce, path="/console/login", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.get("", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/console/decisions", status_code=303)


@router.get("/login", include_in_schema=False)
def signin_form(request: Request, ended: str = "") -> Response:
    notice = "your session ended: sign in again" if ended else ""
    return _signin_page(request, notice=notice)


@router.post("/login", include_in_schema=False)
async def signin(request: Request, csrf: CsrfField = "",
                 token: Annotated[str, Form(max_length=MAX_TOKEN)] = "") -> Response:
    if not signin_token_matches(request, csrf):
        return _signin_page(request, status=403, error="the sign-in form expired: try again")
    authenticator: ApiAuthenticator = request.app.state.authenticator
    try:
        caller = await authenticator.authenticate(token.strip())
    except NotAuthenticated:
        return _signin_page(request, status=401, error="invalid token")
    if not caller.has("auditor"):
        return _signin_page(request, status=403,
                            error="this credential has neither the `auditor` nor the "
                                  "`admin` role")
    session_id, _ = sessions_of(request).open(caller)
    response = RedirectResponse("/console/decisions", status_code=303)
    response.set_cookie(COOKIE, session_id, path="/console", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    response.delete_cookie(SIGNIN_COOKIE, path="/console/login", httponly=True,
                           samesite="strict")
    return response


@router.post("/logout", include_in_schema=False)
def signout(request: Request, session: Auditor, csrf: CsrfField = "") -> Response:
    check_csrf(session, csrf)
    sessions_of(request).close(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response
