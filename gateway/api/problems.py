"""How the API refuses a malformed request: 422, one message per bad parameter.

FastAPI's own answer echoes every input whole, so a 60 kB filter came back as 60 kB of
error. Here the input is cut to :data:`MAX_ECHO` characters and escaped as all client
text is (gateway/untrusted.py: NUL as ``\\x00``), and each message follows the house
style.

    {"detail": "invalid query parameter `limit`: input should be less than or equal to 1000",
     "errors": [{"in": "query", "name": "limit", "problem": "...", "got": "5000"}]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway.untrusted import safe_text

__all__ = ["MAX_ECHO", "bounded", "validation_problem"]

MAX_ECHO = 100
_MAX_PROBLEM = 200
_MAX_PROBLEMS = 10  # a body can fail on every key it has; the first few say enough
_PLACES = {"query": "query parameter", "path": "path parameter", "body": "body field",
           "header": "header", "cookie": "cookie"}


def bounded(value: object) -> str:
    """``value`` as at most :data:`MAX_ECHO` characters, escaped: safe to echo."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return safe_text(text, MAX_ECHO)


def _problem(error: dict[str, Any]) -> dict[str, str]:
    where, *path = [str(part) for part in error.get("loc", ())] or ["request"]
    msg = str(error.get("msg", "invalid value"))[:_MAX_PROBLEM]
    entry = {"in": where, "name": ".".join(path),
             "problem": msg[:1].lower() + msg[1:]}
    if error.get("type") != "missing":
        entry["got"] = bounded(error.get("input"))
    return entry


def _message(problem: dict[str, str]) -> str:
    place = _PLACES.get(problem["in"], problem["in"])
    name = f" `{problem['name']}`" if problem["name"] else ""
    return f"invalid {place}{name}: {problem['problem']}"


def _body(errors: Sequence[Any]) -> dict[str, Any]:
    problems = [_problem(e) for e in errors[:_MAX_PROBLEMS]]
    return {"detail": "; ".join(_message(p) for p in problems), "errors": problems}


async def validation_problem(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(_body(exc.errors()), status_code=422)
