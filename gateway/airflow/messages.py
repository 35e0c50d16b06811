"""What a task event carries: its JetStream message id, the producer's lineage headers,
and the trigger event a consumer builds from it. Pure: no I/O, no Airflow imports.

The message id is the JetStream de-duplication key (``Nats-Msg-Id``): the stream drops a
second message with the same id within its ``duplicate_window``, so a retried task (the
same dag, task, run and map index, another try) does not announce the same event twice.
The try number is deliberately left out of it. Ids are encoded with the gateway's
injective token encoding and joined with ``.``, so two scopes never share an id.

The lineage headers are what the producer says about itself. The gateway holds each task
to its own subjects (``events.{dag_id}.{task_id}.>``), so the **subject** is the proven
origin; the headers are the producer's claim, checked against nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.envelope import Scope
from gateway.policy.encode import encode_token

__all__ = ["LINEAGE_HEADERS", "MSG_ID_HEADER", "event_payload", "lineage_headers",
           "message_id"]

MSG_ID_HEADER = "Nats-Msg-Id"
# header name -> key in the event's `producer` (the asset event's extra)
LINEAGE_HEADERS = {"Airflow-Dag-Id": "dag_id", "Airflow-Task-Id": "task_id",
                   "Airflow-Run-Id": "run_id", "Airflow-Map-Index": "map_index"}


def message_id(scope: Scope, map_index: int = -1) -> str:
    """``etl.load.manual__2026-01-01T00%3A00%3A00.-1``: the same for every try of one task
    instance, different for any other."""
    if scope.run_id is None:
        raise ValueError("a message id needs the task's run id")
    return ".".join([encode_token(scope.dag_id), encode_token(scope.task_id),
                     encode_token(scope.run_id), str(map_index)])


def lineage_headers(scope: Scope, map_index: int = -1) -> dict[str, str]:
    """The JetStream message id and the producer's ids, as NATS headers."""
    values = {"Airflow-Dag-Id": scope.dag_id, "Airflow-Task-Id": scope.task_id,
              "Airflow-Run-Id": scope.run_id or "", "Airflow-Map-Index": str(map_index)}
    for name, value in values.items():
        if "\r" in value or "\n" in value:  # would end the header block early
            raise ValueError(f"`{name}` holds a line break")
    return {MSG_ID_HEADER: message_id(scope, map_index), **values}


def _parse(data: bytes) -> Any:
    """JSON when the payload is JSON, else the text (invalid UTF-8 replaced)."""
    text = data.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def event_payload(*, subject: str, data: bytes, headers: Mapping[str, str] | None,
                  stream: str, stream_seq: int, delivered: int) -> dict[str, Any]:
    """The trigger event's payload (Airflow stores it as the asset event's
    ``extra["payload"]``): the parsed data, the producer's lineage, and the message id
    and stream sequence a consumer uses to be idempotent (delivery is at-least-once:
    ``delivered`` > 1 means the message was handed out before)."""
    headers = headers or {}
    producer = {key: headers[name] for name, key in LINEAGE_HEADERS.items() if name in headers}
    return {"subject": subject, "data": _parse(data), "producer": producer,
            "message_id": headers.get(MSG_ID_HEADER), "stream": stream,
            "stream_seq": stream_seq, "delivered": delivered}
