"""Publish one message (or make one request) through the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from gateway.airflow.hook import NatsGatewayHook
from gateway.client import render_subject, scope_from_airflow

__all__ = ["NatsPublishOperator"]


class NatsPublishOperator(BaseOperator):
    """Publish ``payload`` on ``subject``, as the running task.

    ``subject`` may use ``{dag_id}``, ``{task_id}`` and ``{run_id}`` as whole tokens; they
    are encoded exactly as the gateway's policies encode them. With ``request=True`` the
    reply's payload is returned (and pushed to XCom). A publish the task's grant does not
    allow fails the task: nats-server reports the violation and the operator raises.
    """

    template_fields: Sequence[str] = ("subject", "payload")

    def __init__(self, *, subject: str, payload: str = "", request: bool = False,
                 timeout: float = 10.0, nats_conn_id: str = NatsGatewayHook.default_conn_name,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.subject = subject
        self.payload = payload
        self.request = request
        self.timeout = timeout
        self.nats_conn_id = nats_conn_id

    def execute(self, context: Any) -> str | None:
        scope = scope_from_airflow(context)
        subject = render_subject(self.subject, scope)
        return asyncio.run(self._send(scope, subject))

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
