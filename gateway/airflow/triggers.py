"""Wait for a message on a subject: for deferrable sensors and AssetWatcher events.

The trigger runs in the triggerer, outside any task, so the scope it requests is given
explicitly (for an AssetWatcher: the consuming DAG and a watcher name the policy
allows). It connects through the gateway, subscribes, and fires on the first message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from gateway.airflow.hook import NatsGatewayHook
from gateway.client import Scope

__all__ = ["NatsMessageTrigger"]


class NatsMessageTrigger(BaseEventTrigger):
    def __init__(self, *, subject: str, dag_id: str, task_id: str, run_id: str | None = None,
                 nats_conn_id: str = NatsGatewayHook.default_conn_name) -> None:
        super().__init__()
        # Not `dag_id`/`task_id`: BaseTrigger has attributes of its own by those names.
        self.subject = subject
        self.scope_dag_id = dag_id
        self.scope_task_id = task_id
        self.scope_run_id = run_id
        self.nats_conn_id = nats_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("gateway.airflow.triggers.NatsMessageTrigger", {
            "subject": self.subject, "dag_id": self.scope_dag_id,
            "task_id": self.scope_task_id, "run_id": self.scope_run_id,
            "nats_conn_id": self.nats_conn_id})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        scope = Scope(self.scope_dag_id, self.scope_task_id, self.scope_run_id)
        nc = await NatsGatewayHook(self.nats_conn_id).connect(scope)
        try:
            subscription = await nc.subscribe(self.subject)
            message = await subscription.next_msg(timeout=None)
            yield TriggerEvent({"subject": message.subject,
                                "data": message.data.decode(errors="replace")})
        finally:
            await nc.close()
