"""Does one policy match an identity and a requested scope? Each check yields the
reasons it failed (nothing when it matched), so `policy explain` and the gateway share one
code path and the explanation is exactly what the decision used. The checks are lazy
generators: a live decision takes only the first reason, an explanation takes them all.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any

from gateway.envelope import Scope
from gateway.identity.model import Identity
from gateway.policy.model import AwsIamMatch, OidcMatch, Policy, ScopeRule

__all__ = ["MISSING", "iam_account", "iam_role", "identity_mismatches", "oidc_issuers",
           "resolve_pointer", "scope_mismatches"]

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


# The values the matcher compares, read in one place so the index (index.py) looks up
# exactly what the matcher checks.
def oidc_issuers(identity: Identity) -> frozenset[str]:
    """The names an OIDC ``match.issuer`` may equal: the issuer URL or configured name."""
    return frozenset((identity.issuer, identity.issuer_name)) - {""}


def iam_account(identity: Identity) -> Any:
    return identity.claims.get("account")


def iam_role(identity: Identity) -> str:
    return str(identity.claims.get("role_arn", ""))


def _oidc_mismatches(match: OidcMatch, identity: Identity) -> Iterator[str]:
    if match.issuer not in oidc_issuers(identity):
        yield f"issuer `{identity.issuer_name or identity.issuer}` is not `{match.issuer}`"
    if not fnmatchcase(identity.subject, match.subject):
        yield f"subject `{identity.subject}` does not match `{match.subject}`"
    if match.audience is not None and match.audience not in _audiences(identity.claims):
        yield f"audience `{match.audience}` is not in the token's `aud`"
    for pointer, expected in match.claims.items():
        actual = resolve_pointer(identity.claims, pointer)
        if actual is MISSING:
            yield f"claim `{pointer}` is missing"
        elif not _claim_matches(actual, expected):
            yield f"claim `{pointer}` = {actual!r} does not match {expected!r}"


def _iam_mismatches(match: AwsIamMatch, identity: Identity) -> Iterator[str]:
    claims = identity.claims
    if iam_account(identity) != match.account:
        yield f"account `{iam_account(identity)}` is not `{match.account}`"
    if not fnmatchcase(iam_role(identity), match.role):
        yield f"role `{claims.get('role_arn')}` does not match `{match.role}`"
    if not fnmatchcase(str(claims.get("session_name", "")), match.session):
        yield f"session `{claims.get('session_name')}` does not match `{match.session}`"


def identity_mismatches(policy: Policy, identity: Identity) -> Iterator[str]:
    """Why ``policy.match`` does not select ``identity`` (nothing: it does)."""
    oidc, iam = policy.match.oidc, policy.match.aws_iam
    if oidc is not None:
        if identity.method != "oidc":
            yield f"matches oidc identities; this one is {identity.method}"
        else:
            yield from _oidc_mismatches(oidc, identity)
    elif iam is not None:
        if identity.method != "aws_iam":
            yield f"matches aws_iam identities; this one is {identity.method}"
        else:
            yield from _iam_mismatches(iam, identity)
    else:
        yield "has no identity matcher"  # unreachable: the model requires one


def _rule_mismatches(rule: ScopeRule, identity: Identity, scope: Scope) -> Iterator[str]:
    if not fnmatchcase(scope.dag_id, rule.dag):
        yield f"dag `{scope.dag_id}` does not match `{rule.dag}`"
    if not any(fnmatchcase(scope.task_id, task) for task in rule.tasks):
        yield f"task `{scope.task_id}` does not match any of {list(rule.tasks)}"
    requested = {"dag_id": scope.dag_id, "task_id": scope.task_id, "run_id": scope.run_id}
    for field, pointer in rule.bind.items():
        bound = resolve_pointer(identity.claims, pointer)
        value = requested[field]
        if bound is MISSING:
            yield f"{field} is bound to claim `{pointer}`, which is missing"
        elif not isinstance(bound, str) or bound != value:
            yield f"{field} `{value}` is not the value of claim `{pointer}` ({bound!r})"


def scope_mismatches(policy: Policy, identity: Identity, scope: Scope) -> Iterator[str]:
    """Why no scope rule of ``policy`` covers ``scope`` (nothing: one does)."""
    reasons: list[str] = []
    for index, rule in enumerate(policy.scopes):
        failed = list(_rule_mismatches(rule, identity, scope))
        if not failed:
            return
        reasons.extend(f"scopes[{index}]: {reason}" for reason in failed)
    yield from reasons
