"""Warnings about a valid policy set: legal, but probably not what the operator meant.

`policy check` prints them; `--strict` makes them errors for a policy repository's CI.
Each warning has a ``file:line`` (the subject template's own line where there is one) and
a stable code:

- ``allow_everything``: an allow of only wildcards (`>`, `*.>`, `*`): every subject,
  `$SYS`, `$JS` and inboxes included
- ``allow_system``, ``allow_jetstream``, ``allow_inboxes``: an allow that names nothing
  inside `$SYS`, `$JS` / `$JS.API` / `$KV` / `$O`, or `_INBOX` (`$SYS.>`, `$SYS.*.>`,
  `*.API.>`, `_INBOX.*`...): server administration, every stream, or other clients' replies;
  ``allow_inboxes`` also for any allow that starts with `*`, which holds private inboxes
- ``shared_publish``: a publish allow without both `{dag_id}` and `{task_id}` in a policy
  that covers more than one task, so those tasks share it
- ``event_loop``: a DAG may publish (core or into a stream) on a subject that a watcher
  of the same DAG consumes (subscribe allow or JetStream consumer filter): each message
  would trigger the next run (loops.py)
- ``consumer_create``: a task may create its own JetStream consumer, and with it choose
  its configuration: a push ``deliver_subject`` sends the stream's messages on any subject
- ``unknown_issuer``, ``no_policies``

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from gateway.policy.encode import encode_token
from gateway.policy.load import PolicySet, SubjectKey
from gateway.policy.loops import consuming, event_loops, publishing
from gateway.policy.model import PLACEHOLDERS, Policy

__all__ = ["LintWarning", "lint"]


@dataclass(frozen=True)
class LintWarning:
    source: str
    """``file:line``, or empty for a warning about the whole set"""
    code: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}warning: {self.message} [{self.code}]"


_GLOB = set("*?[")
_WILDCARDS = frozenset({"*", ">"})
# Namespaces a task has no business reaching wholesale (DESIGN §8: `$JS.API.>` is an
# admin grant). `$JS.API` is listed on its own: under `$JS` it is a literal token.
_NAMESPACES = (
    (("$SYS",), "allow_system", "the server's system subjects"),
    (("$JS",), "allow_jetstream", "every JetStream API and ack subject"),
    (("$JS", "API"), "allow_jetstream", "the JetStream admin API"),
    (("$KV",), "allow_jetstream", "every key-value bucket"),
    (("$O",), "allow_jetstream", "every object store"),
    (("_INBOX",), "allow_inboxes", "every client's reply inbox"),
)


def _part_can_be(part: str, literal: str) -> bool:
    """Whether a template token can stand for ``literal`` once rendered: a wildcard, the
    literal itself, or a placeholder whose id could encode to it (`{dag_id}` can be
    `_INBOX`, never `$SYS`)."""
    if part in {"*", literal}:
        return True
    return part in PLACEHOLDERS and encode_token(literal) == literal


def _reaches_namespace(tokens: list[str], prefix: tuple[str, ...]) -> bool:
    """True when the template can stand for ``prefix`` and names nothing beneath it: what
    follows is only wildcards (`$SYS.>`, `$SYS.*.>`, `*.API.>`, `_INBOX.*`)."""
    for index, literal in enumerate(prefix):
        if index >= len(tokens):
            return False
        if tokens[index] == ">":
            return True
        if not _part_can_be(tokens[index], literal):
            return False
    rest = tokens[len(prefix):]
    return bool(rest) and set(rest) <= _WILDCARDS


def _broad(template: str) -> tuple[str, str] | None:
    """(code, what it reaches) for an allow too broad for a task, else None."""
    tokens = template.split(".")
    if set(tokens) <= _WILDCARDS:
        return "allow_everything", "every subject, `$SYS`, `$JS` and inboxes included"
    for prefix, code, what in _NAMESPACES:
        if _reaches_namespace(tokens, prefix):
            return code, what
    if tokens[0] == "*":
        # `*.x.y` holds `_INBOX.x.y`: the private inbox of DAG x's task y.
        return "allow_inboxes", "other tasks' private inboxes (`_INBOX.<dag>.<task>`)"
    return None


def _broad_allows(policy: Policy, subjects: Mapping[SubjectKey, str],
                  fallback: str) -> Iterator[LintWarning]:
    for template in publishing(policy) + consuming(policy):
        found = _broad(template.text)
        if found is not None:
            code, what = found
            source = subjects.get((policy.id, *template.key), fallback)
            yield LintWarning(source, code, f"policy `{policy.id}`: {template.what} "
                                            f"`{template.text}` can reach {what}")


def _covers_one_task(policy: Policy) -> bool:
    rules = policy.scopes
    return len(rules) == 1 and not _GLOB & set(rules[0].dag) and len(rules[0].tasks) == 1 \
        and not _GLOB & set(rules[0].tasks[0])


def _shared_publish(policy: Policy, subjects: Mapping[SubjectKey, str],
                    fallback: str) -> Iterator[LintWarning]:
    if _covers_one_task(policy):  # one task alone cannot share its rights
        return
    for template in publishing(policy):
        if not {"{dag_id}", "{task_id}"} <= set(template.text.split(".")):
            yield LintWarning(
                subjects.get((policy.id, *template.key), fallback), "shared_publish",
                f"policy `{policy.id}`: {template.what} `{template.text}` does not name both "
                "{dag_id} and {task_id}, so every DAG/task this policy covers shares it")


def _event_loops(policy_set: PolicySet) -> Iterator[LintWarning]:
    subjects = policy_set.subject_sources
    for loop in event_loops(policy_set.policies):
        pub, con = loop.publisher, loop.consumer
        source = subjects.get((pub.policy.id, *pub.key),
                              policy_set.sources.get(pub.policy.id, "?"))
        where = f"policy `{con.policy.id}`" if con.policy is not pub.policy else "it"
        yield LintWarning(
            source, "event_loop",
            f"policy `{pub.policy.id}`: {pub.what} `{pub.text}` can reach {con.what} "
            f"`{con.text}` of {where} in the same DAG: if a watcher consumes it, each "
            "message triggers the next run")


def _consumer_create(policy: Policy, subjects: Mapping[SubjectKey, str],
                     fallback: str) -> Iterator[LintWarning]:
    for index, rule in enumerate(policy.permissions.jetstream.consume):
        if rule.create:
            yield LintWarning(
                subjects.get((policy.id, "jetstream", f"consume.{index}.filter", 0), fallback),
                "consumer_create",
                f"policy `{policy.id}`: tasks may create their consumer on stream "
                f"`{rule.stream}` and choose its config: a push `deliver_subject` would send "
                "the stream's messages on any subject; create consumers as an operator")


def lint(policy_set: PolicySet,
         issuer_names: Collection[str] | None = None) -> list[LintWarning]:
    """Every warning, in policy order. ``issuer_names``: the configured OIDC issuers (name
    and URL); when given, a policy naming another issuer is reported."""
    if not policy_set.policies:
        return [LintWarning("", "no_policies", "no policies: every connection will be denied")]
    subjects = policy_set.subject_sources
    warnings: list[LintWarning] = []
    for policy in policy_set.policies:
        source = policy_set.sources.get(policy.id, "?")
        warnings += _broad_allows(policy, subjects, source)
        warnings += _shared_publish(policy, subjects, source)
        warnings += _consumer_create(policy, subjects, source)
        oidc = policy.match.oidc
        if oidc is not None and issuer_names is not None and oidc.issuer not in issuer_names:
            warnings.append(LintWarning(source, "unknown_issuer", f"policy `{policy.id}`: "
                                        f"issuer `{oidc.issuer}` is not configured, so this "
                                        "policy never matches"))
    warnings += _event_loops(policy_set)
    return warnings
