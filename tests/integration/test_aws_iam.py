"""AWS IAM workers through the real nats-server and gateway, with STS served by moto.

The worker presigns with boto3/botocore exactly as in production; the gateway sends the
rebuilt request to its configured endpoint (a moto server on a free port). STS faults
(unreachable, slow, garbage, refusal, redirect) come from loopback servers that misbehave
on purpose.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from gateway.client import AwsIamCredentials, aws_iam_envelope, aws_iam_proof
from gateway.client import connect as gateway_connect
from gateway.dev.moto_sts import ACCOUNT, REGION, MotoSts
from gateway.envelope import Scope, build_envelope
from gateway.errors import GatewayError
from gateway.identity.aws_sts import AwsIamSettings, StsVerifier
from tests.integration.harness import Stack, Violations, assert_publish_scope, connect

pytestmark = pytest.mark.integration
GATEWAY_ID = "nats-gateway-test"


@pytest.fixture(scope="module")
def sts() -> Iterator[MotoSts]:  # signatures really checked: see gateway/dev/moto_sts.py
    server = MotoSts()
    try:
        yield server
    finally:
        server.close()


def _envelope(sts_url: str, session: Any, task: str = "load", **kwargs: Any) -> str:
    return aws_iam_envelope(dag_id="etl", task_id=task, gateway_id=GATEWAY_ID, region=REGION,
                            sts_endpoint=sts_url, session=session, **kwargs)


IAM_POLICY = textwrap.dedent(f"""\
    version: 1
    policies:
      - id: prod-role
        match:
          aws_iam:
            account: "{ACCOUNT}"
            role: "arn:aws:iam::{ACCOUNT}:role/airflow-prod-*"
        scopes: [{{dag: etl}}]
        permissions:
          publish: {{allow: ["prod.{{dag_id}}.{{task_id}}.>"]}}
          subscribe: {{allow: ["prod.{{dag_id}}.{{task_id}}.>"]}}
    """)


async def _start(stack: Stack, sts_url: str, *, ttl: int = 900, **aws: Any) -> None:
    (stack.tmp / "policies" / "iam.yaml").write_text(
        IAM_POLICY + f"    ttl_seconds: {ttl}\n")
    settings = {"enabled": True, "sts_endpoint": sts_url, "region": REGION,
                "gateway_id": GATEWAY_ID, "allowed_accounts": [ACCOUNT], **aws}
    await stack.start_gateway(aws=settings)


@pytest.fixture
async def iam(stack: Stack, sts: MotoSts) -> AsyncIterator[Stack]:
    await _start(stack, sts.url)
    try:
        yield stack
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


async def _records(stack: Stack, **params: str) -> list[dict[str, Any]]:
    async with stack.api() as api:
        items: list[dict[str, Any]] = (await api.get("/v1/grants", params=params)).json()[
            "items"]
    return items


async def test_an_iam_role_session_gets_its_task_scope(iam: Stack, sts: MotoSts) -> None:
    session = sts.role_session("airflow-prod-worker", "i-0abc")
    errors = Violations()
    nc = await connect(iam.nats_url, _envelope(sts.url, session), errors)
    try:
        await assert_publish_scope(nc, errors, subscribe="prod.etl.load.>",
                                   own="prod.etl.load.done", foreign="prod.etl.extract.done")
    finally:
        await nc.close()
    [grant] = await _records(iam, decision="grant")
    assert grant["method"] == "aws_iam"
    async with iam.api() as api:
        metrics = (await api.get("/metrics")).text
    assert 'nats_gateway_sts_calls_total{result="ok"} 1.0' in metrics
    assert "nats_gateway_sts_call_seconds_count 1.0" in metrics
    assert grant["principal"] == f"arn:aws:iam::{ACCOUNT}:role/airflow-prod-worker#i-0abc"
    assert grant["policy_ids"] == ["prod-role"]
    assert grant["identity_fingerprint"].startswith("sha256:")


async def _denied_with(stack: Stack, envelope: str, code: str) -> dict[str, Any]:
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await connect(stack.nats_url, envelope)
    denials = [r for r in await _records(stack, decision="deny") if r["reason_code"] == code]
    assert denials, await _records(stack, decision="deny")
    return denials[0]


async def test_a_proof_is_single_use(iam: Stack, sts: MotoSts) -> None:
    envelope = _envelope(sts.url, sts.role_session("airflow-prod-worker", "i-1"))
    nc = await connect(iam.nats_url, envelope)
    await nc.close()
    await _denied_with(iam, envelope, "replayed_aws_proof")


async def test_other_roles_and_gateways_are_refused(iam: Stack, sts: MotoSts) -> None:
    staging = sts.role_session("airflow-staging-worker", "i-2")
    await _denied_with(iam, _envelope(sts.url, staging), "no_matching_policy")
    prod = sts.role_session("airflow-prod-worker", "i-3")
    other_gateway = aws_iam_envelope(dag_id="etl", task_id="load", gateway_id="someone-else",
                                     region=REGION, sts_endpoint=sts.url, session=prod)
    await _denied_with(iam, other_gateway, "wrong_gateway_id")
    wrong_region = aws_iam_envelope(dag_id="etl", task_id="load", gateway_id=GATEWAY_ID,
                                    region="eu-west-1", sts_endpoint=sts.url, session=prod)
    await _denied_with(iam, wrong_region, "wrong_region")


async def test_an_untrusted_account_is_refused(stack: Stack, sts: MotoSts) -> None:
    await _start(stack, sts.url, allowed_accounts=["999999999999"])
    try:
        session = sts.role_session("airflow-prod-worker", "i-4")
        denial = await _denied_with(stack, _envelope(sts.url, session), "account_not_allowed")
        assert ACCOUNT in denial["reason"]
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


class _Misbehaving(BaseHTTPRequestHandler):
    mode = "garbage"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.mode == "slow":
            time.sleep(3)
        if self.mode == "redirect":
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
            return
        status, ctype, body = {
            "garbage": (200, "text/html", b"<html>captive portal</html>"),
            "slow": (200, "text/xml", b""),
            "refuse": (403, "text/xml", b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/'
                       b'2011-06-15/"><Error><Code>SignatureDoesNotMatch</Code></Error>'
                       b"</ErrorResponse>"),
            "bomb": (200, "text/xml", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">'
                     b"]><x>&a;</x>"),
        }[self.mode]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def misbehaving() -> Iterator[tuple[str, type[_Misbehaving]]]:
    handler = type("Handler", (_Misbehaving,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode,code", [
    ("garbage", "sts_bad_response"), ("bomb", "sts_bad_response"),
    ("refuse", "sts_rejected"), ("redirect", "sts_unavailable"), ("slow", "sts_timeout"),
])
async def test_sts_faults_deny_quickly_with_a_reason(
        stack: Stack, sts: MotoSts, misbehaving: tuple[str, type[_Misbehaving]],
        mode: str, code: str) -> None:
    url, handler = misbehaving
    handler.mode = mode
    await _start(stack, url, timeout_seconds=0.5)
    try:
        # Signed for the misbehaving endpoint with real moto credentials.
        session = sts.role_session("airflow-prod-worker", f"i-{mode}")
        started = time.monotonic()
        await _denied_with(stack, _envelope(url, session), code)
        assert time.monotonic() - started < 2.0  # inside nats-server's auth timeout
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


async def test_unreachable_sts_denies(stack: Stack, sts: MotoSts) -> None:
    closed = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    await _start(stack, closed)
    try:
        session = sts.role_session("airflow-prod-worker", "i-down")
        await _denied_with(stack, _envelope(closed, session), "sts_unreachable")
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


def _flip_signature(proof: dict[str, Any]) -> None:
    auth = proof["headers"]["Authorization"]
    last = auth[-1]
    proof["headers"]["Authorization"] = auth[:-1] + ("0" if last != "0" else "1")


def _in(**delta: float) -> str:
    """An X-Amz-Date that far from now."""
    return (datetime.now(UTC) + timedelta(**delta)).strftime("%Y%m%dT%H%M%SZ")


def _unsign_gateway_id(proof: dict[str, Any]) -> None:
    proof["headers"]["Authorization"] = proof["headers"]["Authorization"].replace(
        ";x-nats-gateway-id", "")


TAMPERING = {
    "tampered-signature": (_flip_signature, "sts_rejected"),
    "another-action": (lambda p: p.update(body="Action=GetSessionToken&Version=2011-06-15"),
                       "bad_aws_proof"),
    "extra-parameter": (lambda p: p.update(
        body="Action=GetCallerIdentity&Version=2011-06-15&Action=AssumeRole"), "bad_aws_proof"),
    "query-string-url": (lambda p: p.update(url="http://evil.example/?Action=GetCallerIdentity"),
                         "bad_aws_proof"),
    "unsigned-gateway-id": (_unsign_gateway_id, "bad_aws_proof"),
    "wrong-gateway-id": (lambda p: p["headers"].update({"X-Nats-Gateway-Id": "other"}),
                         "wrong_gateway_id"),
    "stale-date": (lambda p: p["headers"].update({"X-Amz-Date": "20200101T000000Z"}),
                   "stale_aws_proof"),
    # A forged proof dated 14 minutes ahead would stay "fresh" for 29 minutes.
    "future-date": (lambda p: p["headers"].update({"X-Amz-Date": _in(minutes=14)}),
                    "future_aws_proof"),
    "unknown-amz-header": (lambda p: p["headers"].update({"X-Amz-Target": "sts.AssumeRole"}),
                           "bad_aws_proof"),
}


@pytest.mark.parametrize("case", list(TAMPERING), ids=list(TAMPERING))
async def test_tampered_proofs_are_denied_and_audited(iam: Stack, sts: MotoSts,
                                                      case: str) -> None:
    mutate, code = TAMPERING[case]
    session = sts.role_session("airflow-prod-worker", f"t-{case}")
    proof = json.loads(aws_iam_proof(gateway_id=GATEWAY_ID, region=REGION,
                                     sts_endpoint=sts.url, session=session))
    mutate(proof)
    envelope = build_envelope("aws_iam", json.dumps(proof), Scope("etl", "load"))
    denial = await _denied_with(iam, envelope, code)
    assert denial["method"] == "aws_iam" and denial["dag_id"] == "etl"
    assert proof["headers"]["Authorization"][-64:] not in json.dumps(denial)  # no secrets
    assert proof["headers"]["X-Amz-Security-Token"][:40] not in json.dumps(denial)


async def test_a_worker_reconnects_with_a_fresh_single_use_proof(stack: Stack,
                                                                 sts: MotoSts) -> None:
    """Grants last 2 s; each reconnect must sign a new proof, since a proof is single use."""
    await _start(stack, sts.url, ttl=2)
    source = AwsIamCredentials(gateway_id=GATEWAY_ID, region=REGION, sts_endpoint=sts.url,
                               session=sts.role_session("airflow-prod-worker", "i-long"))
    reconnects: list[float] = []

    async def on_reconnect() -> None:
        reconnects.append(time.monotonic())

    async def on_error(exc: Exception) -> None:
        pass

    nc = await gateway_connect(stack.nats_url, source, scope=Scope("etl", "load"),
                               reconnected_cb=on_reconnect, error_cb=on_error,
                               reconnect_time_wait=0.1)
    try:
        sub = await nc.subscribe("prod.etl.load.>")
        deadline = time.monotonic() + 10
        while len(reconnects) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(reconnects) >= 2
        await nc.publish("prod.etl.load.after", b"still here")
        assert (await sub.next_msg(timeout=2)).data == b"still here"
    finally:
        await nc.close()
        assert stack.gateway is not None
        await stack.gateway.stop()
    grants = [r for r in await _records_direct(stack) if r.decision == "grant"]
    assert len(grants) >= 3
    assert len({r.identity_fingerprint for r in grants}) == len(grants)  # all fresh proofs


async def _records_direct(stack: Stack) -> list[Any]:
    from gateway.audit.store import AuditStore, DecisionQuery

    store = AuditStore(f"sqlite:///{stack.tmp / 'audit.db'}")
    try:
        return list(store.query(DecisionQuery(limit=1000)))
    finally:
        store.close()


def _verifier(sts_url: str, http: httpx.AsyncClient, *, clock_offset: float = 0.0,
              **settings: Any) -> StsVerifier:
    """The gateway's own verifier, on its own clock (shifted to date proofs ahead)."""
    config = AwsIamSettings(enabled=True, sts_endpoint=sts_url, region=REGION,
                            gateway_id=GATEWAY_ID, allowed_accounts=(ACCOUNT,), **settings)
    return StsVerifier(config, http, clock=lambda: time.time() + clock_offset)


def _proof(sts_url: str, session: Any) -> str:
    return aws_iam_proof(gateway_id=GATEWAY_ID, region=REGION, sts_endpoint=sts_url,
                         session=session)


async def _refusal(verifier: StsVerifier, proof: str) -> str:
    with pytest.raises(GatewayError) as refused:
        await verifier.verify(proof)
    return refused.value.code


async def test_a_proof_dated_ahead_is_accepted_only_within_the_clock_skew(
        sts: MotoSts) -> None:
    """Seen from a gateway clock 30 s (or 2 min) behind, a fresh proof is dated ahead."""
    session = sts.role_session("airflow-prod-worker", "i-skew")
    async with httpx.AsyncClient() as http:
        late = _verifier(sts.url, http, clock_offset=-120)
        assert await _refusal(late, _proof(sts.url, session)) == "future_aws_proof"
        strict = _verifier(sts.url, http, clock_offset=-30, max_clock_skew_seconds=10)
        assert await _refusal(strict, _proof(sts.url, session)) == "future_aws_proof"
        skewed = _verifier(sts.url, http, clock_offset=-30)
        identity = await skewed.verify(_proof(sts.url, session))  # STS accepts it too
    assert (identity.subject, identity.claims["role_name"]) == ("i-skew", "airflow-prod-worker")


async def _until(condition: Any, *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _forge(proof: dict[str, Any]) -> None:
    """A random signature, as anyone can make: the gateway id is public."""
    auth = proof["headers"]["Authorization"]
    proof["headers"]["Authorization"] = auth[:-64] + secrets.token_hex(32)


async def test_forged_proofs_cannot_fill_the_replay_cache(stack: Stack, sts: MotoSts) -> None:
    """Issue 18: twice the cache's capacity in forged proofs, then a valid login."""
    await _start(stack, sts.url, replay_cache_size=3)
    try:
        for n in range(6):
            proof = json.loads(_proof(sts.url, sts.role_session("airflow-prod-worker", f"f{n}")))
            _forge(proof)
            if n == 5:  # dated ahead as well: refused before it could take a slot
                proof["headers"]["X-Amz-Date"] = _in(minutes=14)
            envelope = build_envelope("aws_iam", json.dumps(proof), Scope("etl", "load"))
            with pytest.raises(Exception, match=r"[Aa]uthorization"):
                await connect(stack.nats_url, envelope)
        codes = [r["reason_code"] for r in await _records(stack, decision="deny")]
        assert sorted(codes) == ["future_aws_proof"] + ["sts_rejected"] * 5
        session = sts.role_session("airflow-prod-worker", "i-after-flood")
        nc = await connect(stack.nats_url, _envelope(sts.url, session))
        await nc.close()
        assert len(await _records(stack, decision="grant")) == 1
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


class _Gate(BaseHTTPRequestHandler):
    """A pass-through to moto that holds each request until the test opens it, so a
    proof can be kept in flight at (the real) STS."""

    upstream = ""
    arrived = 0
    opened: threading.Event

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).arrived += 1
        if not self.opened.wait(10):
            return  # the test gave up; the client has long timed out
        host, port = self.upstream.removeprefix("http://").split(":")
        upstream = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            upstream.request("POST", "/", body, dict(self.headers.items()))
            answer = upstream.getresponse()
            content = answer.read()
            self.send_response(answer.status)
            for name in ("Content-Type", "Content-Length"):
                if answer.getheader(name):
                    self.send_header(name, str(answer.getheader(name)))
            self.end_headers()
            self.wfile.write(content)
        finally:
            upstream.close()


@pytest.fixture
def gate(sts: MotoSts) -> Iterator[tuple[str, type[_Gate]]]:
    handler = type("Gate", (_Gate,), {"upstream": sts.url, "opened": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.opened.set()
        server.shutdown()
        server.server_close()


async def test_a_proof_in_flight_cannot_be_used_twice(
        sts: MotoSts, gate: tuple[str, type[_Gate]]) -> None:
    url, handler = gate
    session = sts.role_session("airflow-prod-worker", "i-twice")
    proof = _proof(url, session)
    async with httpx.AsyncClient() as http:
        verifier = _verifier(url, http, timeout_seconds=5)
        first = asyncio.create_task(verifier.verify(proof))
        await _until(lambda: handler.arrived == 1)  # the first copy is at STS
        assert await _refusal(verifier, proof) == "replayed_aws_proof"
        handler.opened.set()
        identity = await first
        assert await _refusal(verifier, proof) == "replayed_aws_proof"
    assert identity.subject == "i-twice" and handler.arrived == 1


async def test_a_proof_that_was_not_accepted_holds_no_slot(
        sts: MotoSts, gate: tuple[str, type[_Gate]]) -> None:
    """Timed out at STS, refused by STS, or abandoned: the proof used nothing up."""
    url, handler = gate
    session = sts.role_session("airflow-prod-worker", "i-retry")
    async with httpx.AsyncClient() as http:
        verifier = _verifier(url, http, timeout_seconds=0.2, replay_cache_size=1)
        forged = json.loads(_proof(url, session))
        _forge(forged)
        timed_out, abandoned = _proof(url, session), _proof(url, session)
        assert await _refusal(verifier, timed_out) == "sts_timeout"
        cancelled = asyncio.create_task(verifier.verify(abandoned))
        await _until(lambda: handler.arrived == 2)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        handler.opened.set()
        assert await _refusal(verifier, json.dumps(forged)) == "sts_rejected"
        assert await _refusal(verifier, json.dumps(forged)) == "sts_rejected"  # not replayed
        identity = await verifier.verify(timed_out)  # a cache of one: every slot came back
    assert identity.subject == "i-retry"
