"""A worker with an OIDC token connects through the real nats-server and the gateway."""

from __future__ import annotations

import asyncio
import json

import nats.errors
import pytest

from gateway.client import oidc_envelope, task_subject
from gateway.dev.issuer import DevIssuer
from tests.integration.harness import (
    AUDIENCE,
    WORKER,
    Stack,
    Violations,
    connect,
    forge_hs256,
)

pytestmark = pytest.mark.integration


async def _records(stack: Stack, **params: str) -> list[dict]:
    async with stack.api() as api:
        response = await api.get("/v1/grants", params=params)
    assert response.status_code == 200, response.text
    items: list[dict] = response.json()["items"]
    return items


async def _wait_for_violation(errors: Violations) -> str:
    for _ in range(100):
        if errors.errors:
            return errors.errors[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no permissions violation reported")


async def test_granted_worker_is_scoped_to_its_task(running: Stack) -> None:
    errors = Violations()
    envelope = oidc_envelope(running.token(), dag_id="etl", task_id="load")
    nc = await connect(running.nats_url, envelope, errors)
    try:
        inbox = await nc.subscribe("airflow.etl.load.>")
        await nc.publish("airflow.etl.load.done", b"ok")
        message = await inbox.next_msg(timeout=2)
        assert message.data == b"ok"
        assert not errors.errors

        await nc.publish("airflow.etl.extract.done", b"not mine")
        await nc.flush()
        assert "permissions violation for publish" in await _wait_for_violation(errors)
        errors.errors.clear()
        await nc.subscribe("airflow.other.>")
        await nc.flush()
        assert "permissions violation for subscription" in await _wait_for_violation(errors)
    finally:
        await nc.close()

    [grant] = await _records(running, decision="grant")
    assert (grant["dag_id"], grant["task_id"]) == ("etl", "load")
    assert grant["permissions"]["pub"]["allow"] == ["airflow.etl.load.>"]
    assert grant["principal"] == f"{running.issuer.issuer}#system:serviceaccount:airflow:etl-worker"
    assert grant["policy_ids"] == ["etl-workers"]
    assert grant["identity_fingerprint"].startswith("sha256:")
    assert grant["user_nkey"].startswith("U") and grant["expires_at"]


async def test_task_group_ids_cannot_reach_a_sibling_space(running: Stack) -> None:
    """`grp.load` is one token (`grp%2Eload`), never the subject space of task `grp`."""
    running.tmp.joinpath("policies", "etl.yaml").write_text(
        running.tmp.joinpath("policies", "etl.yaml").read_text().replace(
            "tasks: [load, extract]", "tasks: [load, extract, grp.load]"))
    assert running.gateway is not None
    assert running.gateway.policies.reload("test")
    errors = Violations()
    nc = await connect(running.nats_url,
                       oidc_envelope(running.token(), dag_id="etl", task_id="grp.load"), errors)
    try:
        own = task_subject("airflow", "etl", "grp.load", "done")
        assert own == "airflow.etl.grp%2Eload.done"
        sub = await nc.subscribe(own)
        await nc.publish(own, b"x")
        assert (await sub.next_msg(timeout=2)).data == b"x"
        await nc.publish("airflow.etl.grp.load.done", b"escape")
        await nc.flush()
        assert "permissions violation" in await _wait_for_violation(errors)
    finally:
        await nc.close()


REFUSALS = {
    "expired": ("expired_token", lambda s: s.token(now=s_now() - 3600, lifetime=600)),
    "wrong-audience": ("wrong_audience", lambda s: s.token(audience="someone-else")),
    "foreign-key": ("bad_signature",
                    lambda s: s.token(key=DevIssuer.foreign_private_key("RS256"))),
    "alg-none": ("algorithm_not_allowed",
                 lambda s: s.issuer.mint_unsigned(subject="x", audience=AUDIENCE)),
    "hs256-with-public-key": (
        "algorithm_not_allowed",
        lambda s: forge_hs256(s.issuer, subject=WORKER, audience=AUDIENCE)),
    "scope-not-in-policy": ("no_matching_policy", None),
}


def s_now() -> int:
    import time

    return int(time.time())


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_bad_tokens_are_refused_and_audited(running: Stack, case: str) -> None:
    code, make = REFUSALS[case]
    token = make(running) if make else running.token()
    task = "transform" if case == "scope-not-in-policy" else "load"
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(running.nats_url, oidc_envelope(token, dag_id="etl", task_id=task))
    [deny] = await _records(running, decision="deny")
    assert deny["reason_code"] == code
    assert deny["reason"]
    assert token not in json.dumps(deny)
    assert not await _records(running, decision="grant")


async def test_unknown_issuer_is_refused(running: Stack) -> None:
    with DevIssuer() as other:
        token = other.mint(subject="system:serviceaccount:airflow:etl-worker", audience=AUDIENCE)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await connect(running.nats_url, oidc_envelope(token, dag_id="etl", task_id="load"))
    [deny] = await _records(running, decision="deny")
    assert deny["reason_code"] == "unknown_issuer"
    assert other.issuer in deny["reason"]


GARBAGE = {
    "not-json": ("not json", "bad_credential"),
    "no-method": ('{"v":1}', "unsupported_method"),
    "future-version": ('{"v":2,"method":"oidc"}', "unsupported_version"),
    "extra-field": ('{"v":1,"method":"oidc","token":"x","scope":{},"admin":true}',
                    "bad_credential"),
    "wildcard-in-dag": ('{"v":1,"method":"oidc","token":"x","scope":'
                        '{"dag_id":"etl.>","task_id":"load"}}', "bad_scope"),
    "oversized": ('{"v":1,"method":"oidc","token":"' + "a" * 20_000 + '"}',
                  "oversized_credential"),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
async def test_garbage_envelope_is_refused(running: Stack, case: str) -> None:
    envelope, code = GARBAGE[case]
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(running.nats_url, envelope)
    [deny] = await _records(running, decision="deny")
    assert deny["reason_code"] == code
    assert deny["reason"]
    assert deny["identity_fingerprint"].startswith("sha256:")


async def test_large_token_connects(running: Stack) -> None:
    """A 6 KB envelope passes: the generated config raises max_control_line."""
    token = running.token(claims={"groups": [f"group-{i:04d}" for i in range(500)]})
    envelope = oidc_envelope(token, dag_id="etl", task_id="load")
    assert len(envelope) > 6 * 1024
    nc = await connect(running.nats_url, envelope)
    await nc.close()
    assert len(await _records(running, decision="grant")) == 1


async def test_every_grant_has_its_record(running: Stack) -> None:
    async def one(task: str) -> None:
        nc = await connect(running.nats_url,
                           oidc_envelope(running.token(), dag_id="etl", task_id=task))
        await nc.close()

    await asyncio.gather(*(one("load" if i % 2 else "extract") for i in range(20)))
    grants = await _records(running, decision="grant", limit="100")
    assert len(grants) == 20
    assert len({g["user_nkey"] for g in grants}) == 20
    assert len(await _records(running, decision="grant", task="load")) == 10


async def test_audit_api_requires_a_token(running: Stack) -> None:
    async with running.api() as api:
        anonymous = await api.get("/v1/grants", headers={"Authorization": ""})
        wrong = await api.get("/v1/grants", headers={"Authorization": "Bearer nope"})
        health = await api.get("/healthz", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert health.status_code == 200


async def test_audit_failure_denies_and_recovers(running: Stack) -> None:
    """Fail closed: a grant that cannot be recorded is not granted."""
    assert running.gateway is not None
    store = running.gateway.store
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE decisions RENAME TO decisions_away")
    envelope = oidc_envelope(running.token(), dag_id="etl", task_id="load")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(running.nats_url, envelope)
    assert running.gateway.writer.failures >= 2  # the grant, then its deny record
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE decisions_away RENAME TO decisions")
    nc = await connect(running.nats_url, envelope)
    await nc.close()
    assert [r["decision"] for r in await _records(running)] == ["grant"]

