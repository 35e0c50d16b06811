"""JetStream rights of one task, rendered into the exact subjects nats-server checks.

A task never gets `$JS.API.>` (an admin grant: every stream and consumer, deletes and
purges included) nor `_INBOX.>` (every client's replies). It gets, for its scope:

- a **private inbox**: subscribe ``_INBOX.<dag>.<task>.>``. The client sets nats-py's
  ``inbox_prefix`` to ``_INBOX.<dag>.<task>`` (:func:`inbox_prefix`), so its request
  replies, PubAcks and pull deliveries arrive there. The ids are encoded whole tokens, so
  no task's prefix is a prefix of another's.
- **publish into a stream**: the stream's subject templates, rendered; the PubAck is a
  reply to the private inbox.
- **consume through its own durable pull consumer** ``<dag>~<task>[~<name>]`` on a
  stream: ``$JS.API.CONSUMER.INFO.<stream>.<consumer>`` (nats-py's ``pull_subscribe``
  looks the consumer up), ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` (fetch),
  ``$JS.ACK.<stream>.<consumer>.>`` (acks), and with ``create`` the filtered create subject
  ``$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>``, which nats-server (2.10+)
  refuses when the request body's filter differs from the subject's. Delete, purge, stream
  info, stream names and every other consumer stay out of reach.

Consumer names: the encoded ids never contain `~` (the encoding emits only
``[A-Za-z0-9_-]`` and ``%XX``) and policy name suffixes may not either, so splitting a
name on `~` gives back (dag, task, name): the derivation is injective, and
``{dag_id}_{task_id}`` would not be (`a_b`/`c` and `a`/`b_c`). `%` and `~` are legal in
stream/consumer names and subject tokens (DESIGN §8; measured on nats-server 2.15).
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.envelope import Scope
from gateway.policy.encode import encode_token, render_template

if TYPE_CHECKING:  # the client imports this module; it stays free of pydantic
    from gateway.policy.model import PolicyPermissions, StreamConsume, StreamPublish

__all__ = [
    "API_PREFIX",
    "INBOX_ROOT",
    "MAX_NAME_LENGTH",
    "ConsumerNameTooLong",
    "Rendered",
    "consume_subjects",
    "consumer_name",
    "inbox_prefix",
    "inbox_subscription",
    "publish_subjects",
    "render",
]

API_PREFIX = "$JS.API"
ACK_PREFIX = "$JS.ACK"
INBOX_ROOT = "_INBOX"
NAME_SEPARATOR = "~"
# nats-server's JSMaxNameLen: a longer consumer name is refused at creation.
MAX_NAME_LENGTH = 255


class ConsumerNameTooLong(ValueError):
    """The derived consumer name is longer than nats-server accepts."""


def inbox_prefix(scope: Scope) -> str:
    """The task's reply inbox prefix, for nats-py's ``inbox_prefix``: replies arrive on
    ``<prefix>.<nuid>...``. ``Scope("etl", "grp.load")`` -> ``_INBOX.etl.grp%2Eload``."""
    return ".".join([INBOX_ROOT, encode_token(scope.dag_id), encode_token(scope.task_id)])


def inbox_subscription(scope: Scope) -> str:
    """The subscribe allow that covers exactly the task's inbox."""
    return inbox_prefix(scope) + ".>"


def consumer_name(scope: Scope, name: str | None = None) -> str:
    """``<dag>~<task>`` or ``<dag>~<task>~<name>``, ids encoded; ConsumerNameTooLong past
    nats-server's limit."""
    parts = [encode_token(scope.dag_id), encode_token(scope.task_id)]
    if name is not None:
        parts.append(name)
    joined = NAME_SEPARATOR.join(parts)
    if len(joined) > MAX_NAME_LENGTH:
        raise ConsumerNameTooLong(
            f"consumer name for dag `{scope.dag_id}` task `{scope.task_id}` is longer than "
            f"{MAX_NAME_LENGTH} characters")
    return joined


def publish_subjects(rule: StreamPublish, scope: Scope) -> tuple[str, ...]:
    return tuple(render_template(subject, scope) for subject in rule.subjects)


def consume_subjects(rule: StreamConsume, scope: Scope) -> tuple[str, ...]:
    """The publish allows that reading through the task's consumer takes."""
    stream, consumer = rule.stream, consumer_name(scope, rule.name)
    subjects = [f"{API_PREFIX}.CONSUMER.INFO.{stream}.{consumer}",
                f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                f"{ACK_PREFIX}.{stream}.{consumer}.>"]
    if rule.create:
        # The filter sits in the subject, so nats-server holds the body's filter to it.
        subjects.append(f"{API_PREFIX}.CONSUMER.CREATE.{stream}.{consumer}."
                        f"{render_template(rule.filter, scope)}")
    return tuple(subjects)


@dataclass(frozen=True)
class Rendered:
    """One policy's JetStream and inbox rights for one scope, labelled for explain."""

    publish: tuple[tuple[str, str], ...] = ()
    """(what it is for, subject) pairs, all publish allows"""
    inbox: str | None = None
    """the subscribe allow of the private inbox, when granted"""

    @property
    def publish_allow(self) -> tuple[str, ...]:
        return tuple(subject for _, subject in self.publish)

    @property
    def subscribe_allow(self) -> tuple[str, ...]:
        return () if self.inbox is None else (self.inbox,)


def _labelled(label: str, subjects: Iterable[str]) -> list[tuple[str, str]]:
    return [(label, subject) for subject in subjects]


def render(permissions: PolicyPermissions, scope: Scope) -> Rendered:
    """Every JetStream and inbox subject ``permissions`` grant ``scope``; raises
    RunIdRequired or ConsumerNameTooLong."""
    jetstream = permissions.jetstream
    publish: list[tuple[str, str]] = []
    for rule in jetstream.publish:
        publish += _labelled(f"publish into stream {rule.stream}",
                             publish_subjects(rule, scope))
    for consume in jetstream.consume:
        label = f"consume {consume.stream} as {consumer_name(scope, consume.name)}"
        publish += _labelled(label, consume_subjects(consume, scope))
    private = permissions.inbox == "private" or bool(jetstream.publish or jetstream.consume)
    return Rendered(tuple(publish), inbox_subscription(scope) if private else None)
