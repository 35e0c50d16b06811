"""One hostile client must never cost another worker its connection, and its own text
reaches the audit log and the text log bounded, escaped and on one line.

Each hostile class is sent as a real client would: a raw CONNECT line to the real
nats-server (so a NUL, a 30 KB `name` or an over-long `lang` arrive exactly as sent),
while valid workers connect through the same server, gateway and audit store at the
same time. Run against SQLite and PostgreSQL: PostgreSQL refuses NUL in text and values
longer than their column, which used to fail whole group-commit batches.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.store import AuditStore, DecisionQuery
from gateway.client import oidc_envelope
from gateway.logs import TextFormatter
from gateway.natsjwt.claims import MAX_CLIENT_LANG, MAX_CLIENT_NAME
from tests.databases import postgres_database
from tests.integration.harness import CHECKPOINT_FILE, Stack, build_stack, connect

pytestmark = pytest.mark.integration


def _b64(data: dict[str, Any]) -> str:
    # json.dumps escapes a lone surrogate as `\ud800`, exactly what an attacker sends.
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_token(*, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(header)}.{_b64(claims)}.c2ln"


FORGED_LINE = "\n2026-11-28 09:00:00,000 INFO gateway.callout.handler grant forged-decision"

# name -> (CONNECT fields, envelope): each one of the classes found in the attack run.
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "surrogate-envelope-key": ({}, '{"v":1,"\\ud800":1,"\\ud800":2}'),
    "surrogate-token-header": ({}, oidc_envelope(unsigned_token(
        header={"alg": "\ud800", "kid": "\ud800", "typ": "JWT"},
        claims={"iss": "\ud800", "sub": "x", "aud": "nats-gateway"}),
        dag_id="etl", task_id="load")),
    "newline-token-iss": ({}, oidc_envelope(unsigned_token(
        header={"alg": "RS256", "typ": "JWT"},
        claims={"iss": "https://evil" + FORGED_LINE, "sub": "x", "aud": "nats-gateway"}),
        dag_id="etl", task_id="load")),
    "nul-name": ({"name": "worker\x00\x00name"}, ""),
    "long-lang-version": ({"lang": "l" * 40, "version": "v" * 40}, ""),
    "30kb-name": ({"name": "=HYPERLINK(\"x\")" + "n" * 30_000}, ""),
}


async def raw_connect(port: int, fields: dict[str, Any], envelope: str) -> str:
    """Send one CONNECT as a hand-written client and return nats-server's first answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(reader.readline(), 5)  # INFO
        connect = {"verbose": False, "pedantic": False, "protocol": 1, "lang": "raw",
                   "version": "0", **fields}
        if envelope:
            connect["auth_token"] = envelope
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace")
    finally:
        writer.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hostile.db'}"
        return
    with postgres_database() as (url, _):
        yield url


@pytest.fixture
async def hostile_stack(tmp_path: Path, audit_url: str) -> AsyncIterator[Stack]:
    stack = build_stack(tmp_path, xkey=True)
    await stack.start_gateway(audit={
        "url": audit_url, "checkpoint_key_file": str(stack.keys / CHECKPOINT_FILE)})
    try:
        yield stack
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()
        stack.nats_server.close()
        stack.issuer.stop()


async def _valid_worker(stack: Stack) -> bool:
    try:
        nc = await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id="etl",
                                                         task_id="load"))
    except Exception:
        return False
    await nc.close()
    return True


def _port(stack: Stack) -> int:
    return int(stack.nats_url.rsplit(":", 1)[1])


def _records(url: str) -> list[Any]:
    store = AuditStore(url)
    try:
        return store.query(DecisionQuery(limit=1000))
    finally:
        store.close()


@pytest.mark.parametrize("hostile", list(HOSTILE), ids=list(HOSTILE))
async def test_a_hostile_client_costs_no_valid_worker_its_connection(
        hostile_stack: Stack, audit_url: str, hostile: str) -> None:
    fields, envelope = HOSTILE[hostile]
    port = _port(hostile_stack)
    # Interleaved, so hostile and valid records share group-commit batches.
    outcomes = await asyncio.gather(*(
        raw_connect(port, fields, envelope) if i % 2 else _valid_worker(hostile_stack)
        for i in range(40)))
    valid = [o for i, o in enumerate(outcomes) if i % 2 == 0]
    refused = [o for i, o in enumerate(outcomes) if i % 2]
    assert all(valid), f"{valid.count(False)} of {len(valid)} valid workers were refused"
    assert all("Authorization Violation" in line for line in refused), refused[:2]

    records = _records(audit_url)
    grants = [r for r in records if r.decision == "grant"]
    denies = [r for r in records if r.decision == "deny"]
    assert len(grants) == len(valid)
    # The attacker's own attempts are answered (refused above) and each one recorded.
    assert len(denies) == len(refused)
    for record in denies:
        for text in (record.reason, record.client_name, record.client_lang,
                     record.client_version, record.principal):
            assert text.isprintable(), text
            text.encode("utf-8")  # raises on a lone surrogate
        assert len(record.client_name) <= MAX_CLIENT_NAME
        assert len(record.client_lang) <= MAX_CLIENT_LANG
        assert record.reason_code != "audit_unavailable"


async def test_client_text_is_escaped_not_dropped(hostile_stack: Stack,
                                                  audit_url: str) -> None:
    fields = {"name": "a\x00b\\c", "lang": "l" * 40}
    assert "Authorization Violation" in await raw_connect(_port(hostile_stack), fields, "")
    (record,) = _records(audit_url)
    assert record.client_name == "a\\x00b\\\\c"
    assert record.client_lang.startswith("l" * 16) and record.client_lang.endswith(
        "chars]") and len(record.client_lang) <= MAX_CLIENT_LANG


async def test_a_newline_in_a_token_cannot_forge_a_log_line(
        hostile_stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    fields, envelope = HOSTILE["newline-token-iss"]
    formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    with caplog.at_level(logging.INFO, logger="gateway"):
        assert "Authorization Violation" in await raw_connect(
            _port(hostile_stack), fields, envelope)
    lines = [formatter.format(r) for r in caplog.records if "deny" in r.getMessage()]
    assert lines, "the deny was not logged"
    for line in lines:
        assert "\n" not in line and "forged-decision" in line  # escaped, still visible
