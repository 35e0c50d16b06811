"""Warnings about a valid policy set: legal, but probably not what the operator meant.

`policy check` prints them; `--strict` makes them errors for a policy repository's CI.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.policy.load import PolicySet
from gateway.policy.model import Policy

__all__ = ["lint"]


_GLOB = set("*?[")


def _covers_one_task(policy: Policy) -> bool:
    rules = policy.scopes
    return len(rules) == 1 and not _GLOB & set(rules[0].dag) and len(rules[0].tasks) == 1 \
        and not _GLOB & set(rules[0].tasks[0])


def _shared_publish(policy_id: str, source: str, templates: tuple[str, ...]) -> list[str]:
    warnings = []
    for template in templates:
        tokens = set(template.split("."))
        if not {"{dag_id}", "{task_id}"} <= tokens:
            warnings.append(
                f"{source}: policy `{policy_id}`: publish allow `{template}` does not name both "
                "{dag_id} and {task_id}, so every DAG/task this policy covers shares it")
    return warnings


def lint(policy_set: PolicySet, issuer_names: Collection[str] | None = None) -> list[str]:
    """Warnings, each ``file:line: message``. ``issuer_names``: the configured OIDC
    issuers (name and URL); when given, a policy naming another issuer is reported."""
    if not policy_set.policies:
        return ["no policies: every connection will be denied"]
    warnings: list[str] = []
    for policy in policy_set.policies:
        source = policy_set.sources.get(policy.id, "?")
        if not _covers_one_task(policy):  # one task alone cannot share its rights
            warnings += _shared_publish(policy.id, source, policy.permissions.publish.allow)
        oidc = policy.match.oidc
        if oidc is not None and issuer_names is not None and oidc.issuer not in issuer_names:
            warnings.append(f"{source}: policy `{policy.id}`: issuer `{oidc.issuer}` is not "
                            "configured, so this policy never matches")
    return warnings
