"""Operating the gateway: /metrics after real connections, /readyz while nats-server is
away and back (the gateway reconnects by itself), and JSON decision logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.client import oidc_envelope
from gateway.logs import JsonFormatter
from tests.integration.harness import Stack, connect

pytestmark = pytest.mark.integration


@pytest.fixture
async def running_gw(stack: Stack) -> AsyncIterator[Stack]:
    await stack.start_gateway()
    try:
        yield stack
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


def _open(stack: Stack) -> httpx.AsyncClient:
    assert stack.gateway is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.gateway.api_port}")


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text format (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name:
            have = ",".join(sorted((match[2] or "").split(","))) if match[2] else ""
            if have == wanted:
                return float(match[3])
    return 0.0


async def test_metrics_expose_the_named_series_after_real_connections(
        running_gw: Stack) -> None:
    stack = running_gw
    for task in ("load", "extract"):
        nc = await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id="etl",
                                                         task_id=task))
        await nc.close()
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await connect(stack.nats_url, oidc_envelope(stack.token(audience="other"),
                                                    dag_id="etl", task_id="load"))
    async with _open(stack) as api:
        response = await api.get("/metrics")  # no credentials: an internal scrape target
    assert response.status_code == 200
    text = response.text
    assert _sample(text, "nats_gateway_decisions_total", result="grant", method="oidc",
                   reason="granted") == 2
    assert _sample(text, "nats_gateway_decisions_total", result="deny", method="oidc",
                   reason="wrong_audience") == 1
    for step in ("identity", "policy", "sign", "audit", "total"):
        assert _sample(text, "nats_gateway_decision_step_seconds_count", step=step) >= 2, step
    assert _sample(text, "nats_gateway_jwks_fetches_total", issuer=stack.issuer.issuer,
                   result="ok") >= 1
    assert _sample(text, "nats_gateway_audit_records_written_total") == 3
    assert _sample(text, "nats_gateway_audit_write_failures_total") == 0
    assert _sample(text, "nats_gateway_policy_reloads_total", result="failed") == 0
    assert _sample(text, "nats_gateway_policy_stale") == 0
    assert _sample(text, "nats_gateway_policies_loaded") == 1
    assert _sample(text, "nats_gateway_nats_connected") == 1
    assert _sample(text, "nats_gateway_in_flight_requests") == 0
    assert "nats_gateway_sts_calls_total" in text or "nats_gateway_sts_call_seconds" in text
    assert stack.token() not in text


async def test_readyz_tracks_nats_and_the_gateway_comes_back_by_itself(
        running_gw: Stack) -> None:
    stack = running_gw
    async with _open(stack) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 200 and all(ready.json()["checks"].values())
        stack.nats_server.kill()
        for _ in range(100):
            away = await api.get("/readyz")
            if away.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert away.status_code == 503
        assert away.json()["checks"]["nats_connected"] is False
        assert away.json()["status"] == "not_ready"
        stack.nats_server.restart()
        for _ in range(200):
            back = await api.get("/readyz")
            if back.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert back.status_code == 200, back.json()
    nc = await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id="etl",
                                                     task_id="load"))
    await nc.close()  # served again, with no gateway restart


async def test_one_json_log_line_per_decision_without_secrets(
        running_gw: Stack, caplog: pytest.LogCaptureFixture) -> None:
    stack = running_gw
    token = stack.token()
    with caplog.at_level(logging.INFO, logger="gateway.callout.handler"):
        nc = await connect(stack.nats_url, oidc_envelope(token, dag_id="etl", task_id="load"))
        await nc.close()
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            await connect(stack.nats_url, oidc_envelope(token, dag_id="billing",
                                                        task_id="load"))
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records
             if r.name == "gateway.callout.handler" and hasattr(r, "decision")]
    assert [line["result"] for line in lines] == ["grant", "deny"]
    assert lines[1]["reason_code"] == "no_matching_policy"
    assert all(len(line["decision_id"]) == 32 and line["level"] == "info" for line in lines)
    assert lines[0]["dag_id"] == "etl" and lines[0]["policy_ids"] == ["etl-workers"]
    signature = token.rsplit(".", 1)[1]
    assert all(signature not in json.dumps(line) and token not in json.dumps(line)
               for line in lines)
