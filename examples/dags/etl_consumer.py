"""Consumer: a DAG run starts when the producer's event arrives; no polling, no loss.

An AssetWatcher runs NatsMessageTrigger in the triggerer: it connects through the
gateway as `etl_consumer`/`etl_complete_watcher` (allowed only to read its own durable
consumer `etl_consumer~etl_complete_watcher` on ETL_EVENTS), and each event is one asset
event. Events published while the triggerer is down wait in the consumer. Delivery is
at-least-once: `message_id` in the asset event's extra identifies a repeat.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from gateway.airflow.triggers import NatsMessageTrigger

etl_complete = Asset(
    "nats://events.etl_producer.publish_complete.complete",
    watchers=[AssetWatcher(
        name="etl_complete_watcher",
        trigger=NatsMessageTrigger(stream="ETL_EVENTS", dag_id="etl_consumer",
                                   task_id="etl_complete_watcher"),
    )],
)

with DAG(dag_id="etl_consumer", schedule=[etl_complete],
         start_date=pendulum.datetime(2026, 1, 1), catchup=False,
         tags=["nats-gateway", "example"]) as dag:

    @task
    def load_report(**context: object) -> None:
        # Several events can start one run (Airflow coalesces queued asset events).
        events = context.get("triggering_asset_events") or {}
        for asset_events in events.values():  # type: ignore[attr-defined]
            for event in asset_events:
                payload = event.extra.get("payload", {})
                print(f"event {payload.get('message_id')}: {payload.get('data')} "
                      f"from {payload.get('producer')}")

    load_report()
