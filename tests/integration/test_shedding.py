"""Overload: a request that queued until its record could no longer be committed inside
nats-server's auth timeout is dropped unanswered (nats-server denies it, the client
retries); a fresh one is decided, and its wait is spent from its deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit.record import AuditRecord
from gateway.callout.service import CalloutService
from gateway.client import oidc_envelope
from gateway.dev.issuer import DevIssuer
from gateway.metrics import Metrics
from gateway.natsjwt.nkeys import Prefix, SigningKeyPair
from tests.integration.test_fuzz import Pipeline, open_pipeline

pytestmark = pytest.mark.integration

class _Request:
    """An auth request as nats-py hands it over (data, headers, reply subject)."""

    def __init__(self, data: bytes, headers: dict[str, str]) -> None:
        self.data, self.headers, self.reply = data, headers, "_INBOX.reply"
        self.answers: list[bytes] = []

    async def respond(self, data: bytes) -> None:
        self.answers.append(data)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, CalloutService, Metrics, str]]:
    with DevIssuer() as issuer:
        async with open_pipeline(issuer, tmp_path) as pipeline:
            metrics = Metrics()
            service = CalloutService(
                pipeline.handler, url="nats://unused", metrics=metrics, shed_after_seconds=0.8,
                user_seed=SigningKeyPair.generate(Prefix.USER).seed)
            token = issuer.mint(subject="worker", audience="nats-gateway")
            yield pipeline, service, metrics, oidc_envelope(token, dag_id="etl",
                                                            task_id="load")


async def test_a_request_that_queued_too_long_is_dropped_not_decided(
        setup: tuple[Pipeline, CalloutService, Metrics, str]) -> None:
    pipeline, service, metrics, envelope = setup
    stale = _Request(*pipeline.request(envelope))
    await service._serve(stale, arrived=time.monotonic() - 0.9)  # type: ignore[arg-type]
    assert stale.answers == [] and pipeline.records == [] and service.shed == 1
    assert metrics.registry.get_sample_value("nats_gateway_shed_requests_total") == 1


async def test_a_request_in_time_is_decided_and_its_wait_counts(
        setup: tuple[Pipeline, CalloutService, Metrics, str]) -> None:
    pipeline, service, _, envelope = setup
    deadlines: list[float] = []
    sink = pipeline.handler._audit

    async def audit(record: AuditRecord, deadline: float) -> None:
        deadlines.append(deadline)
        await sink(record, deadline)

    pipeline.handler._audit = audit
    fresh = _Request(*pipeline.request(envelope))
    before = time.time()
    await service._serve(fresh, arrived=time.monotonic() - 0.5)  # type: ignore[arg-type]
    outcome = pipeline.outcome(fresh.answers[0])
    assert outcome is not None and "jwt" in outcome and service.shed == 0
    assert [r.decision for r in pipeline.records] == ["grant"]
    # The deadline runs from when the request arrived, not from when it was picked up.
    assert before + 2.0 - 0.5 - 0.1 < deadlines[0] < before + 2.0 - 0.5 + 0.1


async def test_a_request_that_expired_in_transit_is_dropped_unverified_and_unrecorded(
        setup: tuple[Pipeline, CalloutService, Metrics, str]) -> None:
    pipeline, _, _, envelope = setup
    late = pipeline.request(envelope, expires=int(time.time()) - 2)
    assert await pipeline.handler.handle(*late) is None
    assert pipeline.records == [] and pipeline.handler.expired == 1
    # Just inside the window it is still a request: verified, decided and recorded.
    assert await pipeline.handler.handle(*pipeline.request(envelope)) is not None
    assert [r.decision for r in pipeline.records] == ["grant"]


async def test_backlog_hands_out_newest_first_and_drops_the_oldest_when_full() -> None:
    from gateway.callout.service import _Backlog

    backlog = _Backlog(limit=3)
    msgs = [(object(), float(i)) for i in range(4)]
    assert [backlog.put(m) for m in msgs] == [None, None, None, msgs[0]]  # oldest made room
    assert [(await backlog.get())[1] for _ in range(3)] == [3.0, 2.0, 1.0]
    idle = asyncio.ensure_future(backlog.get())
    cancelled = asyncio.ensure_future(backlog.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert backlog.put(msgs[1]) is None and (await idle) is msgs[1]  # straight to a worker
    assert backlog.put(msgs[2]) is None and len(backlog) == 1  # the cancelled one is skipped


async def test_a_request_is_taken_only_with_room_for_its_decision_and_its_commit(
        setup: tuple[Pipeline, CalloutService, Metrics, str]) -> None:
    # The commit needs 1.2 s of the request's time left when it starts; a request with
    # barely that much when its decision starts would reach the writer too late and its
    # grant would be refused as audit_timeout, a deny for an entitled worker. It is
    # shed instead, unrecorded; with the decision's margin of 0.3 s more it is decided.
    pipeline, _, _, envelope = setup
    exp = int(time.time()) + 2
    handler = pipeline.handler
    handler._clock = lambda: exp + 1 - 1.35  # 1.35 s left: more than the commit budget
    assert await handler.handle(*pipeline.request(envelope, expires=exp)) is None
    assert pipeline.records == [] and handler.expired == 1
    handler._clock = lambda: exp + 1 - 1.6
    assert await handler.handle(*pipeline.request(envelope, expires=exp)) is not None
    assert [r.decision for r in pipeline.records] == ["grant"]
