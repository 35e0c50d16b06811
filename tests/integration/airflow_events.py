"""The example event chain's infrastructure, shared by the Airflow tests and
bench/airflow_events.py: nats-server with JetStream (from `nats-config --jetstream`'s
renderer) plus a static admin user that plays the operator, the gateway with the example
policies, the stream and the watcher's consumer (examples/jetstream/etl_events.py), and
real Airflow processes (api-server, scheduler, dag-processor, triggerer)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from gateway.airflow.messages import lineage_headers
from gateway.client import OidcToken, Scope, connect
from gateway.dev.issuer import DevIssuer
from gateway.dev.natsserver import NatsServer
from gateway.keyfiles import generate_keys
from gateway.natsconf import CalloutServerConfig, render_callout_config
from tests.integration.harness import Stack

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ASSET_URI = "nats://events.etl_producer.publish_complete.complete"
EVENT_SUBJECT = "events.etl_producer.publish_complete.complete"
PRODUCER = ("etl_producer", "publish_complete")


def _example_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ETL_EVENTS = _example_module(EXAMPLES / "jetstream" / "etl_events.py")


def jetstream_config(cfg: CalloutServerConfig, admin_password: str) -> str:
    """`nats-config --jetstream` output plus a static admin in the target account (the
    operator who creates the stream and consumer; test setup, not product config)."""
    config = render_callout_config(cfg)
    enabled = "  APP { jetstream: enabled }\n"
    assert enabled in config
    return config.replace(enabled, "  APP { jetstream: enabled, users: [ { user: admin, "
                                   f'password: "{admin_password}" }} ] }}\n')


@dataclass
class EventStack:
    stack: Stack
    admin_password: str

    @property
    def admin_url(self) -> str:
        return self.stack.nats_url.replace("nats://", f"nats://admin:{self.admin_password}@")

    async def admin(self) -> Client:
        return await nats.connect(self.admin_url)

    async def consumer_state(self) -> tuple[int, int, int]:
        """(pending, ack pending, waiting pull requests) of the watcher's consumer."""
        nc = await self.admin()
        try:
            info = await nc.jetstream().consumer_info(ETL_EVENTS.STREAM,
                                                      ETL_EVENTS.WATCHER_CONSUMER)
            return info.num_pending or 0, info.num_ack_pending or 0, info.num_waiting or 0
        finally:
            await nc.close()


def start_event_stack(tmp: Path) -> EventStack:
    """nats-server with JetStream and the example policies; the gateway is started by
    :func:`start_gateway` (async)."""
    keys = tmp / "keys"
    publics = generate_keys(keys)
    issuer = DevIssuer().start()
    (tmp / "policies").mkdir()
    shutil.copy(EXAMPLES / "policies" / "airflow-events.yaml",
                tmp / "policies" / "airflow-events.yaml")
    password = secrets.token_urlsafe(16)
    cfg = CalloutServerConfig(issuer_account=publics.issuer_account,
                              auth_user_nkey=publics.auth_user, xkey=publics.xkey, port=-1,
                              static_users=("admin",), jetstream_store_dir=str(tmp / "js"))
    server = NatsServer(jetstream_config(cfg, password), workdir=tmp / "nats")
    server.start()
    return EventStack(Stack(tmp, keys, issuer, server, True, secrets.token_urlsafe(24)),
                      password)


async def start_gateway(events: EventStack) -> None:
    oidc = events.stack.settings().oidc.model_dump()
    oidc["issuers"][0]["name"] = "dev"  # the example policies name the dev issuer
    await events.stack.start_gateway(oidc=oidc)
    await ETL_EVENTS.create(events.admin_url)


async def stop_event_stack(events: EventStack) -> None:
    try:
        if events.stack.gateway is not None:
            await events.stack.gateway.stop()
    finally:
        events.stack.nats_server.close()
        events.stack.issuer.stop()


def worker_token(events: EventStack, lifetime: int = 3600) -> str:
    return events.stack.issuer.mint(subject="airflow-worker", audience="nats-gateway",
                                    lifetime=lifetime)


class Producer:
    """Publishes events as the producer task does (NatsPublishOperator's JetStream path:
    the task's scope, Nats-Msg-Id and lineage headers, the PubAck awaited)."""

    def __init__(self, events: EventStack) -> None:
        self.events = events
        self.published: dict[str, float] = {}  # message id -> wall time of the PubAck

    async def publish(self, run_ids: list[str]) -> None:
        token = worker_token(self.events)
        scope = Scope(*PRODUCER, run_ids[0])
        nc = await connect(self.events.stack.nats_url, OidcToken(token), scope=scope,
                           max_reconnect_attempts=3)
        try:
            js = nc.jetstream(timeout=10)
            for run_id in run_ids:
                headers = lineage_headers(Scope(*PRODUCER, run_id))
                payload = json.dumps({"rows": 42, "run": run_id}).encode()
                ack = await js.publish(EVENT_SUBJECT, payload, stream=ETL_EVENTS.STREAM,
                                       headers=headers)
                assert not ack.duplicate
                self.published[headers["Nats-Msg-Id"]] = time.time()
        finally:
            await nc.close()


AIRFLOW_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass
class Airflow:
    """Real Airflow 3 processes over a sqlite metadata database in ``home``."""

    home: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def binary(self) -> str:
        airflow = shutil.which("airflow", path=str(Path(sys.executable).parent))
        assert airflow, "apache-airflow is a dev dependency: pip install -e '.[dev]'"
        return airflow

    def migrate(self) -> None:
        subprocess.run([self.binary, "db", "migrate"], env=self.env, check=True,
                       capture_output=True, timeout=600)

    def start(self, name: str) -> None:
        log = (self.home / f"{name}.log").open("ab")
        args = [self.binary, name] + (["--port", self.env["NGW_API_PORT"]]
                                      if name == "api-server" else [])
        # Its own process group: the api-server and others fork children.
        self.processes[name] = subprocess.Popen(args, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True)
        log.close()

    def stop(self, name: str, timeout: float = 60) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def dead(self) -> list[str]:
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def asset_events(self) -> list[dict[str, Any]]:
        """The asset events of the example asset, each event's ``extra``."""
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True,
                             timeout=30) as db:
            try:
                rows = db.execute(
                    "SELECT e.extra, e.timestamp FROM asset_event e JOIN asset a "
                    "ON a.id = e.asset_id WHERE a.uri IN (?, ?)",
                    # With the provider registered the `nats` scheme keeps the URI as
                    # written; Airflow's generic normalisation appends `/`.
                    (ASSET_URI, ASSET_URI + "/")).fetchall()
            except sqlite3.OperationalError:  # tables not there yet
                return []
        return [{**json.loads(extra or "{}"), "_timestamp": ts} for extra, ts in rows]


def airflow_env(home: Path, dags: Path, nats_url: str, token_file: Path,
                api_port: int) -> dict[str, str]:
    port = nats_url.rsplit(":", 1)[1]
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL":
            f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW_CONN_NATS_GATEWAY_DEFAULT": json.dumps({
            "conn_type": "natsgateway", "host": "127.0.0.1", "port": int(port),
            "extra": {"credential": "token_file", "token_file": str(token_file)}}),
        "NGW_API_PORT": str(api_port),
        "PYTHONPATH": str(ROOT),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_example_airflow(events: EventStack, tmp: Path, *,
                                token_lifetime: int = 3600) -> Airflow:
    """Airflow's api-server, scheduler, dag-processor and triggerer with the example DAGs,
    connecting through ``events``' gateway as the example worker. The consumer DAG is
    unpaused at creation, so its watcher runs once parsed. The caller stops it
    (``stop_all``)."""
    dags = tmp / "dags"
    dags.mkdir()
    for name in ("etl_producer.py", "etl_consumer.py"):
        shutil.copy(EXAMPLES / "dags" / name, dags / name)
    token_file = tmp / "token"
    token_file.write_text(worker_token(events, lifetime=token_lifetime))
    home = tmp / "airflow"
    home.mkdir()
    airflow = Airflow(home, airflow_env(home, dags, events.stack.nats_url, token_file,
                                        _free_port()))
    await asyncio.to_thread(airflow.migrate)
    airflow.env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
        airflow.start(name)
    return airflow


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float,
                     airflow: Airflow | None = None) -> None:
    """Poll ``check`` until true; fail after ``timeout`` s, or at once if an Airflow
    process died (with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        if airflow is not None and (dead := airflow.dead()):
            raise AssertionError(f"airflow {dead[0]} exited while waiting for {what}:\n"
                                 + airflow.log_tail(dead[0]))
        await asyncio.sleep(0.2)
    tails = "" if airflow is None else "\n".join(
        f"--- {name}\n{airflow.log_tail(name, 1500)}" for name in AIRFLOW_PROCESSES)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
