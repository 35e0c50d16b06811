"""The handler releases no grant before its audit record is committed: while the commit
is pending nothing is answered, and a failed commit turns the grant into a deny."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit.record import AuditRecord
from gateway.callout.handler import CalloutHandler, HandlerSettings
from gateway.client import oidc_envelope
from gateway.dev.issuer import DevIssuer
from gateway.errors import AuditUnavailable
from tests.integration.test_fuzz import ISSUER, Pipeline, open_pipeline

pytestmark = pytest.mark.integration


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
    await asyncio.sleep(0.05)
    assert [r.decision for r in queued] == ["grant"] and not answer.done()
    commit.set_exception(AuditUnavailable("disk full", code="audit_unavailable"))
    outcome = tested.outcome(await answer)
    assert outcome is not None and outcome["error"].startswith("audit_unavailable")
