"""Decide what an identity may do for a requested scope. Pure: values and a clock in.

Semantics (docs/policies.md): deny by default; every policy whose identity matcher and
scope rules both match contributes, and at least one of them must allow a publish or
subscribe subject (else ``no_allow``); allow and deny subjects are combined, and nats-server
applies a deny over any allow, so a deny anywhere wins. Restrictions combine the same
way: the smallest limit and response cap win, the client must satisfy every matching
policy's connection types and source networks, and the grant expires at the shortest TTL
of the matching policies, never after the identity itself expires.

:func:`evaluate` never raises and says, policy by policy, why it matched or not; it is
what `policy explain` prints. :func:`decide` is the gateway's entry point on top of it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, NoReturn

from gateway.envelope import Scope
from gateway.errors import PolicyDenied
from gateway.identity.model import Identity
from gateway.natsjwt.claims import Permissions
from gateway.policy import jetstream
from gateway.policy.encode import RunIdRequired, render_template
from gateway.policy.load import PolicySet
from gateway.policy.match import identity_mismatches, scope_mismatches
from gateway.policy.model import Policy

__all__ = [
    "ClientConnection",
    "Decision",
    "Evaluation",
    "PolicyResult",
    "Shape",
    "decide",
    "decision_from",
    "evaluate",
    "matching",
    "matching_unindexed",
    "rendered_jetstream",
    "rendered_subjects",
    "shape_of",
]

_NO_LIMIT = -1
# nats-server's client_info (kind, type) -> the jwt connection type names policies use.
_CONNECTION_TYPES = {
    ("Client", "nats"): "STANDARD",
    ("Client", "websocket"): "WEBSOCKET",
    ("Client", "mqtt"): "MQTT",
    ("Leafnode", ""): "LEAFNODE",
}


@dataclass(frozen=True)
class ClientConnection:
    """The connecting client as policies see it: its address and connection type."""

    host: str = ""
    connection_type: str = "STANDARD"

    @classmethod
    def from_client_info(cls, host: str, kind: str, client_type: str) -> ClientConnection:
        """From nats-server's ``client_info``; an unrecognised kind is ``UNKNOWN``, which no
        connection-type restriction allows."""
        key = (kind, client_type if kind == "Client" else "")
        return cls(host=host, connection_type=_CONNECTION_TYPES.get(key, "UNKNOWN"))


@dataclass(frozen=True)
class Decision:
    permissions: Permissions
    expires: int
    policy_ids: tuple[str, ...]
    policy_set_hash: str
    expiry_bound: str = ""
    account: str | None = None  # None: the gateway's default target account
    jetstream: tuple[tuple[str, str], ...] = ()
    """(what for, subject) of each JetStream publish allow, for explanations"""
    inbox_prefix: str | None = None
    """the private inbox prefix the client must set, when one is granted"""


@dataclass(frozen=True)
class PolicyResult:
    policy_id: str
    source: str
    outcome: Literal["matched", "identity", "scope"]
    reasons: tuple[str, ...] = ()

    @property
    def matched(self) -> bool:
        return self.outcome == "matched"


@dataclass(frozen=True)
class Evaluation:
    policy_set_hash: str
    results: tuple[PolicyResult, ...]
    decision: Decision | None = None
    denial: PolicyDenied | None = field(default=None)


def _reasons(found: Iterator[str], explain: bool) -> tuple[str, ...]:
    if explain:
        return tuple(found)
    first = next(found, None)  # a live decision only needs to know that one exists
    return () if first is None else (first,)


def _policy_result(policy: Policy, source: str, identity: Identity, scope: Scope,
                   explain: bool) -> PolicyResult:
    identity_reasons = _reasons(identity_mismatches(policy, identity), explain)
    if identity_reasons:
        return PolicyResult(policy.id, source, "identity", identity_reasons)
    scope_reasons = _reasons(scope_mismatches(policy, identity, scope), explain)
    if scope_reasons:
        return PolicyResult(policy.id, source, "scope", scope_reasons)
    return PolicyResult(policy.id, source, "matched")


def _render(template: str, scope: Scope, policy_id: str) -> str:
    try:
        rendered = render_template(template, scope)
    except RunIdRequired:
        raise PolicyDenied(f"policy `{policy_id}` needs a run_id in the scope",
                           code="run_id_required") from None
    if rendered.split(".", 1)[0] == jetstream.INBOX_ROOT and not template.startswith(
            jetstream.INBOX_ROOT):
        # An id rendered as the first token put the subject in the inbox namespace:
        # `{dag_id}.{task_id}.>` for dag `_INBOX` would read every inbox of a DAG.
        raise PolicyDenied(f"policy `{policy_id}`: `{template}` renders into "
                           f"`{jetstream.INBOX_ROOT}` for this scope",
                           code="reserved_subject")
    return rendered


def rendered_jetstream(policy: Policy, scope: Scope) -> jetstream.Rendered:
    """``policy``'s JetStream and private-inbox rights for ``scope``, or PolicyDenied."""
    try:
        return jetstream.render(policy.permissions, scope)
    except RunIdRequired:
        raise PolicyDenied(f"policy `{policy.id}` needs a run_id in the scope",
                           code="run_id_required") from None
    except jetstream.ConsumerNameTooLong as exc:
        raise PolicyDenied(f"policy `{policy.id}`: {exc}",
                           code="consumer_name_too_long") from None


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def rendered_subjects(policies: Sequence[Policy], scope: Scope, direction: str,
                      kind: str) -> tuple[str, ...]:
    """The subject templates of ``direction`` (publish/subscribe) ``kind`` (allow/deny) of
    ``policies``, rendered for ``scope``; allows include the JetStream and private-inbox
    subjects (jetstream.py), which are only ever allows."""
    out: list[str] = []
    for policy in policies:
        templates: tuple[str, ...] = getattr(getattr(policy.permissions, direction), kind)
        out.extend(_render(template, scope, policy.id) for template in templates)
        if kind == "allow":
            rendered = rendered_jetstream(policy, scope)
            out.extend(rendered.publish_allow if direction == "publish"
                       else rendered.subscribe_allow)
    return _unique(out)


def _smallest(values: Iterable[int | None]) -> int:
    present = [value for value in values if value is not None]
    return min(present) if present else _NO_LIMIT


def _check_connection_type(policies: Sequence[Policy], client: ClientConnection) -> None:
    for policy in policies:
        allowed = policy.permissions.connection_types
        if allowed is not None and client.connection_type not in allowed:
            raise PolicyDenied(
                f"policy `{policy.id}` allows connection types {list(allowed)}, not "
                f"{client.connection_type}", code="connection_type_not_allowed")


@functools.lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    # Parsed once per policy network, not once per connection.
    return ipaddress.ip_network(cidr)


def _check_source(policies: Sequence[Policy], client: ClientConnection) -> tuple[str, ...]:
    """Deny unless the client's address is inside every restricting policy's networks;
    returns the address as a single-host network for the user JWT's ``src``."""
    restricting = [p for p in policies if p.permissions.source_networks is not None]
    if not restricting:
        return ()
    try:
        address = ipaddress.ip_address(client.host)
    except ValueError:
        raise PolicyDenied("a policy restricts source networks and the client address "
                           "is unknown", code="source_not_allowed") from None
    for policy in restricting:
        networks = policy.permissions.source_networks or ()
        if not any(address in _network(net) for net in networks):
            raise PolicyDenied(f"client address {address} is outside the networks of "
                               f"policy `{policy.id}`", code="source_not_allowed")
    return (str(ipaddress.ip_network(address)),)


def _connection_types(policies: Sequence[Policy]) -> tuple[str, ...]:
    allowed: set[str] | None = None
    for policy in policies:
        types = policy.permissions.connection_types
        if types is not None:
            allowed = set(types) if allowed is None else allowed & set(types)
    return tuple(sorted(allowed)) if allowed is not None else ()


def _permissions(policies: Sequence[Policy], scope: Scope,
                 client: ClientConnection) -> Permissions:
    _check_connection_type(policies, client)
    source = _check_source(policies, client)
    responses = [p.permissions.responses for p in policies if p.permissions.responses]
    ttls = [r.ttl_seconds for r in responses if r.ttl_seconds is not None]
    limits = [p.permissions.limits for p in policies]
    return Permissions(
        pub_allow=rendered_subjects(policies, scope, "publish", "allow"),
        pub_deny=rendered_subjects(policies, scope, "publish", "deny"),
        sub_allow=rendered_subjects(policies, scope, "subscribe", "allow"),
        sub_deny=rendered_subjects(policies, scope, "subscribe", "deny"),
        resp_max=min(r.max for r in responses) if responses else None,
        resp_ttl_seconds=min(ttls) if ttls else None,
        max_subscriptions=_smallest(limit.subscriptions for limit in limits),
        max_payload_bytes=_smallest(limit.payload_bytes for limit in limits),
        max_data_bytes=_smallest(limit.data_bytes for limit in limits),
        connection_types=_connection_types(policies),
        source_networks=source,
    )


def _expiry(policies: Sequence[Policy], identity: Identity, now: int) -> tuple[int, str]:
    shortest = min(policies, key=lambda p: p.ttl_seconds)
    by_policy = now + shortest.ttl_seconds
    if identity.expires < by_policy:
        return identity.expires, "identity expiry"
    return by_policy, f"ttl_seconds of policy `{shortest.id}`"


@dataclass(frozen=True)
class Shape:
    """A decision apart from the clock: which policies matched and what they grant (or
    which denial they lead to). It depends only on the policy set, the identity, the
    scope and the client, so :class:`gateway.policy.cache.DecisionCache` may keep it;
    :func:`decision_from` adds the time-dependent part on every use."""

    matched: tuple[Policy, ...]
    account: str | None = None
    permissions: Permissions | None = None
    jetstream: tuple[tuple[str, str], ...] = ()
    inbox_prefix: str | None = None
    # Denials in the order decisions check them: before the expiry, and after it.
    early_denial: PolicyDenied | None = None
    late_denial: PolicyDenied | None = None


def _allows_something(policy: Policy) -> bool:
    """A grant needs a subject to act on: deny-only policies narrow others, they never
    admit a worker alone. ``responses`` and ``inbox`` do not count: receiving the request
    it would answer, or sending the request whose reply it would read, already takes an
    allow. JetStream publish and consume grants do."""
    permissions = policy.permissions
    return bool(permissions.publish.allow or permissions.subscribe.allow
                or permissions.jetstream.publish or permissions.jetstream.consume)


def shape_of(matched: Sequence[Policy], identity: Identity, scope: Scope,
             client: ClientConnection) -> Shape:
    if not matched:
        return Shape((), early_denial=PolicyDenied(
            f"no policy grants dag `{scope.dag_id}` task `{scope.task_id}` to "
            f"`{identity.principal}`", code="no_matching_policy"))
    if not any(_allows_something(p) for p in matched):
        return Shape(tuple(matched), early_denial=PolicyDenied(
            f"matching policies {', '.join(f'`{p.id}`' for p in matched)} allow no publish "
            "or subscribe subject", code="no_allow"))
    accounts = {p.account for p in matched if p.account is not None}
    if len(accounts) > 1:
        return Shape(tuple(matched), early_denial=PolicyDenied(
            f"matching policies place the user in different accounts "
            f"({', '.join(sorted(accounts))})", code="account_conflict"))
    try:
        permissions = _permissions(matched, scope, client)
    except PolicyDenied as denial:
        return Shape(tuple(matched), late_denial=denial)
    rendered = [rendered_jetstream(policy, scope) for policy in matched]
    labelled = tuple(dict.fromkeys(pair for r in rendered for pair in r.publish))
    private = any(r.inbox is not None for r in rendered)
    return Shape(tuple(matched), next(iter(accounts), None), permissions, labelled,
                 jetstream.inbox_prefix(scope) if private else None)


def _raise(denial: PolicyDenied) -> NoReturn:
    # A fresh exception each time: a cached shape may be used by many decisions.
    raise PolicyDenied(denial.description, code=denial.code)


def decision_from(shape: Shape, policy_set_hash: str, identity: Identity, now: int) -> Decision:
    """The decision for ``shape`` at ``now``, or PolicyDenied."""
    if shape.early_denial is not None:
        _raise(shape.early_denial)
    expires, bound = _expiry(shape.matched, identity, now)
    if expires <= now:
        raise PolicyDenied("identity expires before a grant could start", code="expired_identity")
    if shape.late_denial is not None:
        _raise(shape.late_denial)
    assert shape.permissions is not None
    return Decision(
        permissions=shape.permissions, expires=expires,
        policy_ids=tuple(p.id for p in shape.matched), policy_set_hash=policy_set_hash,
        expiry_bound=bound, account=shape.account, jetstream=shape.jetstream,
        inbox_prefix=shape.inbox_prefix,
    )


def _decision(policy_set: PolicySet, matched: Sequence[Policy], identity: Identity,
              scope: Scope, client: ClientConnection, now: int) -> Decision:
    return decision_from(shape_of(matched, identity, scope, client), policy_set.content_hash,
                         identity, now)


def _matched(policies: Iterable[Policy], identity: Identity, scope: Scope) -> list[Policy]:
    return [policy for policy in policies
            if _policy_result(policy, "", identity, scope, explain=False).matched]


def matching(policy_set: PolicySet, identity: Identity, scope: Scope) -> list[Policy]:
    """The policies that match, in set order (the live decision's scan): only the
    index's candidates are checked, each by the full matcher."""
    return _matched(policy_set.index.candidates(identity), identity, scope)


def matching_unindexed(policy_set: PolicySet, identity: Identity, scope: Scope) -> list[Policy]:
    """The reference :func:`matching` must equal: every policy through the matcher."""
    return _matched(policy_set.policies, identity, scope)


def evaluate(policy_set: PolicySet, identity: Identity, scope: Scope,
             client: ClientConnection, now: int, *, explain: bool = True) -> Evaluation:
    """Every policy's result, and the decision or the denial they lead to. Never raises.
    With ``explain=False`` each non-matching policy carries only its first reason."""
    results = tuple(
        _policy_result(policy, policy_set.sources.get(policy.id, ""), identity, scope,
                       explain)
        for policy in policy_set.policies
    )
    matched = [p for p, r in zip(policy_set.policies, results, strict=True) if r.matched]
    try:
        decision = _decision(policy_set, matched, identity, scope, client, now)
    except PolicyDenied as denial:
        return Evaluation(policy_set.content_hash, results, denial=denial)
    return Evaluation(policy_set.content_hash, results, decision=decision)


def decide(policy_set: PolicySet, identity: Identity, scope: Scope,
           client: ClientConnection, now: int) -> Decision:
    """The permissions for ``identity`` acting for ``scope``, or PolicyDenied."""
    matched = matching(policy_set, identity, scope)
    return decision_from(shape_of(matched, identity, scope, client), policy_set.content_hash,
                         identity, now)
