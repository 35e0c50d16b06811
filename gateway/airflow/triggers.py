"""Wait for a message on a subject: for deferrable sensors and AssetWatcher events.

The trigger runs in the triggerer, outside any task, so the scope it requests is given
explicitly (for an AssetWatcher: the consuming DAG and a watcher name the policy
allows). It connects through the gateway, subscribes, and fires on the first message.

A refusal fails the trigger, raising :class:`gateway.client.GatewayRefused`: the
triggerer logs it with its traceback, and a deferred task fails with it (shown in the
task's log). Whether the first connect is refused or the client gives up later (rights
revoked), the trigger never retries on its own. Airflow re-creates an AssetWatcher's
trigger about 1.5 s after it ends, so a refused trigger first waits
``refused_hold_seconds`` (30 s) before raising: otherwise each re-creation would be
another round of audited denials. A deferred task's trigger is not re-created (the task
fails), so :class:`~gateway.airflow.sensors.NatsMessageSensor` sets it to 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from nats.aio.client import Client
from nats.errors import ConnectionClosedError

from gateway.airflow.hook import NatsGatewayHook
from gateway.client import GatewayRefused, Scope

__all__ = ["NatsMessageTrigger"]


class NatsMessageTrigger(BaseEventTrigger):
    def __init__(self, *, subject: str, dag_id: str, task_id: str, run_id: str | None = None,
                 nats_conn_id: str = NatsGatewayHook.default_conn_name,
                 refused_hold_seconds: float = 30.0) -> None:
        super().__init__()
        # Not `dag_id`/`task_id`: BaseTrigger has attributes of its own by those names.
        self.subject = subject
        self.scope_dag_id = dag_id
        self.scope_task_id = task_id
        self.scope_run_id = run_id
        self.nats_conn_id = nats_conn_id
        self.refused_hold_seconds = refused_hold_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("gateway.airflow.triggers.NatsMessageTrigger", {
            "subject": self.subject, "dag_id": self.scope_dag_id,
            "task_id": self.scope_task_id, "run_id": self.scope_run_id,
            "nats_conn_id": self.nats_conn_id,
            "refused_hold_seconds": self.refused_hold_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        scope = Scope(self.scope_dag_id, self.scope_task_id, self.scope_run_id)
        try:
            nc = await NatsGatewayHook(self.nats_conn_id).connect(scope)
        except GatewayRefused as refused:
            await self._fail(refused)
            raise
        try:
            message = await self._next_message(nc)
            yield TriggerEvent({"subject": message.subject,
                                "data": message.data.decode(errors="replace")})
        finally:
            await nc.close()

    async def _next_message(self, nc: Client) -> Any:
        subscription = await nc.subscribe(self.subject)
        try:
            return await subscription.next_msg(timeout=None)
        except ConnectionClosedError:
            # The client closes itself when it gives up after repeated refusals.
            if isinstance(nc.last_error, GatewayRefused):
                await self._fail(nc.last_error)
                raise nc.last_error from None
            raise

    async def _fail(self, refused: GatewayRefused) -> None:
        self.log.error("%s", refused)  # at once: the hold below delays Airflow's own record
        await asyncio.sleep(self.refused_hold_seconds)
