"""Consumer: a DAG run starts when the producer's message arrives; no polling.

An AssetWatcher runs NatsMessageTrigger in the triggerer: it connects through the
gateway as `etl_consumer`/`etl_complete_watcher` (allowed only to listen), and each
message on `pipeline.data.etl.complete` is an asset event that schedules this DAG.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from gateway.airflow.triggers import NatsMessageTrigger

etl_complete = Asset(
    "nats://pipeline.data.etl.complete",
    watchers=[AssetWatcher(
        name="etl_complete_watcher",
        trigger=NatsMessageTrigger(subject="pipeline.data.etl.complete",
                                   dag_id="etl_consumer", task_id="etl_complete_watcher"),
    )],
)

with DAG(dag_id="etl_consumer", schedule=[etl_complete],
         start_date=pendulum.datetime(2026, 1, 1), catchup=False,
         tags=["nats-gateway", "example"]) as dag:

    @task
    def load_report(**context: object) -> None:
        events = context.get("triggering_asset_events") or {}
        print(f"ETL complete: {events}")

    load_report()
