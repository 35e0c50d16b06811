"""Which policies could select an identity: an index built once per loaded policy set.

A live decision used to run the full matcher over every policy; with thousands of team
policies that is milliseconds per connect (docs/benchmarks.md). The index narrows the
scan to *candidates* by what a policy's ``match`` compares exactly or by prefix:

- the identity method and its exact key: the OIDC issuer (name or URL, as the matcher
  compares ``match.oidc.issuer``) or the AWS account;
- then the literal prefix of the glob over the subject (OIDC ``sub``; the role ARN for
  AWS): the text before its first ``*``, ``?`` or ``[``. A value ``fnmatchcase`` accepts
  always starts with that prefix, so a policy is never left out; a glob with no literal
  prefix sits under the empty prefix, which every value has.

Candidates are then checked by the full matcher exactly as before, in policy-set order, so
the decision is the unindexed one (tests/unit/test_policy_index.py proves it over random
sets). Each policy also gets a fingerprint of its content: the decision cache compares
candidate fingerprints to tell whether a reload could change a remembered decision.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.identity.model import Identity
from gateway.policy.match import iam_account, iam_role, oidc_issuers
from gateway.policy.model import Policy

__all__ = ["PolicyIndex", "literal_prefix"]

_GLOB_SPECIALS = frozenset("*?[")


def literal_prefix(pattern: str) -> str:
    """The part of an ``fnmatch`` glob before its first wildcard."""
    for position, char in enumerate(pattern):
        if char in _GLOB_SPECIALS:
            return pattern[:position]
    return pattern


def fingerprint(policy: Policy) -> str:
    """A digest of everything in the policy (the id included): equal fingerprints, equal
    policies, so a decision that read only this policy cannot change."""
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()


@dataclass
class _PrefixBucket:
    """Positions of the policies under one exact key, by the literal prefix of their
    subject glob. Looking a value up costs one dict probe per distinct prefix length."""

    by_prefix: dict[str, list[int]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)

    def add(self, prefix: str, position: int) -> None:
        if prefix not in self.by_prefix:
            self.by_prefix[prefix] = []
            if len(prefix) not in self.lengths:
                self.lengths.append(len(prefix))
                self.lengths.sort()
        self.by_prefix[prefix].append(position)

    def collect(self, value: str, into: set[int]) -> None:
        for length in self.lengths:
            if length > len(value):
                break
            found = self.by_prefix.get(value[:length])
            if found is not None:
                into.update(found)


class PolicyIndex:
    """Candidate policies for an identity, in policy-set order. Built off the event loop,
    when a set is loaded; read-only afterwards, so decisions share it without locks."""

    def __init__(self, policies: Sequence[Policy],
                 fingerprints: Sequence[str] | None = None) -> None:
        self._policies = tuple(policies)
        self.fingerprints = tuple(fingerprints if fingerprints is not None
                                  else (fingerprint(p) for p in self._policies))
        if len(self.fingerprints) != len(self._policies):
            raise ValueError("one fingerprint per policy")
        self._oidc: dict[str, _PrefixBucket] = {}
        self._aws: dict[str, _PrefixBucket] = {}
        for position, policy in enumerate(self._policies):
            oidc, iam = policy.match.oidc, policy.match.aws_iam
            if oidc is not None:
                bucket = self._oidc.setdefault(oidc.issuer, _PrefixBucket())
                bucket.add(literal_prefix(oidc.subject), position)
            elif iam is not None:
                bucket = self._aws.setdefault(iam.account, _PrefixBucket())
                bucket.add(literal_prefix(iam.role), position)
            # A policy with neither matcher (the model forbids it) is never a candidate;
            # the full matcher would refuse it anyway.

    def positions(self, identity: Identity) -> tuple[int, ...]:
        """Positions of the policies whose ``match`` could select ``identity``."""
        found: set[int] = set()
        if identity.method == "oidc":
            for issuer in oidc_issuers(identity):
                bucket = self._oidc.get(issuer)
                if bucket is not None:
                    bucket.collect(identity.subject, found)
        elif identity.method == "aws_iam":
            account = iam_account(identity)
            bucket = self._aws.get(account) if isinstance(account, str) else None
            if bucket is not None:
                bucket.collect(iam_role(identity), found)
        return tuple(sorted(found))

    def candidates(self, identity: Identity) -> list[Policy]:
        return [self._policies[position] for position in self.positions(identity)]

    def signature(self, identity: Identity) -> tuple[str, ...]:
        """The fingerprints of ``identity``'s candidates, in order. Two sets giving the
        same signature decide every scope and client of this identity the same way."""
        return tuple(self.fingerprints[position] for position in self.positions(identity))
