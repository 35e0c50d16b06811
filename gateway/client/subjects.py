"""Subjects of a task's own space, rendered with the gateway's injective id encoding."""

from __future__ import annotations

from gateway.policy.encode import encode_token

__all__ = ["task_subject"]


def task_subject(prefix: str, dag_id: str, task_id: str, *suffix: str) -> str:
    """``task_subject("airflow", "etl", "grp.load", "done")`` -> ``airflow.etl.grp%2Eload.done``."""
    return ".".join([prefix, encode_token(dag_id), encode_token(task_id), *suffix])
