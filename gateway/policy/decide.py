"""Decide what an identity may do for a requested scope. Pure: values and a clock in.

Semantics (docs/policies.md): deny by default; every policy whose identity matcher and
scope rules both match contributes; allow and deny subjects are combined, and nats-server
applies a deny over any allow, so a deny anywhere wins. The grant expires at the
shortest TTL of the matching policies, and never after the identity itself expires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from gateway.envelope import Scope
from gateway.errors import PolicyDenied
from gateway.identity.model import Identity
from gateway.natsjwt.claims import Permissions
from gateway.policy.encode import encode_token
from gateway.policy.load import PolicySet
from gateway.policy.model import OidcMatch, Policy

__all__ = ["Decision", "decide", "resolve_pointer"]

_MISSING = object()


@dataclass(frozen=True)
class Decision:
    permissions: Permissions
    expires: int
    policy_ids: tuple[str, ...]
    policy_set_hash: str


def resolve_pointer(document: Mapping[str, Any], pointer: str) -> Any:
    """RFC 6901 JSON pointer lookup; returns a private sentinel when absent."""
    current: Any = document
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _claim_matches(actual: Any, expected: str | int | bool) -> bool:
    if isinstance(expected, str):
        return isinstance(actual, str) and fnmatchcase(actual, expected)
    # bool is an int in Python: compare types too, so `true` never matches `1`
    return type(actual) is type(expected) and actual == expected


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]


def _oidc_matches(match: OidcMatch, identity: Identity) -> bool:
    if identity.method != "oidc":
        return False
    if match.issuer not in {identity.issuer, identity.issuer_name} - {""}:
        return False
    if not fnmatchcase(identity.subject, match.subject):
        return False
    if match.audience is not None and match.audience not in _audiences(identity.claims):
        return False
    return all(
        _claim_matches(resolve_pointer(identity.claims, pointer), expected)
        for pointer, expected in match.claims.items()
    )


def _identity_matches(policy: Policy, identity: Identity) -> bool:
    oidc = policy.match.oidc
    return oidc is not None and _oidc_matches(oidc, identity)


def _scope_matches(policy: Policy, scope: Scope) -> bool:
    return any(
        fnmatchcase(scope.dag_id, rule.dag)
        and any(fnmatchcase(scope.task_id, task) for task in rule.tasks)
        for rule in policy.scopes
    )


def _render(template: str, scope: Scope, policy_id: str) -> str:
    values = {"{dag_id}": scope.dag_id, "{task_id}": scope.task_id, "{run_id}": scope.run_id}
    tokens = []
    for token in template.split("."):
        if token in values:
            value = values[token]
            if value is None:
                raise PolicyDenied(f"policy `{policy_id}` needs a run_id in the scope",
                                   code="run_id_required")
            token = encode_token(value)
        tokens.append(token)
    return ".".join(tokens)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _combine(policies: list[Policy], scope: Scope) -> Permissions:
    def rendered(pick: str) -> tuple[str, ...]:
        out: list[str] = []
        for policy in policies:
            direction, kind = pick.split(".")
            templates = getattr(getattr(policy.permissions, direction), kind)
            out.extend(_render(t, scope, policy.id) for t in templates)
        return _unique(out)

    return Permissions(
        pub_allow=rendered("publish.allow"), pub_deny=rendered("publish.deny"),
        sub_allow=rendered("subscribe.allow"), sub_deny=rendered("subscribe.deny"),
    )


def decide(policy_set: PolicySet, identity: Identity, scope: Scope, now: int) -> Decision:
    """The permissions for ``identity`` acting for ``scope``, or PolicyDenied."""
    matched = [
        policy for policy in policy_set.policies
        if _identity_matches(policy, identity) and _scope_matches(policy, scope)
    ]
    if not matched:
        raise PolicyDenied(
            f"no policy grants dag `{scope.dag_id}` task `{scope.task_id}` to "
            f"`{identity.principal}`", code="no_matching_policy")
    expires = min(now + min(p.ttl_seconds for p in matched), identity.expires)
    if expires <= now:
        raise PolicyDenied("identity expires before a grant could start", code="expired_identity")
    return Decision(
        permissions=_combine(matched, scope), expires=expires,
        policy_ids=tuple(p.id for p in matched), policy_set_hash=policy_set.content_hash,
    )
