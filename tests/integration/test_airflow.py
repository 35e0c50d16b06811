"""Real Apache Airflow 3 against the real nats-server (JetStream) and the gateway.

The example DAGs (examples/dags) run with `dag.test()` in their own processes, with a
connection whose credential is a token file the dev issuer minted. The consumer's
AssetWatcher trigger is serialized and re-created from its classpath, as the triggerer
does, and run on an event loop until it fires (its standalone `run()`; the triggerer's
ack mode is exercised with real processes in test_airflow_processes.py).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.client import GatewayRefused
from tests.integration.airflow_events import (
    EVENT_SUBJECT,
    PRODUCER,
    EventStack,
    Producer,
    start_event_stack,
    start_gateway,
    stop_event_stack,
    worker_token,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _airflow_env(home: Path, dags: Path, stack: Stack, token_file: Path,
                 **extra: Any) -> dict[str, str]:
    port = stack.nats_url.rsplit(":", 1)[1]
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_NATS_GATEWAY_DEFAULT": json.dumps({
            "conn_type": "natsgateway", "host": "127.0.0.1", "port": int(port),
            "extra": {"credential": "token_file", "token_file": str(token_file), **extra}}),
        "PYTHONPATH": str(ROOT),
    }


def _migrate(env: dict[str, str]) -> None:
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent))
    assert airflow, "apache-airflow is a dev dependency: pip install -e '.[dev]'"
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True,
                   timeout=300)


DAG_TEST = ("import runpy, sys; ns = runpy.run_path(sys.argv[1]); "
            "run = ns['dag'].test(); print('DAG_STATE', run.state)")


def _dag_test_command(dag_file: Path) -> list[str]:
    return [sys.executable, "-c", DAG_TEST, str(dag_file)]


@pytest.fixture
async def event_stack(tmp_path: Path) -> AsyncIterator[EventStack]:
    events = start_event_stack(tmp_path / "stack")
    try:
        await start_gateway(events)
        yield events
    finally:
        await stop_event_stack(events)


@pytest.fixture
async def airflow_stack(event_stack: EventStack, tmp_path: Path
                        ) -> AsyncIterator[tuple[Stack, Path]]:
    token_file = tmp_path / "token"
    token_file.write_text(worker_token(event_stack))
    yield event_stack.stack, token_file


def _consumer_trigger(**overrides: Any) -> Any:
    """The AssetWatcher's trigger, round-tripped through serialize() as the triggerer does."""
    spec = importlib.util.spec_from_file_location("etl_consumer",
                                                  EXAMPLES / "dags" / "etl_consumer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [watcher] = module.etl_complete.watchers
    classpath, kwargs = watcher.trigger.serialize()
    module_name, _, class_name = classpath.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**{**kwargs, **overrides})


def _use_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        if name.startswith(("AIRFLOW", "PYTHONPATH")):
            monkeypatch.setenv(name, value)


async def test_producer_publishes_and_the_consumer_trigger_fires(
        airflow_stack: tuple[Stack, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer runs first: its event waits in the watcher's durable consumer."""
    stack, token_file = airflow_stack
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLES / "dags" / "etl_producer.py", dags / "etl_producer.py")
    env = _airflow_env(tmp_path / "airflow", dags, stack, token_file)
    await asyncio.to_thread(_migrate, env)
    _use_env(env, monkeypatch)

    text = await _dag_test(dags / "etl_producer.py", env)
    assert "DAG_STATE success" in text, text[-3000:]

    events = _consumer_trigger().run()
    event = await asyncio.wait_for(events.__anext__(), timeout=60)
    payload = event.payload
    assert payload["subject"] == EVENT_SUBJECT
    assert payload["data"] == {"dataset": "orders", "rows": 42}  # parsed, not a string
    producer = payload["producer"]
    assert (producer["dag_id"], producer["task_id"]) == PRODUCER
    assert producer["run_id"].startswith("manual__") and producer["map_index"] == "-1"
    assert payload["message_id"].startswith("etl_producer.publish_complete.manual__")
    assert (payload["stream_seq"], payload["delivered"]) == (1, 1)
    await events.aclose()

    async with stack.api() as api:
        grants = (await api.get("/v1/grants", params={"decision": "grant"})).json()["items"]
    scopes = {(g["dag_id"], g["task_id"]) for g in grants}
    assert PRODUCER in scopes
    assert ("etl_consumer", "etl_complete_watcher") in scopes


async def test_an_event_is_acked_only_after_airflow_took_it(
        event_stack: EventStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trigger closed before its event was taken leaves the message to the next one."""
    token_file = tmp_path / "token"
    token_file.write_text(worker_token(event_stack))
    _use_env(_airflow_env(tmp_path, tmp_path, event_stack.stack, token_file), monkeypatch)
    await Producer(event_stack).publish(["first", "second"])

    events = _consumer_trigger().run()
    first = await asyncio.wait_for(events.__anext__(), timeout=60)
    await events.aclose()  # taken by nobody: nak'ed, not acked
    events = _consumer_trigger().run()
    again = await asyncio.wait_for(events.__anext__(), timeout=60)
    second = await asyncio.wait_for(events.__anext__(), timeout=60)
    await events.aclose()
    assert again.payload["message_id"] == first.payload["message_id"]
    assert again.payload["delivered"] == 2
    assert second.payload["producer"]["run_id"] == "second"
    assert (await event_stack.consumer_state())[:2] == (0, 1)  # `second` was never taken


async def test_a_retried_task_instance_appends_its_event_once(
        event_stack: EventStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.airflow.operators import NatsPublishOperator
    from gateway.envelope import Scope

    token_file = tmp_path / "token"
    token_file.write_text(worker_token(event_stack))
    _use_env(_airflow_env(tmp_path, tmp_path, event_stack.stack, token_file), monkeypatch)
    operator = NatsPublishOperator(task_id="publish_complete", stream="ETL_EVENTS",
                                   subject=EVENT_SUBJECT, payload="{}")
    scope = Scope(*PRODUCER, "manual__1")
    first = await operator._append(scope, EVENT_SUBJECT, "ETL_EVENTS", -1)
    retry = await operator._append(scope, EVENT_SUBJECT, "ETL_EVENTS", -1)
    mapped = await operator._append(scope, EVENT_SUBJECT, "ETL_EVENTS", 3)
    assert retry == first  # the PubAck of the duplicate names the original's sequence
    assert mapped == first + 1
    nc = await event_stack.admin()
    try:
        info = await nc.jetstream().stream_info("ETL_EVENTS")
    finally:
        await nc.close()
    assert info.state.messages == 2


async def test_a_publish_outside_the_tasks_subjects_fails_the_task(
        airflow_stack: tuple[Stack, Path], tmp_path: Path) -> None:
    stack, token_file = airflow_stack
    dags = tmp_path / "dags"
    dags.mkdir()
    escape = (EXAMPLES / "dags" / "etl_producer.py").read_text().replace(
        '"events.{dag_id}.{task_id}.complete"', '"events.billing.load.complete"')
    (dags / "etl_producer.py").write_text(escape)
    env = _airflow_env(tmp_path / "airflow", dags, stack, token_file)
    await asyncio.to_thread(_migrate, env)
    producer = await asyncio.create_subprocess_exec(
        *_dag_test_command(dags / "etl_producer.py"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(producer.communicate(), timeout=240)
    text = output.decode(errors="replace")
    assert "DAG_STATE failed" in text, text[-3000:]
    assert "publish to `events.billing.load.complete` in stream `ETL_EVENTS` got no " \
           "puback" in text
    async with stack.api() as api:
        grants = (await api.get("/v1/grants", params={"dag": "etl_producer"})).json()["items"]
    assert grants and grants[0]["decision"] == "grant"  # granted, yet held to its subjects


SENSOR_DAG = '''
import pendulum
from airflow.sdk import DAG
from gateway.airflow.sensors import NatsMessageSensor

with DAG(dag_id="etl_waiter", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    NatsMessageSensor(task_id="wait_for_complete", stream="ETL_EVENTS")
'''
SENSOR_POLICY = """version: 1
policies:
  - id: etl-waiter
    match: {oidc: {issuer: dev, subject: airflow-worker}}
    scopes: [{dag: etl_waiter, tasks: [wait_for_complete]}]
    permissions:
      jetstream:
        consume: [{stream: ETL_EVENTS, filter: "events.etl_producer.>"}]
"""


async def test_the_deferrable_sensor_reads_an_event_sent_before_it_ran(
        event_stack: EventStack, tmp_path: Path) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    stack = event_stack.stack
    token_file = tmp_path / "token"
    token_file.write_text(worker_token(event_stack))
    (stack.tmp / "policies" / "waiter.yaml").write_text(SENSOR_POLICY)
    assert stack.gateway is not None and stack.gateway.policies.reload("test")
    admin = await event_stack.admin()
    try:
        await admin.jetstream().add_consumer("ETL_EVENTS", ConsumerConfig(
            durable_name="etl_waiter~wait_for_complete",
            filter_subject="events.etl_producer.>", ack_policy=AckPolicy.EXPLICIT))
    finally:
        await admin.close()
    await Producer(event_stack).publish(["before"])  # kept until the sensor reads it
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "etl_waiter.py").write_text(SENSOR_DAG)
    env = _airflow_env(tmp_path / "airflow", dags, stack, token_file)
    await asyncio.to_thread(_migrate, env)
    text = await _dag_test(dags / "etl_waiter.py", env)
    assert "DAG_STATE success" in text, text[-3000:]


async def _dag_test(dag_file: Path, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *_dag_test_command(dag_file), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    return output.decode(errors="replace")


async def _denies(stack: Stack, dag: str, task: str) -> int:
    async with stack.api() as api:  # the very query the refusal message names
        page = (await api.get("/v1/grants", params={"decision": "deny", "dag": dag,
                                                    "task": task})).json()
    return len(page["items"])


def _wrong_audience(stack: Stack, token_file: Path) -> None:
    token_file.write_text(stack.issuer.mint(subject="airflow-worker",
                                            audience="another-service", lifetime=3600))


async def test_a_refused_task_and_a_refused_sensor_fail_with_the_gateways_refusal(
        airflow_stack: tuple[Stack, Path], tmp_path: Path) -> None:
    """Before: the operator failed with `NoServersError: nats: no servers available` and
    the sensor's trigger retried every 0.5 s for as long as it ran."""
    stack, token_file = airflow_stack
    _wrong_audience(stack, token_file)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLES / "dags" / "etl_producer.py", dags / "etl_producer.py")
    (dags / "etl_waiter.py").write_text(SENSOR_DAG)
    env = _airflow_env(tmp_path / "airflow", dags, stack, token_file)
    await asyncio.to_thread(_migrate, env)

    for dag, task in [("etl_producer", "publish_complete"),
                      ("etl_waiter", "wait_for_complete")]:
        text = await _dag_test(dags / f"{dag}.py", env)
        assert "DAG_STATE failed" in text, text[-3000:]
        assert (f"GatewayRefused: the gateway refused to connect this worker as dag `{dag}` "
                f"task `{task}` run `manual__") in text, text[-3000:]
        assert "3 times in a row" in text
        assert f"GET /v1/grants?decision=deny&dag={dag}&task={task}" in text
        assert "NoServersError" not in text
        assert await _denies(stack, dag, task) == 3


# nats-py 2.16 drops the StreamWriter of an abandoned reconnect attempt after closing its
# transport: Python warns when the writer is collected, but the socket is already closing.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_refused_watcher_trigger_fails_instead_of_retrying(
        airflow_stack: tuple[Stack, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The AssetWatcher's trigger raises the refusal (the triggerer logs it and ends the
    trigger) both when its first connect is refused and when its rights are revoked
    while it waits: then the client gives up after `give_up_after` refusals."""
    stack, token_file = airflow_stack
    env = _airflow_env(tmp_path / "airflow", tmp_path, stack, token_file,
                       refusals={"give_up_after": 3, "backoff_cap_seconds": 0.5})
    for name, value in env.items():
        if name.startswith(("AIRFLOW", "PYTHONPATH")):
            monkeypatch.setenv(name, value)
    good_token = token_file.read_text()

    _wrong_audience(stack, token_file)
    with pytest.raises(GatewayRefused) as first:
        await asyncio.wait_for(_consumer_trigger(refused_hold_seconds=0).run().__anext__(),
                               timeout=60)
    assert not first.value.reconnecting
    assert await _denies(stack, "etl_consumer", "etl_complete_watcher") == 3

    policy = stack.tmp / "policies" / "airflow-events.yaml"
    allowed = policy.read_text().replace("ttl_seconds: 3600", "ttl_seconds: 2")
    policy.write_text(allowed)
    assert stack.gateway is not None and stack.gateway.policies.reload("test")
    token_file.write_text(good_token)
    events = _consumer_trigger(refused_hold_seconds=0).run()
    waiting = asyncio.create_task(events.__anext__())
    for _ in range(100):  # until the watcher holds a grant
        if await _grants(stack, "etl_consumer", "etl_complete_watcher"):
            break
        await asyncio.sleep(0.1)
    policy.write_text(allowed.replace("tasks: [etl_complete_watcher]", "tasks: [other]"))
    assert stack.gateway.policies.reload("test")
    with pytest.raises(GatewayRefused) as revoked:
        await asyncio.wait_for(waiting, timeout=120)
    assert revoked.value.reconnecting and revoked.value.refusals == 3
    assert await _denies(stack, "etl_consumer", "etl_complete_watcher") == 3 + 3


async def _grants(stack: Stack, dag: str, task: str) -> int:
    async with stack.api() as api:
        page = (await api.get("/v1/grants", params={"decision": "grant", "dag": dag,
                                                    "task": task})).json()
    return len(page["items"])
