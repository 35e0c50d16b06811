"""The handler releases no grant before its audit record is committed: while the commit
is pending nothing is answered, and a failed commit turns the grant into a deny."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.audit.record import AuditRecord
from gateway.callout.handler import CalloutHandler, HandlerSettings
from gateway.client import oidc_envelope
from gateway.dev.issuer import DevIssuer
from gateway.errors import AuditUnavailable
from gateway.natsjwt.claims import MAX_CLIENT_NAME
from tests.integration.test_fuzz import ISSUER, Pipeline, open_pipeline

pytestmark = pytest.mark.integration


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition`` by yielding to the loop, with a bound (never a fixed sleep)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, DevIssuer]]:
    with DevIssuer() as issuer:
        async with open_pipeline(issuer, tmp_path) as opened:
            yield opened, issuer


async def test_no_grant_leaves_before_its_record_is_committed(
        pipeline: tuple[Pipeline, DevIssuer]) -> None:
    tested, issuer = pipeline
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    queued: list[AuditRecord] = []

    def audit(record: AuditRecord, deadline: float) -> asyncio.Future[None]:
        queued.append(record)
        return commit

    handler = CalloutHandler(
        issuer=ISSUER, xkey=tested.xkey, verify_identity=tested.handler._verify_identity,
        policies=tested.handler._policies, audit=audit, settings=HandlerSettings())
    token = issuer.mint(subject="worker", audience="nats-gateway")
    answer = asyncio.ensure_future(handler.handle(*tested.request(
        oidc_envelope(token, dag_id="etl", task_id="load"))))
    await _until(lambda: bool(queued))
    assert [r.decision for r in queued] == ["grant"] and not answer.done()
    commit.set_exception(AuditUnavailable("disk full", code="audit_unavailable"))
    outcome = tested.outcome(await answer)
    assert outcome is not None and outcome["error"].startswith("audit_unavailable")


async def test_a_grant_whose_answer_cannot_be_sent_gets_a_reply_failed_record(
        pipeline: tuple[Pipeline, DevIssuer]) -> None:
    tested, issuer = pipeline
    token = issuer.mint(subject="worker", audience="nats-gateway")

    async def connection_gone(_: bytes) -> None:
        raise ConnectionResetError("nats connection closed")

    await tested.handler.answer(*tested.request(
        oidc_envelope(token, dag_id="etl", task_id="load")), connection_gone)
    grant, follow_up = tested.records
    assert grant.decision == "grant"
    assert follow_up.decision == "deny" and follow_up.reason_code == "reply_failed"
    assert grant.decision_id in follow_up.reason and follow_up.decision_id != grant.decision_id
    assert follow_up.user_nkey == grant.user_nkey and follow_up.principal == grant.principal


async def test_a_denial_whose_answer_cannot_be_sent_needs_no_follow_up(
        pipeline: tuple[Pipeline, DevIssuer]) -> None:
    tested, issuer = pipeline
    token = issuer.mint(subject="stranger", audience="nats-gateway")

    async def connection_gone(_: bytes) -> None:
        raise ConnectionResetError("nats connection closed")

    await tested.handler.answer(*tested.request(
        oidc_envelope(token, dag_id="etl", task_id="load")), connection_gone)
    assert [r.reason_code for r in tested.records] == ["no_matching_policy"]


async def test_the_deny_path_answers_whatever_the_audit_sink_raises(
        pipeline: tuple[Pipeline, DevIssuer]) -> None:
    tested, issuer = pipeline

    async def broken(record: AuditRecord, deadline: float | None) -> None:
        raise RuntimeError("a bug in a sink")

    handler = CalloutHandler(
        issuer=ISSUER, xkey=tested.xkey, verify_identity=tested.handler._verify_identity,
        policies=tested.handler._policies, audit=broken, settings=HandlerSettings())
    for token in (issuer.mint(subject="worker", audience="nats-gateway"), "not-a-token"):
        outcome = tested.outcome(await handler.handle(*tested.request(
            oidc_envelope(token, dag_id="etl", task_id="load")
            if token != "not-a-token" else token)))
        assert outcome is not None and "jwt" not in outcome, "every request is answered"
        assert outcome["error"]


async def test_an_error_quoting_a_lone_surrogate_is_recorded_and_answered(
        pipeline: tuple[Pipeline, DevIssuer]) -> None:
    tested, _ = pipeline
    # An envelope key that is a lone surrogate, repeated: its error quotes it.
    data, headers = tested.request('{"v":1,"\\ud800":1,"\\ud800":2}')
    outcome = tested.outcome(await tested.handler.handle(data, headers))
    assert outcome is not None and outcome["error"].startswith("bad_credential")
    (record,) = tested.records
    assert record.decision == "deny" and record.reason.isprintable()
    record.reason.encode("utf-8")
    assert len(record.client_name) <= MAX_CLIENT_NAME
