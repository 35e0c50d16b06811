"""Producer: when the ETL work is done, announce it as an event in the ETL_EVENTS stream,
through the gateway.

The task connects as itself (its DAG and task ids come from Airflow's context), the
gateway checks its identity and grants it only what examples/policies/airflow-events.yaml
allows: appending to ETL_EVENTS on its own subjects, `events.etl_producer.publish_complete.>`.
The operator waits for the stream's PubAck; a retry of the same run is de-duplicated.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from gateway.airflow.operators import NatsPublishOperator

with DAG(dag_id="etl_producer", schedule=None, start_date=pendulum.datetime(2026, 1, 1),
         catchup=False, tags=["nats-gateway", "example"]) as dag:
    NatsPublishOperator(
        task_id="publish_complete",
        stream="ETL_EVENTS",
        subject="events.{dag_id}.{task_id}.complete",
        payload='{"dataset": "orders", "rows": 42}',
    )

if __name__ == "__main__":
    dag.test()
