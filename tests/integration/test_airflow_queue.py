"""common-messaging's MessageQueueTrigger with a `nats://` queue, against the real
nats-server (JetStream) and the gateway.

The trigger is built as a DAG file builds it, serialized (MessageQueueTrigger
serializes as the trigger it resolved to, which is what Airflow stores) and re-created
from its classpath as the triggerer does, then run on an event loop until it fires.
Our queue provider is registered with common-messaging as in
tests/unit/test_airflow_events.py (the shared venv's entry point may predate it).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tests.integration.airflow_events import (
    ASSET_URI,
    ETL_EVENTS,
    EVENT_SUBJECT,
    PRODUCER,
    EventStack,
    Producer,
    start_event_stack,
    start_gateway,
    stop_event_stack,
    worker_token,
)

pytestmark = pytest.mark.integration
MSG_QUEUE = "airflow.providers.common.messaging.triggers.msg_queue"


@pytest.fixture
async def event_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> AsyncIterator[EventStack]:
    events = start_event_stack(tmp_path / "stack")
    try:
        await start_gateway(events)
        token_file = tmp_path / "token"
        token_file.write_text(worker_token(events))
        port = int(events.stack.nats_url.rsplit(":", 1)[1])
        monkeypatch.setenv("AIRFLOW_CONN_NATS_GATEWAY_DEFAULT", json.dumps({
            "conn_type": "natsgateway", "host": "127.0.0.1", "port": port,
            "extra": {"credential": "token_file", "token_file": str(token_file)}}))
        yield events
    finally:
        await stop_event_stack(events)


@pytest.fixture
def queue_providers() -> Iterator[None]:
    from airflow.providers.common.messaging.triggers import msg_queue

    from gateway.airflow.provider import get_provider_info

    providers = [msg_queue.create_class_by_name(name)()
                 for name in get_provider_info()["queues"]]
    with mock.patch(f"{MSG_QUEUE}.MESSAGE_QUEUE_PROVIDERS", providers):
        yield


def _as_the_triggerer_runs_it(trigger: Any) -> Any:
    classpath, kwargs = trigger.serialize()
    assert classpath == "gateway.airflow.triggers.NatsMessageTrigger"
    module_name, _, class_name = classpath.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)


@pytest.mark.usefixtures("queue_providers")
async def test_a_nats_queue_trigger_fires_once_for_one_message(
        event_stack: EventStack) -> None:
    from airflow.exceptions import AirflowProviderDeprecationWarning
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    with pytest.warns(AirflowProviderDeprecationWarning):  # `queue=`, in 2.1
        built = MessageQueueTrigger(queue=ASSET_URI, stream=ETL_EVENTS.STREAM,
                                    dag_id="etl_consumer", task_id="etl_complete_watcher",
                                    max_events=1)
    await Producer(event_stack).publish(["only"])

    events = _as_the_triggerer_runs_it(built).run()
    event = await asyncio.wait_for(events.__anext__(), timeout=60)
    assert event.payload["subject"] == EVENT_SUBJECT
    assert event.payload["data"] == {"rows": 42, "run": "only"}
    assert (event.payload["producer"]["dag_id"], event.payload["producer"]["task_id"]) \
        == PRODUCER
    # Taking the event acks it; with max_events=1 the trigger then ends.
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(events.__anext__(), timeout=60)
    assert (await event_stack.consumer_state())[:2] == (0, 0)  # none pending, none unacked
