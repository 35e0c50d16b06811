"""The Airflow provider's pure parts: message ids and lineage headers, the trigger
event's payload, the `nats` asset URI scheme, the `nats` queue for common-messaging's
MessageQueueTrigger, the trigger's subject filter, and the provider registration
(checked against Airflow's own provider_info schema)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import jsonschema
import pytest

from gateway.airflow.assets import sanitize_uri
from gateway.airflow.messages import event_payload, lineage_headers, message_id
from gateway.airflow.provider import get_provider_info
from gateway.envelope import Scope

ROOT = Path(__file__).resolve().parents[2]


def test_a_message_id_is_the_same_for_every_try_and_differs_for_any_other_instance() -> None:
    run = Scope("etl", "load", "manual__2026-01-01T00:00:00+00:00")
    assert message_id(run) == message_id(run, -1)
    others = {message_id(run, 0), message_id(Scope("etl", "load", "other")),
              message_id(Scope("etl.load", "x", run.run_id)),
              message_id(Scope("etl", "load.x", run.run_id))}
    assert message_id(run) not in others and len(others) == 4
    # ids are encoded whole tokens: `.` inside an id never splits it
    assert message_id(Scope("a.b", "c", "r")) != message_id(Scope("a", "b.c", "r"))
    with pytest.raises(ValueError, match="run id"):
        message_id(Scope("etl", "load"))


def test_lineage_headers_carry_the_producer_and_refuse_line_breaks() -> None:
    headers = lineage_headers(Scope("etl", "load", "r1"), 2)
    assert headers == {"Nats-Msg-Id": "etl.load.r1.2", "Airflow-Dag-Id": "etl",
                       "Airflow-Task-Id": "load", "Airflow-Run-Id": "r1",
                       "Airflow-Map-Index": "2"}
    with pytest.raises(ValueError, match="line break"):
        lineage_headers(Scope("etl", "load", "r\r\nX-Evil: 1"))


@pytest.mark.parametrize(("data", "parsed"), [
    (b'{"rows": 42}', {"rows": 42}), (b"[1, 2]", [1, 2]), (b"plain text", "plain text"),
    (b"\xff\xfe", "\ufffd\ufffd"), (b"", "")])
def test_the_event_payload_parses_json_and_keeps_other_data_as_text(
        data: bytes, parsed: object) -> None:
    payload = event_payload(subject="events.a.b.done", data=data,
                            headers=lineage_headers(Scope("a", "b", "r")), stream="S",
                            stream_seq=7, delivered=1)
    assert payload["data"] == parsed
    assert payload["producer"] == {"dag_id": "a", "task_id": "b", "run_id": "r",
                                   "map_index": "-1"}
    assert (payload["message_id"], payload["stream_seq"]) == ("a.b.r.-1", 7)
    json.dumps(payload)  # Airflow stores it as JSON


def test_an_event_without_headers_has_no_lineage() -> None:
    payload = event_payload(subject="s", data=b"1", headers=None, stream="S", stream_seq=1,
                            delivered=3)
    assert (payload["producer"], payload["message_id"], payload["delivered"]) == ({}, None, 3)


@pytest.mark.parametrize("uri", ["nats://events.etl.load.done", "nats://events.etl.>",
                                 "nats://events.*.load"])
def test_a_nats_asset_uri_is_kept_as_written(uri: str) -> None:
    # Airflow hands the handler the URI with its empty path normalised to `/`.
    parsed = urlsplit(uri)._replace(path="/")
    assert sanitize_uri(parsed).geturl() == uri


@pytest.mark.parametrize("uri", ["nats://events..x", "nats://a.b/path", "nats://a.b:4222",
                                 "nats://u@a.b", "nats://a.>.b", "nats://a.b*", "nats://"])
def test_what_is_not_a_subject_is_refused(uri: str) -> None:
    with pytest.raises(ValueError):
        sanitize_uri(urlsplit(uri))


def test_the_provider_info_is_valid_for_airflow() -> None:
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json")
                        .read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    [conn] = info["connection-types"]
    assert conn["connection-type"] == "natsgateway"  # no `_` (RFC 3986 scheme)
    assert info["asset-uris"][0]["schemes"] == ["nats"]
    assert info["queues"] == ["gateway.airflow.queues.NatsMessageQueueProvider"]


def test_the_entry_point_names_the_provider_info() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert ('[project.entry-points.apache_airflow_provider]\n'
            'provider_info = "gateway.airflow.provider:get_provider_info"') in text


MSG_QUEUE = "airflow.providers.common.messaging.triggers.msg_queue"
WATCHER = {"stream": "ETL_EVENTS", "dag_id": "etl_consumer",
           "task_id": "etl_complete_watcher"}


@pytest.fixture
def queue_providers() -> Iterator[None]:
    """Our provider registered with common-messaging, as Airflow's own tests of
    MessageQueueTrigger do it (patching ``MESSAGE_QUEUE_PROVIDERS``). The list is built
    the way msg_queue builds it at import from ProvidersManager's ``queue_class_names``:
    ``create_class_by_name(name)()`` for each name our provider info lists under
    ``queues``. ProvidersManager itself is not asked: the shared venv's entry point
    metadata may predate the provider, and it is a process-wide singleton."""
    from airflow.providers.common.messaging.triggers import msg_queue

    providers = [msg_queue.create_class_by_name(name)()
                 for name in get_provider_info()["queues"]]
    with mock.patch(f"{MSG_QUEUE}.MESSAGE_QUEUE_PROVIDERS", providers):
        yield


def _by_queue(queue: str, **kwargs: Any) -> Any:
    """``MessageQueueTrigger(queue=...)``, which common-messaging 2.1 deprecates."""
    from airflow.exceptions import AirflowProviderDeprecationWarning
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    with pytest.warns(AirflowProviderDeprecationWarning, match="`queue` parameter"):
        return MessageQueueTrigger(queue=queue, **kwargs)


def _serialized(trigger: Any) -> tuple[str, dict[str, Any]]:
    # What the DAG processor stores and the triggerer re-creates: the resolved trigger.
    from gateway.airflow.triggers import NatsMessageTrigger

    assert isinstance(trigger.trigger, NatsMessageTrigger)
    classpath, kwargs = trigger.serialize()
    return classpath, {key: kwargs[key] for key in (*WATCHER, "subject", "apply_function")}


@pytest.mark.usefixtures("queue_providers")
def test_a_nats_queue_uri_resolves_to_the_nats_message_trigger() -> None:
    trigger = _by_queue("nats://events.etl_producer.>", apply_function="dags.keep", **WATCHER)
    assert _serialized(trigger) == ("gateway.airflow.triggers.NatsMessageTrigger", {
        **WATCHER, "subject": "events.etl_producer.>", "apply_function": "dags.keep"})


@pytest.mark.usefixtures("queue_providers")
def test_the_nats_scheme_passes_every_keyword_to_the_trigger() -> None:
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    trigger = MessageQueueTrigger(scheme="nats", subject="events.*.load", **WATCHER)
    assert _serialized(trigger)[1] == {**WATCHER, "subject": "events.*.load",
                                       "apply_function": None}


@pytest.mark.usefixtures("queue_providers")
@pytest.mark.parametrize(("queue", "kwargs", "message"), [
    ("nats://events.etl.>", {"dag_id": "d", "task_id": "t"}, "missing `stream`"),
    ("nats://events.etl.>", {"stream": "S"}, "missing `dag_id`, `task_id`"),
    ("nats://events.etl.>", {**WATCHER, "subject": "events.x"}, "not pass `subject`"),
    ("nats://events.etl/x", WATCHER, "without path"),
    ("nats://events.etl:4222", WATCHER, "without path, port"),
    ("nats://events..etl", WATCHER, "does not name a subject"),
    ("nats://events.>.etl", WATCHER, "only be the last"),
    ("nats://events.etl#x", WATCHER, "no fragment"),
    ("nats://", WATCHER, "does not name a subject"),
])
def test_a_nats_queue_is_refused_with_its_reason(queue: str, kwargs: dict[str, str],
                                                 message: str) -> None:
    trigger = _by_queue(queue, **kwargs)
    with pytest.raises(ValueError, match=message):
        trigger.serialize()


def test_the_nats_queue_provider_claims_only_its_scheme() -> None:
    from gateway.airflow.queues import NatsMessageQueueProvider

    provider = NatsMessageQueueProvider()
    assert provider.queue_matches("nats://events.x") and provider.queue_matches("NATS://a")
    assert not provider.queue_matches("kafka://localhost:9092/nats")
    assert not provider.queue_matches("redis+pubsub://nats")
    assert provider.scheme_matches("nats") and not provider.scheme_matches("nats+js")


@pytest.mark.parametrize(("pattern", "subject", "fires"), [
    (None, "anything.at.all", True),
    ("events.etl.load.done", "events.etl.load.done", True),
    ("events.etl.load.done", "events.etl.load.failed", False),
    ("events.*.load.done", "events.etl.load.done", True),
    ("events.etl.>", "events.etl.load.done", True),
    ("events.etl.>", "events.etl", False),
])
async def test_the_trigger_fires_only_on_its_subject(pattern: str | None, subject: str,
                                                     fires: bool) -> None:
    from gateway.airflow.triggers import NatsMessageTrigger

    trigger = NatsMessageTrigger(subject=pattern, **WATCHER)
    wanted = await trigger._filter()
    assert wanted({"subject": subject, "data": {}}) is fires


SEEN: list[str] = []


def record_and_keep(payload: dict[str, Any]) -> bool:
    """An apply_function that notes what it was asked about."""
    SEEN.append(payload["subject"])
    return True


async def test_apply_function_sees_only_messages_on_the_subject() -> None:
    from gateway.airflow.triggers import NatsMessageTrigger

    SEEN.clear()
    trigger = NatsMessageTrigger(subject="events.etl.>", **WATCHER,
                                 apply_function=f"{__name__}.record_and_keep")
    wanted = await trigger._filter()
    assert not wanted({"subject": "events.other.x"})
    assert wanted({"subject": "events.etl.x"})
    assert SEEN == ["events.etl.x"]


def test_a_trigger_subject_that_is_not_a_subject_is_refused_at_parse_time() -> None:
    from gateway.airflow.triggers import NatsMessageTrigger

    with pytest.raises(ValueError, match="must be a whole token"):
        NatsMessageTrigger(subject="events.etl*", **WATCHER)
