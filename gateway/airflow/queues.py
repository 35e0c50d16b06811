"""``MessageQueueTrigger`` with NATS: the common-messaging provider's queue provider for
the ``nats`` scheme (registered under ``queues`` in :mod:`gateway.airflow.provider`; it
is imported only when apache-airflow-providers-common-messaging is installed).

Both of its dispatch paths build a :class:`~gateway.airflow.triggers.NatsMessageTrigger`,
and what Airflow stores and the triggerer runs is that trigger (``MessageQueueTrigger``
serializes as the trigger it resolved to):

- ``MessageQueueTrigger(queue="nats://<subject>", stream=..., dag_id=..., task_id=...)``:
  the URI names the subject (or wildcard pattern) the watcher fires on, written as the
  ``nats://<subject>`` asset URI is; every other keyword argument goes to the trigger
  unchanged. common-messaging 2.1 deprecates ``queue=`` in favour of
- ``MessageQueueTrigger(scheme="nats", stream=..., dag_id=..., task_id=...,
  subject=...)``: all keyword arguments go to the trigger.

The stream is a keyword argument, not part of the URI: a task may not ask JetStream which
stream holds a subject (``$JS.API.STREAM.NAMES`` is never granted), and the URI then reads
like the asset it feeds. ``dag_id`` and ``task_id`` are the scope the trigger connects as
(the consuming DAG and the watcher's name): an AssetWatcher hands its trigger nothing, so
they are given as for ``NatsMessageTrigger`` itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.providers.common.messaging.providers.base_provider import (
    BaseMessageQueueProvider,
)
from airflow.triggers.base import BaseEventTrigger

from gateway.airflow.assets import sanitize_uri
from gateway.airflow.triggers import NatsMessageTrigger

__all__ = ["NatsMessageQueueProvider", "queue_subject"]

SCHEME = "nats"
REQUIRED = ("stream", "dag_id", "task_id")


def queue_subject(queue: str) -> str:
    """The subject a ``nats://<subject>`` queue URI names; refuses anything else (the
    asset URI's rule: no path, port, query, user or fragment)."""
    parsed = urlsplit(queue)
    if parsed.scheme != SCHEME:
        raise ValueError(f"`{queue}` is not a `nats://<subject>` queue")
    if parsed.fragment:
        raise ValueError(f"`{queue}`: a nats queue URI has no fragment")
    return sanitize_uri(parsed).netloc


class NatsMessageQueueProvider(BaseMessageQueueProvider):
    """Resolves ``nats`` queues and the ``nats`` scheme to :class:`NatsMessageTrigger`."""

    scheme = SCHEME

    def queue_matches(self, queue: str) -> bool:
        # Only the scheme: a malformed nats URI is ours to refuse with a reason, not
        # "recognized by no provider".
        return urlsplit(queue).scheme == SCHEME

    def trigger_class(self) -> type[BaseEventTrigger]:
        return NatsMessageTrigger

    def trigger_kwargs(self, queue: str, **kwargs: Any) -> dict[str, Any]:
        """Only what the URI adds (``subject``): MessageQueueTrigger passes ``kwargs``
        to the trigger itself, and a key given twice would be a TypeError there."""
        missing = [name for name in REQUIRED if name not in kwargs]
        if missing:
            raise ValueError(f"a `nats://` queue needs the keyword arguments `stream`, "
                             f"`dag_id` and `task_id`: missing `{'`, `'.join(missing)}`")
        if "subject" in kwargs:
            raise ValueError(f"`{queue}` names the subject: do not pass `subject` as well")
        return {"subject": queue_subject(queue)}
