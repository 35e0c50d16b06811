"""Decisions remembered by (identity, scope, client) for the current policy set.

A reconnect storm is thousands of the same workers asking for the same scopes again;
scanning every policy for each of them is the part of a decision that grows with the
policy set (docs/benchmarks.md). What is cached is the clock-free part of a decision
(:class:`gateway.policy.decide.Shape`: the matched policies and the permissions or the
denial they lead to); the expiry, and the denial of an identity that has run out, are
computed on every use. The key holds everything matching reads: the identity's method,
issuer, subject and claims, the requested scope and the client's address and
connection type. A policy set with another content hash empties the cache, so a
reload takes effect on the next decision. Bounded; the least recently used goes first.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable

from gateway.envelope import Scope
from gateway.identity.model import Identity
from gateway.policy.decide import (
    ClientConnection,
    Decision,
    Shape,
    decide,
    decision_from,
    matching,
    shape_of,
)
from gateway.policy.load import PolicySet

__all__ = ["DecisionCache"]


def _identity_key(identity: Identity) -> Hashable:
    claims = json.dumps(identity.claims, sort_keys=True, separators=(",", ":"), default=str)
    return (identity.method, identity.issuer, identity.issuer_name, identity.subject, claims)


class DecisionCache:
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[Hashable, Shape] = OrderedDict()
        self._policy_hash: str | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def decide(self, policy_set: PolicySet, identity: Identity, scope: Scope,
               client: ClientConnection, now: int) -> Decision:
        """Exactly what :func:`gateway.policy.decide.decide` returns or raises."""
        if self._max <= 0:
            return decide(policy_set, identity, scope, client, now)
        if policy_set.content_hash != self._policy_hash:
            self._entries.clear()
            self._policy_hash = policy_set.content_hash
        key = (_identity_key(identity), scope, client)
        shape = self._entries.get(key)
        if shape is None:
            self.misses += 1
            shape = shape_of(matching(policy_set, identity, scope), identity, scope, client)
            self._entries[key] = shape
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        return decision_from(shape, policy_set.content_hash, identity, now)
