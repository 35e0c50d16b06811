"""A deferrable sensor that waits for one message on a subject, through the gateway."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator

from gateway.airflow.hook import NatsGatewayHook
from gateway.airflow.triggers import NatsMessageTrigger
from gateway.client import render_subject, scope_from_airflow

__all__ = ["NatsMessageSensor"]


class NatsMessageSensor(BaseSensorOperator):
    """Defers to :class:`NatsMessageTrigger` with the task's own scope; returns the event
    (subject and data) when a message arrives. If the gateway refuses the trigger's
    connect, the task fails with :class:`gateway.client.GatewayRefused`'s message."""

    template_fields = ("subject",)

    def __init__(self, *, subject: str, nats_conn_id: str = NatsGatewayHook.default_conn_name,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.subject = subject
        self.nats_conn_id = nats_conn_id

    def execute(self, context: Any) -> None:
        scope = scope_from_airflow(context)
        self.defer(trigger=NatsMessageTrigger(
            subject=render_subject(self.subject, scope), dag_id=scope.dag_id,
            task_id=scope.task_id, run_id=scope.run_id, nats_conn_id=self.nats_conn_id,
            refused_hold_seconds=0),  # the task fails: nothing re-creates this trigger
            method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.log.info("message on %s", event.get("subject"))
        return event

    def poke(self, context: Any) -> bool:  # only deferrable use is supported
        raise NotImplementedError("NatsMessageSensor runs deferrable only")
