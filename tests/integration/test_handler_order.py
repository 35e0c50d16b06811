"""The handler queues the audit record before signing its answer (signing overlaps the
commit) and still releases nothing before the commit: a failed commit is a deny, and an
answer that cannot be signed after its grant was recorded is refused without a second,
clashing record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.audit.record import AuditRecord
from gateway.callout.handler import AccountSigner, CalloutHandler, HandlerSettings
from gateway.dev.issuer import DevIssuer
from gateway.errors import AuditUnavailable
from gateway.natsjwt.nkeys import CurveKeyPair, Prefix, SigningKeyPair
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


@dataclass(frozen=True, repr=False)
class _BrokenSigner(SigningKeyPair):
    def sign(self, data: bytes) -> bytes:
        raise RuntimeError("hardware key unplugged")


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


async def test_a_recorded_grant_whose_answer_cannot_be_signed_is_refused_once(
        pipeline: tuple[Pipeline, DevIssuer], caplog: pytest.LogCaptureFixture) -> None:
    tested, issuer = pipeline
    records: list[AuditRecord] = []

    async def audit(record: AuditRecord, deadline: float) -> None:
        records.append(record)

    broken = _BrokenSigner(Prefix.ACCOUNT, SigningKeyPair.generate(Prefix.ACCOUNT)._key)
    handler = _handler(tested, audit, operator_accounts={
        "APP": AccountSigner(broken.public_key, broken)})
    token = issuer.mint(subject="worker", audience="nats-gateway")
    with caplog.at_level(logging.ERROR):
        reply = await handler.handle(*tested.request(
            f'{{"v":1,"method":"oidc","token":"{token}",'
            f'"scope":{{"dag_id":"etl","task_id":"load"}}}}'))
    outcome = tested.outcome(reply)
    assert outcome is not None and outcome["error"].startswith("internal_error")
    assert [r.decision for r in records] == ["grant"]  # no second record, same decision id
    assert "grant record is committed but the answer could not be signed" in caplog.text
