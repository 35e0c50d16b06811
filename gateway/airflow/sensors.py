"""A deferrable sensor that waits for one task event on a JetStream stream, read through
the task's own durable consumer (``<dag>~<task>``), through the gateway."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator

from gateway.airflow.hook import NatsGatewayHook
from gateway.airflow.triggers import NatsMessageTrigger
from gateway.client import scope_from_airflow

__all__ = ["NatsMessageSensor"]


class NatsMessageSensor(BaseSensorOperator):
    """Defers to :class:`NatsMessageTrigger` with the task's own scope; returns the event
    (``data``, ``producer``, ``message_id``...) when a message is read. A message that
    arrived before the sensor ran is waiting in the consumer. The message is acked once
    Airflow stored the event (at-least-once). If the gateway refuses the trigger's
    connect, the task fails with :class:`gateway.client.GatewayRefused`'s message."""

    template_fields = ("stream", "consumer", "apply_function")

    def __init__(self, *, stream: str, consumer: str | None = None,
                 apply_function: str | None = None,
                 nats_conn_id: str = NatsGatewayHook.default_conn_name,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream = stream
        self.consumer = consumer
        self.apply_function = apply_function
        self.nats_conn_id = nats_conn_id

    def execute(self, context: Any) -> None:
        scope = scope_from_airflow(context)
        self.defer(trigger=NatsMessageTrigger(
            stream=self.stream, dag_id=scope.dag_id, task_id=scope.task_id,
            run_id=scope.run_id, consumer=self.consumer, apply_function=self.apply_function,
            max_events=1, nats_conn_id=self.nats_conn_id,
            refused_hold_seconds=0),  # the task fails: nothing re-creates this trigger
            method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.log.info("message %s on %s", event.get("message_id"), event.get("subject"))
        return event

    def poke(self, context: Any) -> bool:  # only deferrable use is supported
        raise NotImplementedError("NatsMessageSensor runs deferrable only")
