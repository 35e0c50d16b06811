"""The handler releases no grant before its audit record is committed: while the commit
is pending nothing is answered, and a failed commit turns the grant into a deny."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.audit.record import AuditRecord
from gateway.callout.handler import CalloutHandler, HandlerSettings
from gateway.dev.issuer import DevIssuer
from gateway.errors import AuditUnavailable
from gateway.natsjwt.nkeys import CurveKeyPair
from gateway.policy.load import load_policy_dir
from tests.integration.test_fuzz import ISSUER, Pipeline

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
policies:
  - id: p
    match: {oidc: {issuer: "ISSUER", subject: worker}}
    scopes: [{dag: etl, tasks: [load]}]
    permissions: {publish: {allow: ["airflow.{dag_id}.{task_id}.>"]}}
"""


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, DevIssuer]]:
    with DevIssuer() as issuer:
        (tmp_path / "p.yaml").write_text(POLICY.replace("ISSUER", issuer.issuer))
        async with httpx.AsyncClient() as http:
            yield Pipeline(issuer, http, load_policy_dir(tmp_path),
                           CurveKeyPair.generate()), issuer


def _handler(pipeline: Pipeline, audit: object, **settings: object) -> CalloutHandler:
    return CalloutHandler(
        issuer=ISSUER, xkey=pipeline.xkey, verify_identity=pipeline.handler._verify_identity,
        policies=pipeline.handler._policies, audit=audit,  # type: ignore[arg-type]
        settings=HandlerSettings(**settings))  # type: ignore[arg-type]


async def test_no_grant_leaves_before_its_record_is_committed(
        pipeline: tuple[Pipeline, DevIssuer]) -> None:
    tested, issuer = pipeline
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    queued: list[AuditRecord] = []

    def audit(record: AuditRecord, deadline: float) -> asyncio.Future[None]:
        queued.append(record)
        return commit

    handler = _handler(tested, audit)
    token = issuer.mint(subject="worker", audience="nats-gateway")
    answer = asyncio.ensure_future(handler.handle(*tested.request(
        f'{{"v":1,"method":"oidc","token":"{token}","scope":{{"dag_id":"etl","task_id":"load"}}}}')))
    await asyncio.sleep(0.05)
    assert [r.decision for r in queued] == ["grant"] and not answer.done()
    commit.set_exception(AuditUnavailable("disk full", code="audit_unavailable"))
    outcome = tested.outcome(await answer)
    assert outcome is not None and outcome["error"].startswith("audit_unavailable")
