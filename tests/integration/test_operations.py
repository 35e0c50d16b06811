"""Operating the gateway: /metrics after real connections, /readyz while nats-server is
away and back (the gateway reconnects by itself), and JSON decision logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import httpx
import pytest

from gateway.audit import writer as audit_writer
from gateway.client import oidc_envelope
from gateway.logs import JsonFormatter
from tests.integration.harness import Stack, connect

pytestmark = pytest.mark.integration


def _open(stack: Stack) -> httpx.AsyncClient:
    assert stack.gateway is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.gateway.api_port}")


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text format; None if it is absent, so a
    check for 0 also checks that the series exists."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name:
            have = ",".join(sorted((match[2] or "").split(","))) if match[2] else ""
            if have == wanted:
                return float(match[3])
    return None


async def test_metrics_expose_the_named_series_after_real_connections(
        running: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow fsync on a busy disk would pause inline commits (counted below).
    monkeypatch.setattr(audit_writer, "_INLINE_SLOW_SECONDS", 3600.0)
    stack = running
    tokens = [stack.token(), stack.token(), stack.token(audience="other")]
    for token, task in zip(tokens[:2], ("load", "extract"), strict=True):
        nc = await connect(stack.nats_url, oidc_envelope(token, dag_id="etl", task_id=task))
        await nc.close()
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await connect(stack.nats_url, oidc_envelope(tokens[2], dag_id="etl", task_id="load"))
    async with _open(stack) as api:
        response = await api.get("/metrics")  # no credentials: an internal scrape target
    assert response.status_code == 200
    text = response.text
    assert _sample(text, "nats_gateway_decisions_total", result="grant", method="oidc",
                   reason="granted") == 2
    assert _sample(text, "nats_gateway_decisions_total", result="deny", method="oidc",
                   reason="wrong_audience") == 1
    for step in ("identity", "policy", "sign", "audit", "total"):
        assert (_sample(text, "nats_gateway_decision_step_seconds_count", step=step)
                or 0) >= 2, step
    assert (_sample(text, "nats_gateway_jwks_fetches_total", issuer=stack.issuer.issuer,
                    result="ok") or 0) >= 1
    assert _sample(text, "nats_gateway_audit_records_written_total") == 3
    # Connects made one at a time: each record but the chain's first is committed inline.
    inline = _sample(text, "nats_gateway_audit_inline_commits_total") or 0
    assert 2 <= inline <= 3
    assert (_sample(text, "nats_gateway_audit_commits_total") or 0) >= 1
    assert _sample(text, "nats_gateway_audit_write_failures_total") == 0
    assert _sample(text, "nats_gateway_policy_reloads_total", result="failed") == 0
    assert _sample(text, "nats_gateway_policy_stale") == 0
    assert _sample(text, "nats_gateway_policies_loaded") == 1
    assert _sample(text, "nats_gateway_nats_connected") == 1
    assert _sample(text, "nats_gateway_in_flight_requests") == 0
    assert "# TYPE nats_gateway_sts_calls_total counter" in text  # values: test_aws_iam
    assert not any(token.rsplit(".", 1)[1] in text for token in tokens)


async def _readyz_until(api: httpx.AsyncClient, status: int, *,
                        seconds: float) -> httpx.Response:
    for _ in range(int(seconds / 0.05)):
        response = await api.get("/readyz")
        if response.status_code == status:
            return response
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never answered {status}: {response.json()}")


async def test_readyz_tracks_nats_and_the_gateway_comes_back_by_itself(
        running: Stack) -> None:
    stack = running
    async with _open(stack) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 200 and all(ready.json()["checks"].values())
        stack.nats_server.kill()
        away = await _readyz_until(api, 503, seconds=5)
        assert away.json()["checks"]["nats_connected"] is False
        assert away.json()["status"] == "not_ready"
        stack.nats_server.restart()
        await _readyz_until(api, 200, seconds=10)
    nc = await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id="etl",
                                                     task_id="load"))
    await nc.close()  # served again, with no gateway restart


async def test_one_json_log_line_per_decision_without_secrets(
        running: Stack, caplog: pytest.LogCaptureFixture) -> None:
    stack = running
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
