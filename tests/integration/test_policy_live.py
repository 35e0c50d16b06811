"""The policy engine against the real nats-server: live reload, readiness, explain over
HTTP, task-group ids, source networks and response permissions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.client import oidc_envelope, task_subject
from tests.integration.harness import Stack, Violations, connect

pytestmark = pytest.mark.integration


@pytest.fixture
async def live(stack: Stack) -> AsyncIterator[Stack]:
    await stack.start_gateway(policy={"dir": str(stack.tmp / "policies"),
                                      "reload_interval_seconds": 0.05})
    try:
        yield stack
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


def _policy_file(stack: Stack) -> Path:
    return stack.tmp / "policies" / "etl.yaml"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    stat = path.stat()  # a distinct mtime even on coarse-clock filesystems
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


async def _wait_until(predicate: object, what: str) -> None:
    for _ in range(200):
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _readyz(stack: Stack) -> dict:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.gateway.api_port}") as api:  # type: ignore[union-attr]
        response = await api.get("/readyz")  # no credentials: readiness is public
    assert response.status_code == 200
    body: dict = response.json()
    return body


async def _can_publish(stack: Stack, subject: str, task: str = "load") -> bool:
    errors = Violations()
    nc = await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id="etl",
                                                     task_id=task), errors)
    try:
        await nc.publish(subject, b"x")
        await nc.flush()
        await asyncio.sleep(0.1)  # a violation arrives asynchronously
        return not errors.errors
    finally:
        await nc.close()


async def test_policy_edits_apply_to_the_next_connection_without_restart(live: Stack) -> None:
    assert await _can_publish(live, "airflow.etl.load.done")
    assert not await _can_publish(live, "results.etl.load")
    before = (await _readyz(live))["policy"]["content_hash"]

    _edit(_policy_file(live), 'allow: ["airflow.{dag_id}.{task_id}.>"]\n      subscribe',
          'allow: ["results.{dag_id}.{task_id}"]\n      subscribe')

    async def reloaded() -> bool:
        return bool((await _readyz(live))["policy"]["content_hash"] != before)

    await _wait_until(reloaded, "the edit to load")
    assert await _can_publish(live, "results.etl.load")
    assert not await _can_publish(live, "airflow.etl.load.done")

    async with live.api() as api:
        grants = (await api.get("/v1/grants", params={"decision": "grant"})).json()["items"]
    hashes = [g["policy_set_hash"] for g in grants]
    assert hashes[0] != before and hashes[-1] == before  # newest first


async def test_a_broken_edit_keeps_the_last_good_set_and_shows_on_readyz(live: Stack) -> None:
    good_hash = (await _readyz(live))["policy"]["content_hash"]
    _edit(_policy_file(live), "ttl_seconds: 600", "ttl_seconds: forever")

    async def degraded() -> bool:
        return bool((await _readyz(live))["status"] == "degraded")

    await _wait_until(degraded, "readyz to report the broken edit")
    ready = await _readyz(live)
    assert ready["policy"]["content_hash"] == good_hash
    assert ready["policy"]["reload_failures"] >= 1
    assert ready["policy"]["last_error"]["problems"] == 1
    assert "ttl_seconds" not in str(ready)  # error text only behind authentication

    assert await _can_publish(live, "airflow.etl.load.done")  # still the last good set

    async with live.api() as api:
        status = (await api.get("/v1/policies")).json()
    assert status["status"] == "stale" and status["content_hash"] == good_hash
    [problem] = status["last_error"]["problems"]
    assert problem.startswith("etl.yaml:16: `policies.0.ttl_seconds`")
    assert status["policies"] == [{"id": "etl-workers", "source": "etl.yaml:3"}]

    _edit(_policy_file(live), "ttl_seconds: forever", "ttl_seconds: 600")

    async def ready_again() -> bool:
        return bool((await _readyz(live))["status"] == "ready")

    await _wait_until(ready_again, "readyz to recover")


async def test_explain_and_policies_need_credentials(live: Stack) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.gateway.api_port}") as api:  # type: ignore[union-attr]
        assert (await api.get("/v1/policies")).status_code == 401
        assert (await api.post("/v1/explain", json={})).status_code == 401


async def test_explain_over_http_matches_what_the_gateway_grants(live: Stack) -> None:
    claims = {"iss": live.issuer.issuer, "sub": "system:serviceaccount:airflow:etl-worker",
              "aud": "nats-gateway"}
    body = {"identity": {"oidc": {"claims": claims}},
            "scope": {"dag_id": "etl", "task_id": "extract"}}
    async with live.api() as api:
        explained = (await api.post("/v1/explain", json=body)).json()
        assert explained["decision"] == "grant"
        assert explained["permissions"]["pub"]["allow"] == ["airflow.etl.extract.>"]
        assert explained["policies"][0]["source"] == "etl.yaml:3"

        body["scope"] = {"dag_id": "billing", "task_id": "extract"}
        denied = (await api.post("/v1/explain", json=body)).json()
        assert denied["decision"] == "deny"
        assert denied["policies"][0]["reasons"] == ["scopes[0]: dag `billing` does not match `etl`"]

        body["scope"] = {"dag_id": "etl", "task_id": "bad task"}
        invalid = await api.post("/v1/explain", json=body)
        assert invalid.status_code == 422 and "bad_scope" in invalid.text
        assert (await api.post("/v1/explain", json={"identity": {}})).status_code == 422


async def test_overlapping_task_group_ids_stay_apart_end_to_end(live: Stack) -> None:
    """dag `a.b` task `c` and dag `a` task `b.c` never reach each other's subjects."""
    _edit(_policy_file(live), "- dag: etl\n        tasks: [load, extract]",
          '- dag: "a*"\n        tasks: ["*"]')
    await _wait_until(lambda: _has_dag_glob(live), "the edit to load")
    errors_one, errors_two = Violations(), Violations()
    one = await connect(live.nats_url, oidc_envelope(live.token(), dag_id="a.b", task_id="c"),
                        errors_one)
    two = await connect(live.nats_url, oidc_envelope(live.token(), dag_id="a", task_id="b.c"),
                        errors_two)
    try:
        mine_one = task_subject("airflow", "a.b", "c", "done")
        mine_two = task_subject("airflow", "a", "b.c", "done")
        assert mine_one != mine_two
        inbox_two = await two.subscribe(mine_two)
        await two.flush()
        await one.publish(mine_two, b"intrusion")
        await one.subscribe(mine_two)
        await one.flush()
        await asyncio.sleep(0.2)
        assert any("permissions violation for publish" in e for e in errors_one.errors)
        assert any("permissions violation for subscription" in e for e in errors_one.errors)
        with pytest.raises(asyncio.TimeoutError):
            await inbox_two.next_msg(timeout=0.3)
        await one.publish(mine_one, b"own")  # its own space works
        await one.flush()
        assert not errors_two.errors
    finally:
        await one.close()
        await two.close()


async def _has_dag_glob(stack: Stack) -> bool:
    assert stack.gateway is not None
    return any(rule.dag == "a*" for p in stack.gateway.policies.current().policies
               for rule in p.scopes)


async def test_source_networks_use_the_address_nats_server_saw(live: Stack) -> None:
    path = _policy_file(live)
    _edit(path, "ttl_seconds: 600", 'source_networks: ["10.99.0.0/16"]\n    ttl_seconds: 600')
    text = path.read_text().replace('      source_networks: ["10.99.0.0/16"]\n', "")
    text = text.replace("    permissions:\n",
                        '    permissions:\n      source_networks: ["10.99.0.0/16"]\n')
    text = text.replace('    source_networks: ["10.99.0.0/16"]\n    ttl_seconds',
                        "    ttl_seconds")
    path.write_text(text)
    await _wait_until(lambda: _restricts_source(live), "the edit to load")
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await connect(live.nats_url, oidc_envelope(live.token(), dag_id="etl", task_id="load"))
    async with live.api() as api:
        [denied] = (await api.get("/v1/grants", params={"decision": "deny"})).json()["items"]
    assert denied["reason_code"] == "source_not_allowed"
    assert "127.0.0.1" in denied["reason"]

    _edit(path, '"10.99.0.0/16"', '"127.0.0.0/8"')
    await _wait_until(lambda: _restricts_source(live, "127.0.0.0/8"), "the edit to load")
    nc = await connect(live.nats_url, oidc_envelope(live.token(), dag_id="etl", task_id="load"))
    await nc.close()


async def _restricts_source(stack: Stack, network: str = "10.99.0.0/16") -> bool:
    assert stack.gateway is not None
    return any(network in (p.permissions.source_networks or ())
               for p in stack.gateway.policies.current().policies)


async def test_response_permissions_allow_one_reply_without_publish_rights(
        live: Stack) -> None:
    path = _policy_file(live)
    text = path.read_text().replace(
        "    permissions:\n",
        "    permissions:\n      responses: {max: 1, ttl_seconds: 5}\n")
    path.write_text(text)
    await _wait_until(lambda: _has_responses(live), "the edit to load")

    # The requester (task extract) may publish DAG-wide and owns a reply inbox outside
    # everyone's publish rights: only the response permission lets `load` answer it.
    _edit(path, 'allow: ["airflow.{dag_id}.{task_id}.>"]\n      subscribe:\n'
                '        allow: ["airflow.{dag_id}.{task_id}.>"]',
          'allow: ["airflow.{dag_id}.>"]\n      subscribe:\n'
          '        allow: ["airflow.{dag_id}.{task_id}.>", "_INBOX.{dag_id}.{task_id}.>"]')
    await _wait_until(lambda: _publishes_dag_wide(live), "the edit to load")
    errors = Violations()
    server = await connect(live.nats_url, oidc_envelope(live.token(), dag_id="etl",
                                                        task_id="load"), errors)
    client = await connect(live.nats_url, oidc_envelope(live.token(), dag_id="etl",
                                                        task_id="extract"))
    try:
        async def answer(msg: object) -> None:
            await server.publish(msg.reply, b"pong")  # type: ignore[attr-defined]
            await server.publish(msg.reply, b"second")  # type: ignore[attr-defined]

        await server.subscribe("airflow.etl.load.ping", cb=answer)
        await server.flush()
        replies = await client.subscribe("_INBOX.etl.extract.>")
        await client.flush()
        await client.publish("airflow.etl.load.ping", b"ping", reply="_INBOX.etl.extract.1")
        first = await replies.next_msg(timeout=2)
        assert first.data == b"pong"
        await asyncio.sleep(0.2)
        assert any("permissions violation for publish" in e for e in errors.errors)
        with pytest.raises(asyncio.TimeoutError):
            await replies.next_msg(timeout=0.2)
    finally:
        await server.close()
        await client.close()


async def _has_responses(stack: Stack) -> bool:
    assert stack.gateway is not None
    return any(p.permissions.responses is not None
               for p in stack.gateway.policies.current().policies)


async def _publishes_dag_wide(stack: Stack) -> bool:
    assert stack.gateway is not None
    return any("airflow.{dag_id}.>" in p.permissions.publish.allow
               for p in stack.gateway.policies.current().policies)


async def test_user_limits_are_carried_but_nats_server_does_not_enforce_them(
        live: Stack) -> None:
    """Pins nats-server's behaviour (2.15): user limits in an auth-callout user JWT are not
    applied (the server clears the client's JWT before applying limits). docs/policies.md
    says so; if this test starts failing, the server enforces them and the docs change."""
    path = _policy_file(live)
    path.write_text(path.read_text().replace(
        "    permissions:\n",
        "    permissions:\n      limits: {subscriptions: 1, payload_bytes: 10}\n"))
    await _wait_until(lambda: _has_limits(live), "the edit to load")
    errors = Violations()
    nc = await connect(live.nats_url, oidc_envelope(live.token(), dag_id="etl",
                                                    task_id="load"), errors)
    try:
        first = await nc.subscribe("airflow.etl.load.a")
        await nc.subscribe("airflow.etl.load.b")
        await nc.publish("airflow.etl.load.a", b"x" * 100)
        assert len((await first.next_msg(timeout=2)).data) == 100
        assert not errors.errors
    finally:
        await nc.close()
    async with live.api() as api:
        [grant] = (await api.get("/v1/grants", params={"decision": "grant"})).json()["items"]
    assert grant["permissions"]["limits"] == {"subs": 1, "payload": 10, "data": -1}


async def _has_limits(stack: Stack) -> bool:
    assert stack.gateway is not None
    return any(p.permissions.limits.subscriptions is not None
               for p in stack.gateway.policies.current().policies)
