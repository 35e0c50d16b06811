"""The audit API over HTTP against a running gateway with real decisions on record:
every filter, cursor pages, CSV and JSON Lines export, the summary, verify, purge, and
authentication (API tokens and OIDC roles: 401 without, 403 for the wrong role)."""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from gateway.api.auth import token_digest
from gateway.client import oidc_envelope
from tests.integration.harness import Stack, connect

pytestmark = pytest.mark.integration
API_AUDIENCE = "nats-gateway-api"


@pytest.fixture
async def api_stack(stack: Stack) -> AsyncIterator[tuple[Stack, str]]:
    auditor_token = secrets.token_urlsafe(24)
    settings = stack.settings().api.model_dump()
    settings.update(
        auditor_token_sha256=[token_digest(auditor_token)],
        oidc={"issuer": {"name": "corp", "issuer": stack.issuer.issuer,
                         "audiences": [API_AUDIENCE], "algorithms": ["RS256"]},
              "roles_claim": "/groups", "auditor_values": ["auditors"],
              "admin_values": ["platform-admins"]})
    await stack.start_gateway(api=settings)
    for task, run in [("load", "r1"), ("load", "r2"), ("extract", "r1"), ("load", "r3")]:
        nc = await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id="etl",
                                                         task_id=task, run_id=run))
        await nc.close()
    for dag in ("billing", "billing", "other"):  # denied: no policy covers them
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id=dag,
                                                        task_id="load"))
    try:
        yield stack, auditor_token
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


def _client(stack: Stack, token: str | None) -> httpx.AsyncClient:
    assert stack.gateway is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.gateway.api_port}",
                             headers=headers)


async def _get(stack: Stack, path: str, **params: Any) -> Any:
    async with _client(stack, stack.admin_token) as api:
        response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_filter(api_stack: tuple[Stack, str]) -> None:
    stack, _ = api_stack
    everything = (await _get(stack, "/v1/grants"))["items"]
    assert len(everything) == 7
    principal = everything[0]["principal"]
    cases: list[tuple[dict[str, Any], int]] = [
        ({"dag": "etl"}, 4), ({"dag": "billing"}, 2), ({"task": "extract"}, 1),
        ({"run": "r1"}, 2), ({"decision": "grant"}, 4), ({"decision": "deny"}, 3),
        ({"method": "oidc"}, 7), ({"method": "aws_iam"}, 0), ({"principal": principal}, 7),
        ({"principal": "nobody"}, 0), ({"policy": "etl-workers"}, 4), ({"policy": "etl"}, 0),
        ({"dag": "etl", "task": "load", "decision": "grant"}, 3),
        ({"reason": "granted"}, 4), ({"reason": "no_matching_policy"}, 3),
        ({"reason": "reply_failed"}, 0),
    ]
    for params, expected in cases:
        items = (await _get(stack, "/v1/grants", **params))["items"]
        assert len(items) == expected, params
    # Times are shown to the microsecond and stored finer: bound them half a millisecond
    # away (decisions here are milliseconds apart).
    newest = datetime.fromisoformat(everything[0]["decided_at"])
    oldest = datetime.fromisoformat(everything[-1]["decided_at"])
    edge = (newest - timedelta(microseconds=500)).isoformat()
    after = (await _get(stack, "/v1/grants", since=edge))["items"]
    assert [i["decision_id"] for i in after] == [everything[0]["decision_id"]]
    before = (await _get(stack, "/v1/grants", until=edge))["items"]
    assert len(before) == 6
    window = (await _get(stack, "/v1/grants", since=(oldest - timedelta(seconds=1)).isoformat(),
                         until=(newest + timedelta(seconds=1)).isoformat()))["items"]
    assert len(window) == 7
    one = await _get(stack, f"/v1/grants/{everything[-1]['decision_id']}")
    assert one == everything[-1]
    async with _client(stack, stack.admin_token) as api:
        assert (await api.get("/v1/grants/nope")).status_code == 404
        assert (await api.get("/v1/grants", params={"decision": "maybe"})).status_code == 422


async def test_cursor_pages_cover_everything_once_in_a_stable_order(
        api_stack: tuple[Stack, str]) -> None:
    stack, _ = api_stack
    everything = [i["decision_id"] for i in (await _get(stack, "/v1/grants"))["items"]]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = await _get(stack, "/v1/grants", **params)
        seen += [i["decision_id"] for i in page["items"]]
        pages += 1
        # A new decision arriving between pages must not shift what the next page holds.
        nc = await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id="etl",
                                                         task_id="load"))
        await nc.close()
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == everything
    async with _client(stack, stack.admin_token) as api:
        bad = await api.get("/v1/grants", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "cursor" in bad.text


async def test_exports_stream_every_record_as_csv_and_json_lines(
        api_stack: tuple[Stack, str]) -> None:
    stack, _ = api_stack
    async with _client(stack, stack.admin_token) as api:
        as_csv = await api.get("/v1/grants/export", params={"format": "csv"})
        as_jsonl = await api.get("/v1/grants/export", params={"format": "jsonl",
                                                              "decision": "deny"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == 7
    assert {"decision_id", "principal", "permissions", "record_hash"} <= set(rows[0])
    granted = [json.loads(r["permissions"]) for r in rows if r["decision"] == "grant"]
    assert len(granted) == 4 and all(p["pub"]["allow"] for p in granted)
    lines = [json.loads(line) for line in as_jsonl.text.splitlines()]
    assert as_jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert len(lines) == 3 and {line["decision"] for line in lines} == {"deny"}


async def test_a_connect_name_that_is_a_formula_is_exported_as_text(
        api_stack: tuple[Stack, str]) -> None:
    stack, _ = api_stack
    formula = '=HYPERLINK("http://x","y")'
    nc = Client()
    await nc.connect(stack.nats_url, name=formula, allow_reconnect=False,
                     max_reconnect_attempts=0, connect_timeout=5,
                     token=oidc_envelope(stack.token(), dag_id="etl", task_id="load"))
    await nc.close()
    async with _client(stack, stack.admin_token) as api:
        as_csv = await api.get("/v1/grants/export", params={"format": "csv"})
        as_jsonl = await api.get("/v1/grants/export", params={"format": "jsonl"})
    names = [r["client_name"] for r in csv.DictReader(io.StringIO(as_csv.text, newline=""))]
    assert names.count(f"'{formula}") == 1 and formula not in names
    raw = [json.loads(line)["client"]["name"] for line in as_jsonl.text.splitlines()]
    assert raw.count(formula) == 1


async def test_summary_counts_per_day_dag_task_and_decision(
        api_stack: tuple[Stack, str]) -> None:
    stack, _ = api_stack
    rows = (await _get(stack, "/v1/grants/summary"))["rows"]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    counts = {(r["dag_id"], r["task_id"], r["decision"]): r["count"] for r in rows}
    assert counts == {("etl", "load", "grant"): 3, ("etl", "extract", "grant"): 1,
                      ("billing", "load", "deny"): 2, ("other", "load", "deny"): 1}
    assert {r["day"] for r in rows} == {today}


async def test_verify_and_policies_are_readable_by_auditors(
        api_stack: tuple[Stack, str]) -> None:
    stack, auditor = api_stack
    async with _client(stack, auditor) as api:
        report = (await api.get("/v1/audit/verify")).json()
        policies = await api.get("/v1/policies")
        docs = await api.get("/openapi.json")
    assert report["ok"] and report["records"] == 7 and report["problems"] == []
    assert policies.status_code == 200
    assert "/v1/grants/export" in docs.json()["paths"]


async def test_authentication_and_roles(api_stack: tuple[Stack, str]) -> None:
    stack, auditor = api_stack
    async with _client(stack, None) as api:
        for path in ("/v1/grants", "/v1/grants/export", "/v1/grants/summary",
                     "/v1/audit/verify", "/v1/policies"):
            response = await api.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/readyz")).status_code == 200
    async with _client(stack, "wrong-token") as api:
        assert (await api.get("/v1/grants")).status_code == 401
    async with _client(stack, auditor) as api:
        assert (await api.get("/v1/grants")).status_code == 200
        denied = await api.post("/v1/audit/purge", params={"older_than_days": 30})
        assert denied.status_code == 403 and "admin" in denied.text
    async with _client(stack, stack.admin_token) as api:
        purged = await api.post("/v1/audit/purge", params={"older_than_days": 30})
        assert purged.status_code == 200 and purged.json()["deleted"] == 0


def _api_token(stack: Stack, **claims: Any) -> str:
    return stack.issuer.mint(subject="alice@example.com", audience=API_AUDIENCE,
                             claims=claims)


async def test_oidc_tokens_get_their_role_from_a_claim(api_stack: tuple[Stack, str]) -> None:
    stack, _ = api_stack
    async with _client(stack, _api_token(stack, groups=["auditors"])) as api:
        assert (await api.get("/v1/grants")).status_code == 200
        assert (await api.post("/v1/audit/purge",
                               params={"older_than_days": 30})).status_code == 403
    async with _client(stack, _api_token(stack, groups=["platform-admins"])) as api:
        assert (await api.post("/v1/audit/purge",
                               params={"older_than_days": 30})).status_code == 200
    async with _client(stack, _api_token(stack, groups=["engineers"])) as api:
        assert (await api.get("/v1/grants")).status_code == 403
    async with _client(stack, _api_token(stack)) as api:  # no groups claim at all
        assert (await api.get("/v1/grants")).status_code == 403
    wrong_audience = stack.issuer.mint(subject="alice", audience="nats-gateway",
                                       claims={"groups": ["platform-admins"]})
    async with _client(stack, wrong_audience) as api:
        assert (await api.get("/v1/grants")).status_code == 401
