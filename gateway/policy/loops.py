"""Event loops: a DAG may publish on a subject that one of its own watchers consumes.

An Airflow AssetWatcher connects as the DAG it triggers (scope: that DAG and a watcher
name). If a task of the same DAG can publish where the watcher listens, one run's message
triggers the next run, forever. This module finds, between every publishing template
(core publish allows, JetStream stream subjects) and every consuming template (core
subscribe allows, JetStream consumer filters) of policies whose scope rules can cover the
same DAG, whether some subject could match both once rendered for that DAG.

How a token pair is judged (a may-overlap, so it over-reports rather than misses):
- `*`, `>` as in nats-server; equal literals;
- ``{dag_id}`` on both sides: the same DAG, so equal;
- ``{task_id}`` on both sides: the publisher and the watcher are different tasks (a
  watcher publishing to itself is no loop), and encoded ids are injective, so never equal;
- a placeholder and a literal: equal when the literal is an encoded id the rule's globs
  allow (``{run_id}``: any encoded id);
- two different placeholders: possibly equal.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from gateway.policy.encode import decode_token, encode_token
from gateway.policy.model import Policy, ScopeRule

__all__ = ["Loop", "Template", "consuming", "event_loops", "publishing"]

_GLOB = set("*?[")


@dataclass(frozen=True)
class Template:
    policy: Policy
    key: tuple[str, str, int]
    """(direction, kind, index): the policy's part of a ``SubjectKey``"""
    text: str
    what: str


@dataclass(frozen=True)
class Loop:
    publisher: Template
    consumer: Template


def publishing(policy: Policy) -> list[Template]:
    permissions = policy.permissions
    out = [Template(policy, ("publish", "allow", i), t, "publish allow")
           for i, t in enumerate(permissions.publish.allow)]
    for n, rule in enumerate(permissions.jetstream.publish):
        out += [Template(policy, ("jetstream", f"publish.{n}.subjects", i), t,
                         f"stream {rule.stream} subject") for i, t in enumerate(rule.subjects)]
    return out


def consuming(policy: Policy) -> list[Template]:
    permissions = policy.permissions
    out = [Template(policy, ("subscribe", "allow", i), t, "subscribe allow")
           for i, t in enumerate(permissions.subscribe.allow)]
    out += [Template(policy, ("jetstream", f"consume.{n}.filter", 0), rule.filter,
                     f"stream {rule.stream} consumer filter")
            for n, rule in enumerate(permissions.jetstream.consume)]
    return out


def _is_glob(pattern: str) -> bool:
    return bool(_GLOB & set(pattern))


def _may_share_dag(first: str, second: str) -> bool:
    if not _is_glob(first):
        return fnmatchcase(first, second)
    if not _is_glob(second):
        return fnmatchcase(second, first)
    return True  # two globs: assume some id matches both


def _id_of(token: str) -> str | None:
    """The id a literal token is the encoding of, or None if it is no encoded id."""
    try:
        value = decode_token(token)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if value and encode_token(value) == token else None


@dataclass(frozen=True)
class _Pair:
    """The two scope rules being compared: the publisher's and the consumer's."""

    publisher: ScopeRule
    consumer: ScopeRule

    def renders_to(self, placeholder: str, literal: str, side: ScopeRule) -> bool:
        value = _id_of(literal)
        if value is None:
            return False
        if placeholder == "{dag_id}":
            return fnmatchcase(value, self.publisher.dag) and fnmatchcase(
                value, self.consumer.dag)
        if placeholder == "{task_id}":
            return any(fnmatchcase(value, glob) for glob in side.tasks)
        return True  # {run_id}: free-form

    def tokens_meet(self, pub: str, con: str) -> bool:
        if "*" in (pub, con):
            return True
        pub_held, con_held = pub.startswith("{"), con.startswith("{")
        if pub_held and con_held:
            return pub != "{task_id}" or con != "{task_id}"
        if pub_held:
            return self.renders_to(pub, con, self.publisher)
        if con_held:
            return self.renders_to(con, pub, self.consumer)
        return pub == con

    def overlap(self, pub: str, con: str) -> bool:
        x, y = pub.split("."), con.split(".")
        for index in range(max(len(x), len(y)) + 1):
            if index < len(x) and x[index] == ">":
                return index < len(y)
            if index < len(y) and y[index] == ">":
                return index < len(x)
            if index == len(x) or index == len(y):
                return len(x) == len(y)
            if not self.tokens_meet(x[index], y[index]):
                return False
        raise AssertionError("unreachable")


def _loops_between(publisher: Policy, consumer: Policy) -> Iterator[Loop]:
    pairs = [_Pair(p, c) for p in publisher.scopes for c in consumer.scopes
             if _may_share_dag(p.dag, c.dag)]
    if not pairs:
        return
    for pub in publishing(publisher):
        for con in consuming(consumer):
            if any(pair.overlap(pub.text, con.text) for pair in pairs):
                yield Loop(pub, con)


def event_loops(policies: tuple[Policy, ...]) -> Iterator[Loop]:
    """Every (publishing template, consuming template) pair that can close a loop."""
    for publisher in policies:
        for consumer in policies:
            yield from _loops_between(publisher, consumer)
