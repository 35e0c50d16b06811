"""Fire on task events read from a JetStream stream through the scope's durable consumer:
for AssetWatchers and deferrable sensors.

The trigger runs in the triggerer, outside any task, so the scope it requests is given
explicitly (for an AssetWatcher: the consuming DAG and a watcher name the policy
allows); the consumer it reads is that scope's (``<dag>~<task>``, created by an
operator). Nothing is lost while it is down: the consumer keeps every message until it
is acknowledged, and it is acknowledged only after Airflow stored the trigger event
(Airflow 3.3's ack mode, :mod:`gateway.airflow.consumer`). So delivery is
at-least-once; the event carries ``message_id`` and ``stream_seq`` for de-duplication.

The triggerer drives the trigger through :meth:`filter_shared_stream`, which keeps
yielding: one connection and one subscription live across events, and Airflow never
re-creates the trigger between them. :meth:`run` (used where no shared stream is set
up, e.g. a direct test) reads the same consumer and acks once Airflow has taken the
event from the generator.

``subject`` (optional: a subject or wildcard pattern, as in a ``nats://<subject>`` asset
or queue URI) narrows what fires to messages on matching subjects: the consumer's own
filter is the operator's, and a watcher declared for one subject must not fire on
another the consumer also holds. ``apply_function``, like the Kafka provider's, is the
dotted path of a callable taking the event payload (``data``, ``producer``,
``subject``...) and returning whether it fires; messages either declines are terminated
(never redelivered). A refusal fails the trigger with
:class:`gateway.client.GatewayRefused` after ``refused_hold_seconds`` (30 s; an
AssetWatcher's trigger is re-created, and each re-creation would otherwise be another
round of audited denials).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import (
    AdvanceItem,
    AdvanceOutcome,
    reject_shared_stream_event,
)

from gateway.airflow.assets import check_subject
from gateway.airflow.consumer import ConsumerReader, ReaderSettings
from gateway.airflow.hook import NatsGatewayHook
from gateway.client import Scope
from gateway.natsjwt.subjects import pattern_matches

__all__ = ["NatsMessageTrigger"]

Filter = Callable[[dict[str, Any]], bool]


class NatsMessageTrigger(BaseEventTrigger):
    def __init__(self, *, stream: str, dag_id: str, task_id: str, run_id: str | None = None,
                 consumer: str | None = None, apply_function: str | None = None,
                 max_events: int | None = None,
                 nats_conn_id: str = NatsGatewayHook.default_conn_name,
                 refused_hold_seconds: float = 30.0, subject: str | None = None) -> None:
        super().__init__()
        if subject is not None:
            check_subject(subject)  # at DAG parse time, not in the triggerer
        self.stream = stream
        self.subject = subject
        # Not `dag_id`/`task_id`: BaseTrigger has attributes of its own by those names.
        self.scope_dag_id = dag_id
        self.scope_task_id = task_id
        self.scope_run_id = run_id
        self.consumer = consumer
        self.apply_function = apply_function
        self.max_events = max_events
        self.nats_conn_id = nats_conn_id
        self.refused_hold_seconds = refused_hold_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("gateway.airflow.triggers.NatsMessageTrigger", {
            "stream": self.stream, "dag_id": self.scope_dag_id,
            "task_id": self.scope_task_id, "run_id": self.scope_run_id,
            "consumer": self.consumer, "apply_function": self.apply_function,
            "max_events": self.max_events, "nats_conn_id": self.nats_conn_id,
            "refused_hold_seconds": self.refused_hold_seconds, "subject": self.subject})

    def shared_stream_key(self) -> Hashable:
        # One pull loop per durable consumer in a triggerer; two triggers reading the
        # same consumer (two runs' sensors) see the same messages.
        return ("nats-gateway", self.nats_conn_id, self.stream, self.scope_dag_id,
                self.scope_task_id, self.consumer)

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> ConsumerReader:
        return ConsumerReader(_reader_settings(kwargs))

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]
                                   ) -> AsyncIterator[TriggerEvent]:
        wanted = await self._filter()
        fired = 0
        async for payload in shared_stream:
            if not wanted(payload):
                reject_shared_stream_event()
                continue
            yield TriggerEvent(payload)
            fired += 1
            if self.max_events is not None and fired >= self.max_events:
                # Pulling the next message would bind it to a trigger that is done: wait
                # here until Airflow removes the trigger; leaving settles the last event.
                await asyncio.Event().wait()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        reader = ConsumerReader(_reader_settings(self.serialize()[1]))
        wanted = await self._filter()
        fired = 0
        try:
            async for payload, message in reader.open_stream():
                if not wanted(payload):
                    await reader.advance([AdvanceItem(message, AdvanceOutcome(0, 0, 1))])
                    continue
                yield TriggerEvent(payload)
                # Resumed: the triggerer has taken the event.
                await reader.advance([AdvanceItem(message, AdvanceOutcome(1, 0))])
                fired += 1
                if self.max_events is not None and fired >= self.max_events:
                    return
        finally:
            await reader.aclose()

    async def _filter(self) -> Filter:
        on_subject = _on_subject(self.subject)
        if self.apply_function is None:
            return on_subject
        # Importing runs module code: off the triggerer's event loop.
        function = await asyncio.to_thread(_import_callable, self.apply_function)
        # The subject first: apply_function never sees a message this watcher is not for.
        return lambda payload: on_subject(payload) and bool(function(payload))


def _everything(_payload: dict[str, Any]) -> bool:
    return True


def _on_subject(pattern: str | None) -> Filter:
    if pattern is None:
        return _everything
    return lambda payload: pattern_matches(pattern, tuple(payload["subject"].split(".")))


def _import_callable(path: str) -> Filter:
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"apply_function `{path}` is not a dotted path")
    function = getattr(importlib.import_module(module_name), name)
    if not callable(function):
        raise ValueError(f"apply_function `{path}` is not callable")
    return function  # type: ignore[no-any-return]


def _reader_settings(kwargs: dict[str, Any]) -> ReaderSettings:
    scope = Scope(kwargs["dag_id"], kwargs["task_id"], kwargs.get("run_id"))
    return ReaderSettings(stream=kwargs["stream"], scope=scope,
                          consumer=kwargs.get("consumer"),
                          nats_conn_id=kwargs.get("nats_conn_id",
                                                  NatsGatewayHook.default_conn_name),
                          refused_hold_seconds=kwargs.get("refused_hold_seconds", 30.0))
