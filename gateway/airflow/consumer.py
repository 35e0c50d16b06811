"""Reading a task's durable JetStream consumer for Airflow's triggerer, acking late.

:class:`ConsumerReader` owns one connection through the gateway and one pull
subscription bound to the scope's durable consumer (``<dag>~<task>[~<name>]``, which an
operator creates: the task is granted only to look it up, fetch and ack). It is
Airflow 3.3's ack-mode shared-stream producer (``airflow.triggers.shared_stream``): it
yields each message with the message itself as the broker payload, and the triggerer
calls :meth:`ConsumerReader.advance` only once the trigger events derived from a message
are stored in the metadata database. Then, per message:

- every subscriber accepted it: ``ack``;
- a subscriber's filter rejected it (``apply_function`` said no): ``term``, never again;
- otherwise (a subscriber failed, or none was listening): ``nak``, redelivered at once.

Messages handed out but never advanced (the triggerer stopped, the trigger was removed)
are nak'ed on close, and if the close never happens (a crash) JetStream redelivers them
after the consumer's ``ack_wait``. Delivery is therefore at-least-once: a message can
become two trigger events when the triggerer stops between storing the event and acking
it; the event's ``message_id`` and ``stream_seq`` let a consumer de-duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer
from nats.aio.client import Client
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from gateway.airflow.hook import NatsGatewayHook
from gateway.airflow.messages import event_payload
from gateway.client import GatewayRefused, Scope
from gateway.client.subjects import consumer_name

__all__ = ["ConsumerMissing", "ConsumerReader", "ReaderSettings"]

log = logging.getLogger(__name__)


class ConsumerMissing(RuntimeError):
    """The scope's durable consumer does not exist on the stream (an operator creates
    it; the task may not)."""


@dataclass(frozen=True)
class ReaderSettings:
    stream: str
    scope: Scope
    consumer: str | None = None  # the policy's optional `name` suffix
    nats_conn_id: str = NatsGatewayHook.default_conn_name
    batch: int = 64
    fetch_seconds: float = 5.0
    refused_hold_seconds: float = 30.0

    @property
    def durable(self) -> str:
        return consumer_name(self.scope, self.consumer)


class ConsumerReader(SharedStreamProducer):
    def __init__(self, settings: ReaderSettings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._unsettled: dict[int, Any] = {}  # stream sequence -> message handed out

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        """Yields ``(event payload, message)`` until cancelled; raises GatewayRefused
        (after ``refused_hold_seconds``) when the gateway refuses or revokes the grant."""
        subscription = await self._subscribe()
        while True:
            for message in await self._fetch(subscription):
                meta = message.metadata
                self._unsettled[meta.sequence.stream] = message
                yield event_payload(subject=message.subject, data=message.data,
                                    headers=message.headers, stream=meta.stream,
                                    stream_seq=meta.sequence.stream,
                                    delivered=meta.num_delivered), message

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        for item in batch:
            message, outcome = item.broker_payload, item.outcome
            self._unsettled.pop(message.metadata.sequence.stream, None)
            if outcome.is_clean:
                await message.ack()
            elif outcome.rejected:
                await message.term()
            else:
                await message.nak()
        if self._nc is not None:
            await self._nc.flush()  # the acks are on the wire before the next batch

    async def aclose(self) -> None:
        nc, self._nc = self._nc, None
        if nc is None:
            return
        unsettled, self._unsettled = list(self._unsettled.values()), {}
        with contextlib.suppress(Exception):
            for message in unsettled:  # redeliver now, not after ack_wait
                await message.nak()
            await nc.flush(timeout=2)
        with contextlib.suppress(Exception):
            await nc.close()

    async def _subscribe(self) -> Any:
        hook = NatsGatewayHook(self.settings.nats_conn_id)
        try:
            self._nc = await hook.connect(self.settings.scope)
        except GatewayRefused as refused:
            await self._hold(refused)
            raise
        js = self._nc.jetstream()
        stream, durable = self.settings.stream, self.settings.durable
        try:
            # Looked up first for a clear error; binding alone would fail only on fetch.
            await js.consumer_info(stream, durable)
        except NotFoundError:
            raise ConsumerMissing(f"consumer `{durable}` does not exist on stream "
                                  f"`{stream}`: an operator creates it") from None
        return await js.pull_subscribe_bind(durable=durable, stream=stream)

    async def _fetch(self, subscription: Any) -> list[Any]:
        assert self._nc is not None
        try:
            messages: list[Any] = await subscription.fetch(
                self.settings.batch, timeout=self.settings.fetch_seconds)
            return messages
        except (NatsTimeout, TimeoutError):
            # Nothing new (nats-py raises either, depending on where the wait ran out),
            # or reconnecting: ask again.
            return []
        except ConnectionClosedError:
            # The client closes itself when it gives up after repeated refusals.
            if isinstance(self._nc.last_error, GatewayRefused):
                await self._hold(self._nc.last_error)
                raise self._nc.last_error from None
            raise

    async def _hold(self, refused: GatewayRefused) -> None:
        # An AssetWatcher's trigger that fails is re-created within seconds: without the
        # hold each re-creation would be another round of audited denials.
        log.error("%s", refused)
        await asyncio.sleep(self.settings.refused_hold_seconds)
