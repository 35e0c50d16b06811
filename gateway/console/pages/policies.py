"""Policies: the set in force, its hash, the last reload error, and the explain form
(claims or an IAM ARN, and a scope: the same answer as `policy explain`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from gateway.api.deps import Policies
from gateway.console.guard import Auditor, CsrfField, check_csrf
from gateway.console.render import page
from gateway.errors import GatewayError
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.policy.explain import ExplainRequest, explain, explanation_dict

router = APIRouter(prefix="/console")
_MAX_FIELD = 16384
Field = Annotated[str, Form(max_length=_MAX_FIELD)]
_FORM = ("kind", "claims", "issuer_name", "arn", "dag_id", "task_id", "run_id")


def _request(form: dict[str, str]) -> ExplainRequest:
    """The explain request the form describes; ValueError naming what is wrong."""
    if form["kind"] == "aws_iam":
        identity: dict[str, Any] = {"aws_iam": {"arn": form["arn"]}}
    else:
        try:
            claims = json.loads(form["claims"] or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"the claims are not JSON: {exc.msg} at line {exc.lineno}"
                             ) from None
        identity = {"oidc": {"claims": claims, "issuer_name": form["issuer_name"]}}
    scope = {"dag_id": form["dag_id"], "task_id": form["task_id"],
             **({"run_id": form["run_id"]} if form["run_id"] else {})}
    try:
        return ExplainRequest.model_validate({"identity": identity, "scope": scope})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid value"))
        raise ValueError(f"`{where}`: {message[:1].lower()}{message[1:]}") from None


@router.get("/policies", include_in_schema=False)
def policies(request: Request, session: Auditor, holder: Policies) -> Response:
    form = dict.fromkeys(_FORM, "") | {"kind": "oidc"}
    return page(request, "policies.html", session, active="policies",
                status_of=holder.status(), form=form, result=None, error="")


@router.post("/policies", include_in_schema=False)
def explain_form(request: Request, session: Auditor, holder: Policies,
                 csrf: CsrfField = "", kind: Field = "oidc", claims: Field = "",
                 issuer_name: Field = "", arn: Field = "", dag_id: Field = "",
                 task_id: Field = "", run_id: Field = "") -> Response:
    check_csrf(session, csrf)
    form = {"kind": "aws_iam" if kind == "aws_iam" else "oidc", "claims": claims,
            "issuer_name": issuer_name, "arn": arn, "dag_id": dag_id, "task_id": task_id,
            "run_id": run_id}
    issuers: tuple[OidcIssuerConfig, ...] = request.app.state.oidc_issuers
    result, error = None, ""
    try:
        identity, evaluation, now = explain(holder.current(), _request(form), issuers)
        result = explanation_dict(identity, evaluation, now)
    except ValueError as exc:
        error = str(exc)
    except GatewayError as exc:
        error = f"{exc.code}: {exc.description}"
    return page(request, "policies.html", session, status=422 if error else 200,
                active="policies", status_of=holder.status(), form=form, result=result,
                error=error)
