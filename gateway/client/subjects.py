"""Subjects and names of a task's own space, rendered with the gateway's injective id
encoding, so the client asks for exactly what the policy grants."""

from __future__ import annotations

from gateway.envelope import Scope
from gateway.policy import jetstream
from gateway.policy.encode import encode_token, render_template

__all__ = ["consumer_name", "inbox_prefix", "render_subject", "task_subject"]


def task_subject(prefix: str, dag_id: str, task_id: str, *suffix: str) -> str:
    """``task_subject("airflow", "etl", "grp.load", "done")`` -> ``airflow.etl.grp%2Eload.done``."""
    return ".".join([prefix, encode_token(dag_id), encode_token(task_id), *suffix])


def render_subject(template: str, scope: Scope) -> str:
    """A subject from a template with ``{dag_id}``, ``{task_id}``, ``{run_id}`` as whole
    tokens, rendered exactly as policies render them (the same encoding)."""
    from gateway.policy.model import check_subject_template

    return render_template(check_subject_template(template), scope)


def inbox_prefix(scope: Scope) -> str:
    """The private reply inbox a policy with ``inbox: private`` or a ``jetstream`` grant
    allows: pass it as nats-py's ``inbox_prefix`` (``nats.connect(..., inbox_prefix=
    inbox_prefix(scope))``), or every request, PubAck and pull delivery goes to
    ``_INBOX.<nuid>``, which the task may not read. ``Scope("etl", "load")`` ->
    ``_INBOX.etl.load``."""
    return jetstream.inbox_prefix(scope)


def consumer_name(scope: Scope, name: str | None = None) -> str:
    """The durable consumer a ``jetstream.consume`` grant lets the task use:
    ``js.pull_subscribe(filter, durable=consumer_name(scope), stream="EVENTS")``. Always
    pass ``stream=``: without it nats-py asks ``$JS.API.STREAM.NAMES``, which lists every
    stream and is not granted."""
    return jetstream.consumer_name(scope, name)
