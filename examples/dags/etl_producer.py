"""Producer: when the ETL work is done, announce it on NATS, through the gateway.

The task connects as itself (its DAG and task ids come from Airflow's context), the
gateway checks its identity and grants it only what examples/policies/airflow-events.yaml
allows: publishing `pipeline.data.etl.complete` and its own task space.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from gateway.airflow.operators import NatsPublishOperator

with DAG(dag_id="etl_producer", schedule=None, start_date=pendulum.datetime(2026, 1, 1),
         catchup=False, tags=["nats-gateway", "example"]) as dag:
    NatsPublishOperator(
        task_id="publish_complete",
        subject="pipeline.data.etl.complete",
        payload='{"dataset": "orders", "rows": 42, "run_id": "{{ run_id }}"}',
    )

if __name__ == "__main__":
    dag.test()
