"""Decisions remembered by (identity, scope, client), kept across policy reloads that
cannot change them.

A reconnect storm is thousands of the same workers asking for the same scopes again;
matching is the part of a decision that grows with the policy set (docs/benchmarks.md).
What is cached is the clock-free part of a decision
(:class:`gateway.policy.decide.Shape`: the matched policies and the permissions or the
denial they lead to); the expiry, the denial of an identity that has run out and the
policy-set hash in the decision (and so in the audit record) come from the set in force
on every use. The key holds everything matching reads: the identity's method, issuer,
subject and claims, the requested scope and the client's address and connection type.

Each entry also remembers its *signature*: the fingerprints, in set order, of the
candidate policies the index (index.py) gave for its identity. Only candidates can match,
and a shape depends only on which of them match and what they say, so under a new set an
entry whose identity has the same signature would be computed again to the same shape:
it is kept. Any change to a candidate (content, order, removal) or a new policy that is a
candidate for the identity changes the signature, and the entry is computed afresh on
its next use. Checked lazily, per entry, on its first use after a reload: a reload costs
no pause, and a storm after an unrelated edit still hits. Bounded; least recently used
goes first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

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


@dataclass
class _Entry:
    shape: Shape
    signature: tuple[str, ...]
    """fingerprints of the identity's candidate policies when the shape was computed"""
    policy_hash: str
    """the set the entry was last computed or confirmed under"""


class DecisionCache:
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.kept = 0
        """hits on an entry made under an earlier set that the reload could not affect"""
        self.invalidated = 0
        """entries recomputed because a reload changed one of their candidates"""

    def __len__(self) -> int:
        return len(self._entries)

    def _current(self, key: Hashable, policy_set: PolicySet,
                 identity: Identity) -> _Entry | None:
        """The entry for ``key`` if it holds for ``policy_set``; confirms an entry of an
        earlier set when the identity's candidates are unchanged."""
        entry = self._entries.get(key)
        if entry is None or entry.policy_hash == policy_set.content_hash:
            return entry
        if policy_set.index.signature(identity) != entry.signature:
            self.invalidated += 1
            return None
        entry.policy_hash = policy_set.content_hash
        self.kept += 1
        return entry

    def decide(self, policy_set: PolicySet, identity: Identity, scope: Scope,
               client: ClientConnection, now: int) -> Decision:
        """Exactly what :func:`gateway.policy.decide.decide` returns or raises."""
        if self._max <= 0:
            return decide(policy_set, identity, scope, client, now)
        key = (identity.match_key, scope, client)
        entry = self._current(key, policy_set, identity)
        if entry is None:
            self.misses += 1
            shape = shape_of(matching(policy_set, identity, scope), identity, scope, client)
            entry = _Entry(shape, policy_set.index.signature(identity),
                           policy_set.content_hash)
            self._entries[key] = entry
            self._entries.move_to_end(key)
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        # The set in force names the decision, even for a shape kept from an earlier set.
        return decision_from(entry.shape, policy_set.content_hash, identity, now)
