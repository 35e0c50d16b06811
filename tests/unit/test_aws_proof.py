"""The AWS IAM proof checks, on proofs signed by botocore's real SigV4 signer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from gateway.client.aws import aws_iam_proof
from gateway.errors import CredentialError, IdentityUnavailable
from gateway.identity.aws_proof import check_proof
from gateway.identity.replay import ReplayCache

ENDPOINT = "http://127.0.0.1:5999"
HOST = "127.0.0.1:5999"


def _session() -> Any:
    return boto3.Session(aws_access_key_id="ASIAEXAMPLEEXAMPLE12", aws_secret_access_key="s",
                         aws_session_token="token", region_name="eu-west-1")


def _proof(**overrides: Any) -> dict[str, Any]:
    proof = json.loads(aws_iam_proof(gateway_id="gw-prod", region="eu-west-1",
                                     sts_endpoint=ENDPOINT, session=_session()))
    proof["headers"].update(overrides)
    return {k: v for k, v in proof.items()}


def _check(proof: dict[str, Any] | str, now: datetime | None = None) -> Any:
    text = proof if isinstance(proof, str) else json.dumps(proof)
    return check_proof(text, gateway_id="gw-prod", host=HOST, now=now or datetime.now(UTC))


def test_a_botocore_signed_proof_passes_and_keeps_only_allowlisted_headers() -> None:
    checked = _check(_proof())
    assert checked.region == "eu-west-1"
    assert set(checked.headers) == {"authorization", "x-amz-date", "x-amz-security-token",
                                    "x-nats-gateway-id", "x-nats-gateway-nonce",
                                    "content-type"}
    assert "x-nats-gateway-id" in checked.headers["authorization"]
    assert "token" not in repr(checked) and checked.signature not in repr(checked)


@pytest.mark.parametrize("mutate,code,message", [
    (lambda p: p["headers"].update({"X-Amz-Target": "x"}), "bad_aws_proof",
     "amz header `x-amz-target` is not allowed"),
    (lambda p: p["headers"].update({"X-Forwarded-Host": "evil"}), "bad_aws_proof",
     "header `x-forwarded-host` is not allowed"),
    (lambda p: p.update({"body": "Action=GetCallerIdentity&Version=2011-06-15&Action=X"}),
     "bad_aws_proof", "body must be exactly"),
    (lambda p: p.update({"body": "Action=AssumeRole&Version=2011-06-15"}), "bad_aws_proof",
     "body must be exactly"),
    (lambda p: p["headers"].update({"X-Nats-Gateway-Id": "gw-staging"}), "wrong_gateway_id",
     "another gateway"),
    (lambda p: p["headers"].update({"Host": "sts.amazonaws.com"}), "bad_aws_proof",
     "another host"),
    (lambda p: p["headers"].pop("X-Nats-Gateway-Id"), "bad_aws_proof", "is missing"),
    (lambda p: p["headers"].update({"Content-Type": "application/json"}), "bad_aws_proof",
     "content-type"),
    (lambda p: p["headers"].update({"X-Amz-Date": "yesterday"}), "bad_aws_proof",
     "YYYYMMDD"),
    (lambda p: p["headers"].update({"Authorization": "Bearer x"}), "bad_aws_proof",
     "AWS4-HMAC-SHA256"),
    (lambda p: p["headers"].update({"X-Amz-Date": "x\r\nHost: evil"}), "bad_aws_proof",
     "malformed"),
    (lambda p: p.update({"url": "https://evil.example/?Action=GetCallerIdentity"}),
     "bad_aws_proof", "exactly `headers` and `body`"),
])
def test_refusals(mutate: Any, code: str, message: str) -> None:
    proof = _proof()
    mutate(proof)
    with pytest.raises(CredentialError) as refused:
        _check(proof)
    assert refused.value.code == code and message in refused.value.description


def test_gateway_id_must_be_signed() -> None:
    proof = _proof()
    auth = proof["headers"]["Authorization"]
    proof["headers"]["Authorization"] = auth.replace(";x-nats-gateway-id", "")
    with pytest.raises(CredentialError, match="x-nats-gateway-id must be in SignedHeaders"):
        _check(proof)


def test_other_service_is_refused() -> None:
    proof = _proof()
    proof["headers"]["Authorization"] = proof["headers"]["Authorization"].replace(
        "/sts/", "/iam/")
    with pytest.raises(CredentialError, match="not for sts"):
        _check(proof)


def test_duplicate_headers_even_by_case_are_refused() -> None:
    text = json.dumps(_proof())
    duplicated = text.replace('"X-Amz-Date"', '"x-amz-date":"20200101T000000Z","X-Amz-Date"')
    with pytest.raises(CredentialError, match="duplicate field"):
        _check(duplicated)


@pytest.mark.parametrize("skew,code", [(timedelta(minutes=16), "stale_aws_proof"),
                                        (timedelta(minutes=-16), "future_aws_proof")])
def test_outside_the_signing_window(skew: timedelta, code: str) -> None:
    with pytest.raises(CredentialError) as refused:
        _check(_proof(), now=datetime.now(UTC) + skew)
    assert refused.value.code == code


def test_a_proof_dated_in_the_future_is_clock_skew_at_most() -> None:
    """A worker clock 30 s ahead is skew; 2 minutes ahead is not (a forged proof dated
    14 minutes ahead would otherwise hold a replay-cache slot for 29 minutes)."""
    proof = _proof()
    signed = datetime.strptime(proof["headers"]["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC)
    assert _check(proof, now=signed - timedelta(seconds=30)).signed_at == signed
    with pytest.raises(CredentialError) as refused:
        _check(proof, now=signed - timedelta(minutes=2))
    assert refused.value.code == "future_aws_proof"
    assert refused.value.description == ("aws proof is dated more than 60 s in the future "
                                         "(x-amz-date)")
    with pytest.raises(CredentialError, match="more than 10 s in the future"):
        check_proof(json.dumps(proof), gateway_id="gw-prod", host=HOST,
                    now=signed - timedelta(seconds=30), max_clock_skew_seconds=10)
    assert _check(proof, now=signed + timedelta(minutes=14)).signed_at == signed  # past: 15 min


def _many_keys(count: int) -> str:
    """A proof whose `headers` has `count` distinct keys; the text is cut short, so only
    a refusal made before parsing can name the key count."""
    keys = ",".join(f'"{n:x}":0' for n in range(count))
    return '{"body":"","headers":{' + keys


@pytest.mark.parametrize("text,message", [
    pytest.param(_many_keys(1000), "more than 44 `:` (too many keys)", id="1000-keys"),
    pytest.param(_many_keys(45), "more than 44 `:` (too many keys)", id="45-keys"),
    pytest.param('{"headers":' + "[" * 3000, "more than 2 objects or arrays (nested too deep)",
                 id="deep-arrays"),
    pytest.param('{"headers":{"a":{"b":""}}', "more than 2 objects or arrays (nested too deep)",
                 id="three-objects"),
    pytest.param('{"body":"' + "a" * 8200, "longer than 8192 characters", id="too-long"),
])
def test_hostile_shapes_are_refused_before_parsing(text: str, message: str) -> None:
    assert len(text) < 8192 or "longer" in message  # so the cap named is the one hit
    with pytest.raises(CredentialError) as refused:
        _check(text)
    assert refused.value.code == "oversized_aws_proof"
    assert refused.value.description == f"aws proof: {message}"


def test_an_object_with_more_keys_than_a_proof_can_have_is_refused() -> None:
    proof = _proof()
    proof["headers"].update({f"X-Extra-{n}": "" for n in range(12 - len(proof["headers"]))})
    with pytest.raises(CredentialError) as refused:
        _check(proof)
    assert refused.value.code == "oversized_aws_proof"
    assert refused.value.description == "aws proof: an object has more than 11 keys"


def test_a_hostile_header_name_is_not_echoed() -> None:
    proof = _proof(**{"X-" + "\n`" * 500: "x"})
    with pytest.raises(CredentialError) as refused:
        _check(proof)
    description = refused.value.description
    assert len(description) < 100 and "\n" not in description
    assert description.startswith("aws proof: header `x-\\x0a`\\x0a`")


@pytest.mark.parametrize("text", ["", "[]", "{", '{"headers": [], "body": ""}', "1" * 10])
def test_garbage_is_a_clear_refusal(text: str) -> None:
    with pytest.raises(CredentialError) as refused:
        _check(text)
    assert refused.value.code == "bad_aws_proof"


def test_replay_cache_is_single_use_bounded_and_expires() -> None:
    cache = ReplayCache(max_entries=2)
    cache.use("a", expires=100, now=0)
    with pytest.raises(CredentialError, match="already used"):
        cache.use("a", expires=100, now=50)
    cache.use("b", expires=100, now=50)
    with pytest.raises(IdentityUnavailable, match="full"):
        cache.use("c", expires=200, now=60)  # full of live entries: fail closed
    cache.use("c", expires=200, now=101)  # a and b expired and are forgotten
    assert len(cache) == 1
    cache.use("a", expires=300, now=150)  # a's window is over: a new proof may match


def test_two_proofs_signed_in_the_same_second_differ() -> None:
    first, second = _check(_proof()), _check(_proof())
    assert first.signature != second.signature


@pytest.mark.parametrize("nonce", ["short", "G" * 32, "ab" * 40])
def test_a_malformed_nonce_is_refused(nonce: str) -> None:
    with pytest.raises(CredentialError, match="nonce"):
        _check(_proof(**{"X-Nats-Gateway-Nonce": nonce}))


def test_the_nonce_must_be_signed_when_present() -> None:
    proof = _proof()
    proof["headers"]["Authorization"] = proof["headers"]["Authorization"].replace(
        ";x-nats-gateway-nonce", "")
    with pytest.raises(CredentialError, match="x-nats-gateway-nonce must be in SignedHeaders"):
        _check(proof)
