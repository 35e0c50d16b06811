"""Subjects of a task's own space, rendered with the gateway's injective id encoding."""

from __future__ import annotations

from gateway.envelope import Scope
from gateway.policy.encode import encode_token, render_template

__all__ = ["render_subject", "task_subject"]


def task_subject(prefix: str, dag_id: str, task_id: str, *suffix: str) -> str:
    """``task_subject("airflow", "etl", "grp.load", "done")`` -> ``airflow.etl.grp%2Eload.done``."""
    return ".".join([prefix, encode_token(dag_id), encode_token(task_id), *suffix])


def render_subject(template: str, scope: Scope) -> str:
    """A subject from a template with ``{dag_id}``, ``{task_id}``, ``{run_id}`` as whole
    tokens, rendered exactly as policies render them (the same encoding)."""
    from gateway.policy.model import check_subject_template

    return render_template(check_subject_template(template), scope)
