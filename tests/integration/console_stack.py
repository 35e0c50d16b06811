"""A running gateway with sample decisions, for the console's browser tests and for
``scripts/console_screenshots.py``.

The stack is the harness's (real OIDC issuer, nats-server, gateway with its API) but
runs on an event loop in a thread of its own: the browser is driven by blocking calls
from the test, which must not stop the gateway that answers them.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client

from gateway.api.auth import token_digest
from gateway.client import oidc_envelope
from tests.integration.harness import Stack, build_stack

T = TypeVar("T")
API_AUDIENCE = "nats-gateway-api"
# (dag, task, run): etl's tasks load and extract are granted by the harness policy
# (publish and subscribe on `airflow.<dag>.<task>.>`); billing and other are denied.
SAMPLE = [("etl", "load", "r1"), ("etl", "load", "r2"), ("etl", "extract", "r1"),
          ("billing", "load", "r1"), ("billing", "load", "r2"), ("other", "load", "r1")]


@dataclass(frozen=True)
class Decided:
    dag: str
    task: str
    run: str
    granted: bool


async def _expected(_: Exception) -> None:
    """A refused CONNECT is the answer being asked for, not an error to print."""


class LiveStack:
    """Start with :meth:`start`, end with :meth:`stop`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.auditor_token = secrets.token_urlsafe(24)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stack: Stack | None = None
        self.decided: list[Decided] = []

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def live(self) -> Stack:
        assert self.stack is not None
        return self.stack

    def start(self) -> LiveStack:
        self._thread.start()
        self.stack = build_stack(self.tmp, xkey=True)
        settings = self.stack.settings().api.model_dump()
        settings.update(
            auditor_token_sha256=[token_digest(self.auditor_token)],
            oidc={"issuer": {"name": "corp", "issuer": self.stack.issuer.issuer,
                             "audiences": [API_AUDIENCE], "algorithms": ["RS256"]},
                  "roles_claim": "/groups", "auditor_values": ["auditors"],
                  "admin_values": ["platform-admins"]})
        self.run(self.stack.start_gateway(api=settings))
        return self

    @property
    def base_url(self) -> str:
        assert self.live.gateway is not None
        return f"http://127.0.0.1:{self.live.gateway.api_port}"

    @property
    def admin_token(self) -> str:
        return self.live.admin_token

    def oidc_token(self, *groups: str) -> str:
        """An access token for the API from the configured issuer, with these groups."""
        return self.live.issuer.mint(subject="alice@example.com", audience=API_AUDIENCE,
                                     claims={"groups": list(groups)})

    def decide(self, dag: str, task: str, run: str, *, name: str | None = None) -> bool:
        """Connect as a worker asking for this scope; True when it was granted."""
        granted = self.run(self._connect(dag, task, run, name))
        self.decided.append(Decided(dag, task, run, granted))
        return granted

    async def _connect(self, dag: str, task: str, run: str, name: str | None) -> bool:
        envelope = oidc_envelope(self.live.token(), dag_id=dag, task_id=task, run_id=run)
        nc = Client()
        try:
            await nc.connect(self.live.nats_url, token=envelope, name=name,
                             allow_reconnect=False, max_reconnect_attempts=0,
                             connect_timeout=5, error_cb=_expected)
        except Exception:  # nats-py raises its own error types for a refused CONNECT
            await nc.close()  # it leaves the socket open otherwise
            return False
        await nc.close()
        return True

    def seed(self) -> LiveStack:
        for dag, task, run in SAMPLE:
            self.decide(dag, task, run)
        return self

    def stop(self) -> None:
        try:
            if self.stack is not None and self.stack.gateway is not None:
                self.run(self.stack.gateway.stop())
        finally:
            if self.stack is not None:
                self.stack.nats_server.close()
                self.stack.issuer.stop()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()
