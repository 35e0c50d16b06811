"""The example event chain with real Airflow 3 processes (api-server, scheduler,
dag-processor, triggerer), the example DAGs and policy, the gateway and nats-server with
JetStream: every event of a burst becomes exactly one asset event, and events published
while the triggerer is stopped become asset events after it restarts.

Before (core NATS, a trigger that returned after each message): 5 events 0.5 s apart
gave 2 asset events, and everything published while the triggerer was down was lost.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.airflow_events import (
    Airflow,
    EventStack,
    Producer,
    eventually,
    start_event_stack,
    start_example_airflow,
    start_gateway,
    stop_event_stack,
)

pytestmark = pytest.mark.integration
BURST = 20
WHILE_STOPPED = 5



@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[tuple[EventStack, Airflow]]:
    events = start_event_stack(tmp_path / "stack")
    airflow: Airflow | None = None
    try:
        await start_gateway(events)
        airflow = await start_example_airflow(events, tmp_path)
        yield events, airflow
    finally:
        if airflow is not None:
            await asyncio.to_thread(airflow.stop_all)
        await stop_event_stack(events)


async def _watcher_reading(events: EventStack) -> bool:
    return (await events.consumer_state())[2] > 0  # a pull request is waiting


def _ids(airflow: Airflow) -> Counter[str]:
    return Counter(e["payload"]["message_id"] for e in airflow.asset_events())


async def test_a_burst_and_events_sent_while_the_triggerer_is_down_each_become_one_asset_event(
        deployment: tuple[EventStack, Airflow]) -> None:
    events, airflow = deployment
    producer = Producer(events)
    await eventually(lambda: _watcher_reading(events), "the watcher to read its consumer",
                     timeout=300, airflow=airflow)

    await producer.publish([f"burst__{i}" for i in range(BURST)])

    async def all_burst_stored() -> bool:
        return len(airflow.asset_events()) >= BURST and (
            await events.consumer_state())[:2] == (0, 0)  # delivered and acked

    await eventually(all_burst_stored, f"{BURST} asset events", timeout=180, airflow=airflow)
    assert _ids(airflow) == Counter(set(producer.published))  # each exactly once
    [event] = [e for e in airflow.asset_events()
               if e["payload"]["message_id"] == next(iter(producer.published))]
    assert event["payload"]["data"] == {"rows": 42, "run": "burst__0"}  # parsed JSON
    assert event["payload"]["producer"] == {"dag_id": "etl_producer",
                                            "task_id": "publish_complete",
                                            "run_id": "burst__0", "map_index": "-1"}

    await asyncio.to_thread(airflow.stop, "triggerer")
    await producer.publish([f"down__{i}" for i in range(WHILE_STOPPED)])
    assert (await events.consumer_state())[0] == WHILE_STOPPED  # kept by the consumer
    airflow.start("triggerer")

    async def all_stored() -> bool:
        return len(airflow.asset_events()) >= BURST + WHILE_STOPPED and (
            await events.consumer_state())[:2] == (0, 0)

    await eventually(all_stored, "the events sent while the triggerer was down",
                     timeout=300, airflow=airflow)
    assert _ids(airflow) == Counter(set(producer.published))

    async with events.stack.api() as api:
        grants = (await api.get("/v1/grants", params={"decision": "grant"})).json()["items"]
    scopes = {(g["dag_id"], g["task_id"]) for g in grants}
    assert {("etl_producer", "publish_complete"),
            ("etl_consumer", "etl_complete_watcher")} <= scopes
