"""The requested scope from Airflow's task context.

Inside a running task Airflow exports ``AIRFLOW_CTX_DAG_ID``, ``AIRFLOW_CTX_TASK_ID`` and
``AIRFLOW_CTX_DAG_RUN_ID``, and passes a context dict whose ``ti`` (task instance) holds
the same ids. The scope is a **request**: the gateway's policy decides whether this
identity may act for it; it is never proof of anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from gateway.envelope import Scope, parse_scope

__all__ = ["scope_from_airflow"]


def scope_from_airflow(context: Mapping[str, Any] | None = None,
                       environ: Mapping[str, str] | None = None) -> Scope:
    """From the context dict when given, else from the ``AIRFLOW_CTX_*`` environment."""
    if context is not None:
        ti = context.get("ti") or context.get("task_instance")
        if ti is None:
            raise ValueError("the Airflow context has no `ti` (task instance)")
        raw = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id}
    else:
        env = os.environ if environ is None else environ
        raw = {"dag_id": env.get("AIRFLOW_CTX_DAG_ID"), "task_id": env.get("AIRFLOW_CTX_TASK_ID"),
               "run_id": env.get("AIRFLOW_CTX_DAG_RUN_ID")}
        if raw["dag_id"] is None or raw["task_id"] is None:
            raise ValueError("not inside an Airflow task: AIRFLOW_CTX_DAG_ID and "
                             "AIRFLOW_CTX_TASK_ID are not set; pass the scope explicitly")
    return parse_scope({k: v for k, v in raw.items() if v is not None})
