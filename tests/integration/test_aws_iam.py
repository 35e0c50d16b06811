"""AWS IAM workers through the real nats-server and gateway, with STS served by moto.

The worker presigns with boto3/botocore exactly as in production; the gateway sends the
rebuilt request to its configured endpoint (a moto server on a free port). STS faults
(unreachable, slow, garbage, refusal, redirect) come from loopback servers that misbehave
on purpose.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from gateway.client import aws_iam_envelope
from tests.integration.harness import Stack, Violations, connect

pytestmark = pytest.mark.integration
ACCOUNT = "123456789012"  # moto's account
GATEWAY_ID = "nats-gateway-test"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_sts() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _role_session(sts_url: str, role: str, session: str) -> Any:
    sts = boto3.client("sts", endpoint_url=sts_url, region_name=REGION,
                       aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="x")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
                            RoleSessionName=session)["Credentials"]
    return boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                         aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"], region_name=REGION)


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


async def _start(stack: Stack, sts_url: str, **aws: Any) -> None:
    (stack.tmp / "policies" / "iam.yaml").write_text(IAM_POLICY)
    settings = {"enabled": True, "sts_endpoint": sts_url, "region": REGION,
                "gateway_id": GATEWAY_ID, "allowed_accounts": [ACCOUNT], **aws}
    await stack.start_gateway(aws=settings)


@pytest.fixture
async def iam(stack: Stack, moto_sts: str) -> AsyncIterator[Stack]:
    await _start(stack, moto_sts)
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


async def test_an_iam_role_session_gets_its_task_scope(iam: Stack, moto_sts: str) -> None:
    session = _role_session(moto_sts, "airflow-prod-worker", "i-0abc")
    errors = Violations()
    nc = await connect(iam.nats_url, _envelope(moto_sts, session), errors)
    try:
        sub = await nc.subscribe("prod.etl.load.>")
        await nc.publish("prod.etl.load.done", b"ok")
        assert (await sub.next_msg(timeout=2)).data == b"ok"
        await nc.publish("prod.etl.extract.done", b"no")
        await nc.flush()
        await asyncio.sleep(0.1)
        assert any("permissions violation" in e for e in errors.errors)
    finally:
        await nc.close()
    [grant] = await _records(iam, decision="grant")
    assert grant["method"] == "aws_iam"
    assert grant["principal"] == f"arn:aws:iam::{ACCOUNT}:role/airflow-prod-worker#i-0abc"
    assert grant["policy_ids"] == ["prod-role"]
    assert grant["identity_fingerprint"].startswith("sha256:")


async def _denied_with(stack: Stack, envelope: str, code: str) -> dict[str, Any]:
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await connect(stack.nats_url, envelope)
    denials = [r for r in await _records(stack, decision="deny") if r["reason_code"] == code]
    assert denials, await _records(stack, decision="deny")
    return denials[0]


async def test_a_proof_is_single_use(iam: Stack, moto_sts: str) -> None:
    envelope = _envelope(moto_sts, _role_session(moto_sts, "airflow-prod-worker", "i-1"))
    nc = await connect(iam.nats_url, envelope)
    await nc.close()
    await _denied_with(iam, envelope, "replayed_aws_proof")


async def test_other_roles_and_gateways_are_refused(iam: Stack, moto_sts: str) -> None:
    staging = _role_session(moto_sts, "airflow-staging-worker", "i-2")
    await _denied_with(iam, _envelope(moto_sts, staging), "no_matching_policy")
    prod = _role_session(moto_sts, "airflow-prod-worker", "i-3")
    other_gateway = aws_iam_envelope(dag_id="etl", task_id="load", gateway_id="someone-else",
                                     region=REGION, sts_endpoint=moto_sts, session=prod)
    await _denied_with(iam, other_gateway, "wrong_gateway_id")
    wrong_region = aws_iam_envelope(dag_id="etl", task_id="load", gateway_id=GATEWAY_ID,
                                    region="eu-west-1", sts_endpoint=moto_sts, session=prod)
    await _denied_with(iam, wrong_region, "wrong_region")


async def test_an_untrusted_account_is_refused(stack: Stack, moto_sts: str) -> None:
    await _start(stack, moto_sts, allowed_accounts=["999999999999"])
    try:
        session = _role_session(moto_sts, "airflow-prod-worker", "i-4")
        denial = await _denied_with(stack, _envelope(moto_sts, session), "account_not_allowed")
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
        stack: Stack, moto_sts: str, misbehaving: tuple[str, type[_Misbehaving]],
        mode: str, code: str) -> None:
    url, handler = misbehaving
    handler.mode = mode
    await _start(stack, url, timeout_seconds=0.5)
    try:
        # Signed for the misbehaving endpoint with real moto credentials.
        session = _role_session(moto_sts, "airflow-prod-worker", f"i-{mode}")
        started = time.monotonic()
        await _denied_with(stack, _envelope(url, session), code)
        assert time.monotonic() - started < 2.0  # inside nats-server's auth timeout
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


async def test_unreachable_sts_denies(stack: Stack, moto_sts: str) -> None:
    closed = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    await _start(stack, closed)
    try:
        session = _role_session(moto_sts, "airflow-prod-worker", "i-down")
        await _denied_with(stack, _envelope(closed, session), "sts_unreachable")
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()
