"""The audit API under hostile input, on SQLite and the real PostgreSQL.

Every query and path parameter of every endpoint (read from the app's own OpenAPI
document, so a new one is covered when it is added) gets malformed values: huge,
negative and forged cursors, dates out of range or with junk zones, NUL bytes, 60 kB
strings, bytes that are not UTF-8. Property: never a 5xx, and an error body echoes at
most a bounded, escaped piece of the input. The CSV export is opened as a spreadsheet
would: no cell may start like a formula. Records are written by the real audit writer;
requests go through the whole ASGI app in-process.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from gateway.api.app import create_app
from gateway.api.auth import ApiAuthenticator, token_digest
from gateway.api.csv_export import FORMULA_STARTS
from gateway.api.problems import MAX_ECHO
from gateway.audit.chain import CheckpointSigner
from gateway.audit.record import AuditRecord
from gateway.audit.store import MAX_CURSOR_SEQ, AuditStore, encode_cursor
from gateway.audit.writer import AuditWriter
from gateway.policy.reload import PolicyHolder
from tests.integration.harness import policy_yaml

pytestmark = pytest.mark.integration
TOKEN = "hostile-input-admin-token"
HOSTILE_PREFIXES = {"equals": "=", "plus": "+", "minus": "-", "at": "@", "tab": "\t",
                    "cr": "\r"}
FORMULA = '=HYPERLINK("http://x","y")'


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    store: AuditStore
    records: list[AuditRecord]


def _record(index: int, **fields: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "decision_id": f"d{index:04d}", "decided_at": time.time(), "decision": "deny",
        "reason_code": "no_matching_policy", "reason": "no policy matched",
        "gateway_instance": "gw-input", "latency_ms": 1.0, "method": "oidc",
        "principal": "https://idp#worker", "dag_id": "etl", "task_id": "load",
        "client_name": "worker", **fields}
    return AuditRecord(**values)


def _hostile_records() -> list[AuditRecord]:
    """One record per (field, formula-starting character), and one benign record."""
    records = [_record(0)]
    for field in ("client_name", "principal", "reason"):
        for name, start in HOSTILE_PREFIXES.items():
            records.append(_record(len(records), **{field: f"{start}{FORMULA} {name}"}))
    return records


async def _write(store: AuditStore, records: list[AuditRecord]) -> None:
    writer = AuditWriter(store, instance="gw-input")
    try:
        for record in records:  # one at a time: the store order is the list order
            await writer.write(record)
    finally:
        writer.close()


@pytest.fixture
async def api(store: AuditStore, tmp_path: Path) -> AsyncIterator[Api]:
    records = _hostile_records()
    await _write(store, records)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "etl.yaml").write_text(policy_yaml("https://idp.example"))
    app = create_app(store, policies=PolicyHolder(policies),
                     authenticator=ApiAuthenticator(admin_digests=[token_digest(TOKEN)],
                                                    auditor_digests=[]),
                     checkpoint_signer=CheckpointSigner.generate())
    # raise_app_exceptions=False: an unhandled error must be seen as the 500 a client gets.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield Api(app, client, store, records)


# -- CSV injection ----------------------------------------------------------------------------

async def test_csv_export_neutralises_cells_that_start_like_a_formula(api: Api) -> None:
    response = await api.client.get("/v1/grants/export", params={"format": "csv"})
    assert response.status_code == 200, response.text
    rows = {r["decision_id"]: r for r in csv.DictReader(io.StringIO(response.text,
                                                                    newline=""))}
    assert len(rows) == len(api.records)
    for record in api.records:
        row = rows[record.decision_id]
        for field in ("client_name", "principal", "reason"):
            stored: str = getattr(record, field)
            expected = f"'{stored}" if stored.startswith(FORMULA_STARTS) else stored
            assert row[field] == expected, (field, stored)
    every_cell = [cell for row in rows.values() for cell in row.values()]
    assert not [c for c in every_cell if c.startswith(FORMULA_STARTS)]
    assert rows["d0000"]["client_name"] == "worker"  # benign text is untouched


async def test_json_lines_export_keeps_the_raw_text(api: Api) -> None:
    response = await api.client.get("/v1/grants/export", params={"format": "jsonl"})
    lines = [json.loads(line) for line in response.text.splitlines()]
    names = {line["decision_id"]: line["client"]["name"] for line in lines}
    assert names == {r.decision_id: r.client_name for r in api.records}
    assert '=HYPERLINK(\\"http://x\\"' in response.text  # JSON-escaped, not prefixed


# -- malformed parameters ---------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    method: str
    path: str
    name: str
    where: str

    def url(self, value: str | bytes) -> str:
        encoded = quote_from_bytes(value, safe="") if isinstance(value, bytes) \
            else quote(value, safe="")
        if self.where == "path":
            return self.path.replace("{" + self.name + "}", encoded)
        return f"{self.path}?{self.name}={encoded}"


def _targets(app: FastAPI) -> list[Target]:
    """Every query and path parameter of every operation the API documents."""
    return [Target(method.upper(), path, param["name"], param["in"])
            for path, operations in app.openapi()["paths"].items()
            for method, operation in operations.items()
            for param in operation.get("parameters", ())
            if param["in"] in ("query", "path")]


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HOSTILE: dict[str, str | bytes] = {
    "huge-number": "99999999999999999999999",
    "negative": "-1",
    "zero": "0",
    "float": "1e309",
    "nan": "NaN",
    "empty": "",
    "nul": "a\0b",
    "nul-only": "\0",
    "long-60k": "x" * 60_000,
    "long-digits": "9" * 4000,
    "not-utf8": b"\xff\xfe\xfd",
    "control-characters": "\x01\x1b[31m\r\n",
    "cursor-garbage-base64": "!!!***",
    "cursor-huge-seq": encode_cursor(10**30),
    "cursor-seq-past-int64": encode_cursor(MAX_CURSOR_SEQ + 1),
    "cursor-negative-seq": _cursor(b"seq:-5"),
    "cursor-fullwidth-digit": _cursor("seq:\uff11".encode()),
    "cursor-superscript-digit": _cursor("seq:\u00b2".encode()),
    "cursor-not-utf8": _cursor(b"seq:\xff"),
    "cursor-other-kind": _cursor(b"id:5"),
    "date-year-0": "0000-01-01T00:00:00Z",
    "date-year-1-naive": "0001-01-01T00:00:00",
    "date-year-9999-naive": "9999-12-31T23:59:59",
    "date-year-10000": "10000-01-01T00:00:00Z",
    "date-month-13": "2024-13-01T00:00:00Z",
    "date-tz-junk": "2024-01-01T00:00:00+99:99",
    "date-tz-name": "2024-01-01T00:00:00 Europe/Paris",
    "date-tz-max": "9999-12-31T23:59:59-23:59",
    "date-unix-huge": "1" + "0" * 30,
    "decision-unknown": "maybe",
    "format-unknown": "xlsx",
    "sql-quote": "' OR 1=1 --",
    "like-wildcards": "%_\\",
}


def _assert_refused_safely(response: httpx.Response, sent: str | bytes) -> None:
    assert response.status_code < 500, response.text[:300]
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert len(response.content) < 4 * 1024, "an error body must not grow with the input"
    text = sent.decode("latin-1") if isinstance(sent, bytes) else sent
    if len(text) > MAX_ECHO:
        assert text[: MAX_ECHO + 1] not in response.text


async def _send(api: Api, target: Target, value: str | bytes) -> httpx.Response:
    return await api.client.request(target.method, target.url(value))


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_every_parameter_refuses_a_hostile_value_without_a_server_error(
        api: Api, case: str) -> None:
    targets = _targets(api.app)
    assert {(t.path, t.name) for t in targets} >= {
        ("/v1/grants", "cursor"), ("/v1/grants", "limit"), ("/v1/grants", "since"),
        ("/v1/grants/export", "format"), ("/v1/grants/summary", "until"),
        ("/v1/grants/{decision_id}", "decision_id"), ("/v1/audit/purge", "older_than_days")}
    for target in targets:
        response = await _send(api, target, HOSTILE[case])
        _assert_refused_safely(response, HOSTILE[case])


hostile_text = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=200),
    st.integers().map(str),
    st.binary(max_size=40).map(lambda raw: _cursor(b"seq:" + raw)),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: _cursor(f"seq:{n}".encode())),
    st.datetimes().map(lambda d: d.isoformat()) | st.from_regex(
        r"\A-?\d{1,6}-\d{1,3}-\d{1,3}(T\d\d:\d\d(:\d\d)?)?([+-]\d\d:?\d\d|Z|\w+)?\Z"),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), value=hostile_text)
async def test_no_value_of_any_parameter_is_a_server_error(
        api: Api, data: st.DataObject, value: str) -> None:
    target = data.draw(st.sampled_from(_targets(api.app)), label="target")
    _assert_refused_safely(await _send(api, target, value), value)


# -- one clear error per malformed value ------------------------------------------------------

REFUSALS = [
    pytest.param("/v1/grants", {"cursor": encode_cursor(10**30)}, 400, "invalid cursor",
                 id="cursor-huge"),
    pytest.param("/v1/grants", {"cursor": "99999999999999999999999"}, 400, "invalid cursor",
                 id="cursor-huge-digits"),
    pytest.param("/v1/grants", {"cursor": encode_cursor(MAX_CURSOR_SEQ + 1)}, 400,
                 "invalid cursor", id="cursor-past-int64"),
    pytest.param("/v1/grants", {"cursor": _cursor("seq:\uff11".encode())}, 400,
                 "invalid cursor", id="cursor-fullwidth-digit"),
    pytest.param("/v1/grants", {"dag": "etl\0"}, 422,
                 "invalid query parameter `dag`: must not contain a NUL character",
                 id="nul-dag"),
    pytest.param("/v1/grants/summary", {"policy": "\0"}, 422, "`policy`: must not contain",
                 id="nul-policy"),
    pytest.param("/v1/grants/export", {"principal": "a\0", "format": "csv"}, 422,
                 "`principal`: must not contain", id="nul-export"),
    pytest.param("/v1/grants/d0000%00", {}, 422, "`decision_id`: must not contain",
                 id="nul-decision-id"),
    pytest.param("/v1/grants", {"limit": "0"}, 422, "invalid query parameter `limit`",
                 id="limit-zero"),
    pytest.param("/v1/grants", {"limit": "1001"}, 422, "less than or equal to 1000",
                 id="limit-over"),
    pytest.param("/v1/grants", {"since": "2024-01-01T00:00:00+99:00"}, 422,
                 "invalid query parameter `since`", id="since-tz-junk"),
    pytest.param("/v1/grants", {"decision": "maybe"}, 422, "`decision`: input should be",
                 id="decision-unknown"),
    pytest.param("/v1/grants/export", {"format": "xlsx"}, 422, "`format`: input should be",
                 id="format-unknown"),
    pytest.param("/v1/grants", {"dag": "x" * 5000}, 422, "at most 4096 characters",
                 id="filter-too-long"),
]


@pytest.mark.parametrize(("path", "params", "status", "message"), REFUSALS)
async def test_each_malformed_value_gets_a_clear_error(
        api: Api, path: str, params: dict[str, str], status: int, message: str) -> None:
    response = await api.client.get(path, params=params)
    assert response.status_code == status, response.text[:300]
    assert message in response.json()["detail"]


async def test_purge_refuses_a_number_of_days_past_a_century(api: Api) -> None:
    response = await api.client.post("/v1/audit/purge",
                                     params={"older_than_days": "9" * 400})
    assert response.status_code == 422 and "`older_than_days`" in response.json()["detail"]
    assert api.store.count() == len(api.records)


async def test_an_error_echoes_a_bounded_escaped_piece_of_the_input(api: Api) -> None:
    sent = "\0" + "<script>" * 4000
    response = await api.client.get("/v1/grants", params={"dag": sent})
    problem = response.json()["errors"][0]
    assert (problem["in"], problem["name"]) == ("query", "dag")
    assert problem["got"].startswith("\\x00<script>")
    assert problem["got"].endswith(" chars]")
    assert len(problem["got"]) <= MAX_ECHO


async def test_the_largest_cursor_and_dates_at_the_edges_are_answered(api: Api) -> None:
    for params in ({"cursor": encode_cursor(MAX_CURSOR_SEQ)},
                   {"since": "0001-01-01T00:00:00", "until": "9999-12-31T23:59:59"},
                   {"since": "0001-01-01T00:00:00+23:59"}):
        response = await api.client.get("/v1/grants", params=params)
        assert response.status_code == 200, (params, response.text[:300])
        assert len(response.json()["items"]) == len(api.records), params


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server's local zone 14 hours from UTC, so reading a zoneless time as local
    time would be noticed."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
async def test_a_time_without_a_zone_is_utc(api: Api) -> None:
    newest = max(r.decided_at for r in api.records)
    naive = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(newest + 1))
    response = await api.client.get("/v1/grants", params={"since": naive})
    assert response.json()["items"] == []
    response = await api.client.get("/v1/grants", params={"until": naive})
    assert len(response.json()["items"]) == len(api.records)


async def test_an_export_whose_query_fails_is_not_a_complete_looking_200(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_: object, **__: object) -> None:
        raise OperationalError("SELECT", {}, Exception("database is gone"))

    monkeypatch.setattr(api.store, "page", unavailable)
    response = await api.client.get("/v1/grants/export", params={"format": "csv"})
    assert response.status_code >= 500

