"""Publish one task event into a JetStream stream (or one core NATS message, or make one
request) through the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException
from nats.errors import Error as NatsError

from gateway.airflow.hook import NatsGatewayHook
from gateway.airflow.messages import lineage_headers
from gateway.client import render_subject, scope_from_airflow

__all__ = ["NatsPublishOperator"]


class NatsPublishOperator(BaseOperator):
    """Publish ``payload`` on ``subject``, as the running task.

    ``subject`` may use ``{dag_id}``, ``{task_id}`` and ``{run_id}`` as whole tokens; they
    are encoded exactly as the gateway's policies encode them.

    With ``stream`` the message goes into that JetStream stream and the operator waits
    for the PubAck (failing the task when none comes within ``timeout``). It carries
    ``Nats-Msg-Id`` = dag, task, run and map index (:mod:`gateway.airflow.messages`): a
    retried task's second publish within the stream's ``duplicate_window`` is dropped by
    the stream (the PubAck says ``duplicate``), so one task instance is one event. The
    producer's dag, task, run and map index travel as headers; consumers' triggers put
    them into the asset event's ``extra``. The PubAck's stream sequence is returned (and
    pushed to XCom).

    Without ``stream``: a core NATS publish, or with ``request=True`` a request whose
    reply's payload is returned. A publish the task's grant does not allow fails the
    task: nats-server reports the violation and the operator raises.
    """

    template_fields: Sequence[str] = ("subject", "payload")

    def __init__(self, *, subject: str, payload: str = "", stream: str | None = None,
                 request: bool = False, timeout: float = 10.0,
                 nats_conn_id: str = NatsGatewayHook.default_conn_name,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if stream is not None and request:
            raise ValueError("`request` is for core NATS: a stream publish already waits "
                             "for its PubAck")
        self.subject = subject
        self.payload = payload
        self.stream = stream
        self.request = request
        self.timeout = timeout
        self.nats_conn_id = nats_conn_id

    def execute(self, context: Any) -> str | int | None:
        scope = scope_from_airflow(context)
        subject = render_subject(self.subject, scope)
        if self.stream is not None:
            ti = context.get("ti") or context.get("task_instance")
            map_index = getattr(ti, "map_index", -1)
            return asyncio.run(self._append(scope, subject, self.stream, map_index))
        return asyncio.run(self._send(scope, subject))

    async def _append(self, scope: Any, subject: str, stream: str, map_index: int) -> int:
        headers = lineage_headers(scope, map_index if isinstance(map_index, int) else -1)
        nc = await NatsGatewayHook(self.nats_conn_id).connect(scope, max_reconnect_attempts=3)
        try:
            # stream= always: without it nats-py asks $JS.API.STREAM.NAMES (not granted).
            ack = await nc.jetstream(timeout=self.timeout).publish(
                subject, self.payload.encode(), stream=stream, headers=headers)
        except (NatsError, TimeoutError) as exc:
            raise AirflowException(f"publish to `{subject}` in stream `{stream}` got no "
                                   f"puback: {type(exc).__name__} {exc}") from exc
        finally:
            await nc.close()
        if ack.duplicate:
            self.log.info("event %s was already in %s (a retry): not appended again",
                          headers["Nats-Msg-Id"], stream)
        else:
            self.log.info("appended event %s to %s at sequence %d",
                          headers["Nats-Msg-Id"], stream, ack.seq)
        return int(ack.seq)

    async def _send(self, scope: Any, subject: str) -> str | None:
        violations: list[str] = []

        async def on_error(exc: Exception) -> None:
            violations.append(str(exc))

        nc = await NatsGatewayHook(self.nats_conn_id).connect(
            scope, error_cb=on_error, max_reconnect_attempts=3)
        try:
            if self.request:
                reply = await nc.request(subject, self.payload.encode(), timeout=self.timeout)
                return reply.data.decode(errors="replace")
            await nc.publish(subject, self.payload.encode())
            await nc.flush(timeout=int(self.timeout))  # the server answers a violation first
            await asyncio.sleep(0.05)
            if violations:
                raise AirflowException(f"publish to `{subject}` refused: {violations[0]}")
            self.log.info("published %d bytes on %s", len(self.payload), subject)
            return None
        finally:
            await nc.close()
