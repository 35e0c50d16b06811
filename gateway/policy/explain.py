"""`policy explain`: what a given identity would get for a requested scope, and why.

The identity is described, not proven: OIDC claims as JSON (what a token would carry) or
an STS caller ARN. It goes through the same :func:`evaluate` as a live decision, so the
answer is exactly what the gateway would grant. Shared by the CLI and ``POST /v1/explain``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.envelope import parse_scope
from gateway.errors import IdentityError
from gateway.identity.aws_arn import iam_identity, parse_caller_arn
from gateway.identity.model import Identity
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.policy.decide import ClientConnection, Decision, Evaluation, evaluate
from gateway.policy.load import PolicySet

__all__ = ["ExplainRequest", "explain", "explanation_dict", "format_explanation"]

_DEFAULT_LIFETIME = 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OidcIdentityInput(_Strict):
    claims: dict[str, Any] = Field(description="the token's claims (iss, sub, aud, ...)")
    issuer_name: str = Field(
        default="", description="the configured issuer name the token would come from "
                                "(default: looked up by `iss` in the gateway config)")


class IamIdentityInput(_Strict):
    arn: str = Field(description="the caller ARN STS reports, an assumed-role ARN")
    user_id: str = ""


class IdentityInput(_Strict):
    oidc: OidcIdentityInput | None = None
    aws_iam: IamIdentityInput | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> IdentityInput:
        if (self.oidc is None) == (self.aws_iam is None):
            raise ValueError("give exactly one of `oidc` or `aws_iam`")
        return self


class ScopeInput(_Strict):
    dag_id: str
    task_id: str
    run_id: str | None = None


class ClientInput(_Strict):
    host: str = ""
    connection_type: str = "STANDARD"


class ExplainRequest(_Strict):
    identity: IdentityInput
    scope: ScopeInput
    client: ClientInput = ClientInput()


def _oidc_identity(given: OidcIdentityInput, issuers: Sequence[OidcIssuerConfig],
                   now: int) -> Identity:
    claims = given.claims
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer, str) or not isinstance(subject, str):
        raise IdentityError("the claims need string `iss` and `sub`", code="missing_claim")
    expires = claims.get("exp", now + _DEFAULT_LIFETIME)
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise IdentityError("`exp` must be an integer", code="malformed_token")
    name = given.issuer_name or next((i.name for i in issuers if i.issuer == issuer), "")
    return Identity(method="oidc", issuer=issuer, subject=subject, expires=expires,
                    fingerprint="", issuer_name=name, claims=dict(claims))


def build_identity(request: ExplainRequest, issuers: Sequence[OidcIssuerConfig],
                   now: int) -> Identity:
    """The Identity the description stands for; IdentityError if it is not a valid one."""
    if request.identity.oidc is not None:
        return _oidc_identity(request.identity.oidc, issuers, now)
    assert request.identity.aws_iam is not None
    caller = parse_caller_arn(request.identity.aws_iam.arn)
    return iam_identity(caller, user_id=request.identity.aws_iam.user_id,
                        expires=now + _DEFAULT_LIFETIME, proof_fingerprint="")


def explain(policy_set: PolicySet, request: ExplainRequest,
            issuers: Sequence[OidcIssuerConfig] = (), now: int | None = None
            ) -> tuple[Identity, Evaluation, int]:
    """Evaluate the described request against ``policy_set``; a description that is not a
    valid identity or scope raises IdentityError or CredentialError."""
    at = int(time.time()) if now is None else now
    identity = build_identity(request, issuers, at)
    scope = parse_scope(request.scope.model_dump(exclude_none=True))
    client = ClientConnection(request.client.host, request.client.connection_type)
    return identity, evaluate(policy_set, identity, scope, client, at), at


def explanation_dict(identity: Identity, evaluation: Evaluation, now: int) -> dict[str, Any]:
    decision, denial = evaluation.decision, evaluation.denial
    return {
        "decision": "grant" if decision is not None else "deny",
        "reason": None if denial is None else f"{denial.code}: {denial.description}",
        "principal": identity.principal,
        "policy_set_hash": evaluation.policy_set_hash,
        "policies": [
            {"id": r.policy_id, "source": r.source, "matched": r.matched,
             "failed": None if r.matched else r.outcome, "reasons": list(r.reasons)}
            for r in evaluation.results
        ],
        "permissions": None if decision is None else decision.permissions.as_dict(),
        "ttl_seconds": None if decision is None else decision.expires - now,
        "ttl_bound_by": None if decision is None else decision.expiry_bound,
        "matched_policies": [] if decision is None else list(decision.policy_ids),
        "inbox_prefix": None if decision is None else decision.inbox_prefix,
        "jetstream": [] if decision is None else [
            {"for": label, "subject": subject} for label, subject in decision.jetstream],
    }


def _subject_lines(label: str, allow: Sequence[str], deny: Sequence[str]) -> list[str]:
    lines = [f"  {label} allow: {', '.join(allow) if allow else '(nothing)'}"]
    if deny:
        lines.append(f"  {label} deny:  {', '.join(deny)}")
    return lines


def _jetstream_lines(decision: Decision) -> list[str]:
    """The JetStream and inbox allows again, grouped by what each is for (they are also
    in the publish/subscribe lines above: that is what the user JWT holds)."""
    lines = []
    if decision.inbox_prefix is not None:
        lines.append(f"  inbox prefix: {decision.inbox_prefix} (replies, PubAcks, pulls)")
    groups: dict[str, list[str]] = {}
    for label, subject in decision.jetstream:
        groups.setdefault(label, []).append(subject)
    if groups:
        lines.append("  jetstream:")
        lines.extend(f"    {label}: {', '.join(subjects)}" for label, subjects in groups.items())
    return lines


def format_explanation(identity: Identity, evaluation: Evaluation, now: int) -> str:
    """The human-readable explanation `policy explain` prints."""
    data = explanation_dict(identity, evaluation, now)
    lines = [f"principal: {identity.principal}",
             f"policy set: {evaluation.policy_set_hash}", "policies:"]
    for result in evaluation.results:
        where = f" ({result.source})" if result.source else ""
        if result.matched:
            lines.append(f"  + {result.policy_id}{where}: matched")
            continue
        lines.append(f"  - {result.policy_id}{where}: {result.outcome} did not match")
        lines.extend(f"      {reason}" for reason in result.reasons)
    if evaluation.decision is None:
        lines.append(f"decision: DENY ({data['reason']})")
        return "\n".join(lines)
    perms = evaluation.decision.permissions
    lines.append(f"decision: GRANT by {', '.join(evaluation.decision.policy_ids)}")
    lines += _subject_lines("publish  ", perms.pub_allow, perms.pub_deny)
    lines += _subject_lines("subscribe", perms.sub_allow, perms.sub_deny)
    lines += _jetstream_lines(evaluation.decision)
    if perms.resp_max is not None:
        ttl = "no ttl" if perms.resp_ttl_seconds is None else f"ttl {perms.resp_ttl_seconds}s"
        lines.append(f"  responses: max {perms.resp_max}, {ttl}")
    limits = perms.as_dict()["limits"]
    if any(value != -1 for value in limits.values()):
        lines.append("  limits: " + ", ".join(f"{k} {v}" for k, v in limits.items()
                                              if v != -1))
    if perms.connection_types:
        lines.append(f"  connection types: {', '.join(perms.connection_types)}")
    if perms.source_networks:
        lines.append(f"  source: {', '.join(perms.source_networks)}")
    lines.append(f"  ttl: {data['ttl_seconds']}s (bound by {data['ttl_bound_by']})")
    return "\n".join(lines)
