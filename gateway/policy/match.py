"""Does one policy match an identity and a requested scope? Each check returns the
reasons it failed (empty when it matched), so `policy explain` and the gateway share one
code path and the explanation is exactly what the decision used. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from gateway.envelope import Scope
from gateway.identity.model import Identity
from gateway.policy.model import AwsIamMatch, OidcMatch, Policy, ScopeRule

__all__ = ["MISSING", "identity_mismatches", "resolve_pointer", "scope_mismatches"]

MISSING: Any = object()


def resolve_pointer(document: Mapping[str, Any], pointer: str) -> Any:
    """RFC 6901 JSON pointer lookup; returns MISSING when absent."""
    current: Any = document
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def _claim_matches(actual: Any, expected: str | int | bool) -> bool:
    if isinstance(expected, str):
        return isinstance(actual, str) and fnmatchcase(actual, expected)
    # bool is an int in Python: compare types too, so `true` never matches `1`
    return type(actual) is type(expected) and actual == expected


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]


def _oidc_mismatches(match: OidcMatch, identity: Identity) -> list[str]:
    reasons = []
    if match.issuer not in {identity.issuer, identity.issuer_name} - {""}:
        reasons.append(f"issuer `{identity.issuer_name or identity.issuer}` is not "
                       f"`{match.issuer}`")
    if not fnmatchcase(identity.subject, match.subject):
        reasons.append(f"subject `{identity.subject}` does not match `{match.subject}`")
    if match.audience is not None and match.audience not in _audiences(identity.claims):
        reasons.append(f"audience `{match.audience}` is not in the token's `aud`")
    for pointer, expected in match.claims.items():
        actual = resolve_pointer(identity.claims, pointer)
        if actual is MISSING:
            reasons.append(f"claim `{pointer}` is missing")
        elif not _claim_matches(actual, expected):
            reasons.append(f"claim `{pointer}` = {actual!r} does not match {expected!r}")
    return reasons


def _iam_mismatches(match: AwsIamMatch, identity: Identity) -> list[str]:
    claims = identity.claims
    reasons = []
    if claims.get("account") != match.account:
        reasons.append(f"account `{claims.get('account')}` is not `{match.account}`")
    if not fnmatchcase(str(claims.get("role_arn", "")), match.role):
        reasons.append(f"role `{claims.get('role_arn')}` does not match `{match.role}`")
    if not fnmatchcase(str(claims.get("session_name", "")), match.session):
        reasons.append(f"session `{claims.get('session_name')}` does not match "
                       f"`{match.session}`")
    return reasons


def identity_mismatches(policy: Policy, identity: Identity) -> list[str]:
    """Why ``policy.match`` does not select ``identity`` (empty: it does)."""
    oidc, iam = policy.match.oidc, policy.match.aws_iam
    if oidc is not None:
        if identity.method != "oidc":
            return [f"matches oidc identities; this one is {identity.method}"]
        return _oidc_mismatches(oidc, identity)
    if iam is not None:
        if identity.method != "aws_iam":
            return [f"matches aws_iam identities; this one is {identity.method}"]
        return _iam_mismatches(iam, identity)
    return ["has no identity matcher"]  # unreachable: the model requires one


def _rule_mismatches(rule: ScopeRule, identity: Identity, scope: Scope) -> list[str]:
    reasons = []
    if not fnmatchcase(scope.dag_id, rule.dag):
        reasons.append(f"dag `{scope.dag_id}` does not match `{rule.dag}`")
    if not any(fnmatchcase(scope.task_id, task) for task in rule.tasks):
        reasons.append(f"task `{scope.task_id}` does not match any of {list(rule.tasks)}")
    requested = {"dag_id": scope.dag_id, "task_id": scope.task_id, "run_id": scope.run_id}
    for field, pointer in rule.bind.items():
        bound = resolve_pointer(identity.claims, pointer)
        value = requested[field]
        if bound is MISSING:
            reasons.append(f"{field} is bound to claim `{pointer}`, which is missing")
        elif not isinstance(bound, str) or bound != value:
            reasons.append(f"{field} `{value}` is not the value of claim `{pointer}` "
                           f"({bound!r})")
    return reasons


def scope_mismatches(policy: Policy, identity: Identity, scope: Scope) -> list[str]:
    """Why no scope rule of ``policy`` covers ``scope`` (empty: one does)."""
    reasons: list[str] = []
    for index, rule in enumerate(policy.scopes):
        failed = _rule_mismatches(rule, identity, scope)
        if not failed:
            return []
        reasons.extend(f"scopes[{index}]: {reason}" for reason in failed)
    return reasons
