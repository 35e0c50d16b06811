"""Server-rendered pages: Jinja2 with autoescaping on for every template.

Every value from the audit log is text someone else chose (a client's CONNECT name, a
token subject inside a principal, a reason quoting them), so nothing is marked safe:
``|safe`` and ``Markup`` are not used anywhere in the console.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from gateway.console.sessions import Session

__all__ = ["environment", "page", "utc"]

NAV = (("decisions", "Decisions", "auditor"), ("who-could", "Who could?", "auditor"),
       ("summary", "Summary", "auditor"), ("integrity", "Integrity", "auditor"),
       ("policies", "Policies", "auditor"), ("retention", "Retention", "admin"))


def utc(at: float | datetime | None) -> str:
    """A time as the console shows it: UTC, to the second, with its zone."""
    if at is None:
        return "—"
    when = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def environment() -> Environment:
    """The console's templates (built once per app, kept in its state)."""
    directory = str(files("gateway.console") / "templates")
    env = Environment(loader=FileSystemLoader(directory), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["utc"] = utc
    env.filters["pretty"] = _pretty
    return env


def page(request: Request, template: str, session: Session | None, *, status: int = 200,
         active: str = "", **context: Any) -> HTMLResponse:
    nav = [] if session is None else [(slug, label) for slug, label, role in NAV
                                      if session.caller.has(role)]
    env: Environment = request.app.state.console.templates
    html = env.get_template(template).render(
        session=session, nav=nav, active=active, **context)
    return HTMLResponse(html, status_code=status)
