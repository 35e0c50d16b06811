"""Verify an AWS IAM proof by replaying it to STS, from the gateway's own configuration.

    check the proof (aws_proof) -> take its single-use slot (replay) -> POST to the
    configured endpoint -> strict parse of GetCallerIdentityResponse -> assumed-role ARN
    -> allowed account -> keep the slot (any failure on the way releases it)

STS is the verifier: only AWS can check a SigV4 signature. Its answer is parsed strictly
(status 200, XML content type, exactly one Arn, UserId and Account, account consistent
with the ARN). Unreachable, slow or garbled STS means deny (``IdentityUnavailable``);
a refusal by STS means the proof is bad (``IdentityError``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import httpx
from defusedxml import ElementTree
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import IdentityError, IdentityUnavailable
from gateway.identity.aws_arn import iam_identity, parse_caller_arn
from gateway.identity.aws_proof import (
    MAX_CLOCK_SKEW_SECONDS,
    SIGNING_WINDOW_SECONDS,
    STS_BODY,
    CheckedProof,
    check_proof,
    regional_sts_endpoint,
)
from gateway.identity.model import Identity, fingerprint
from gateway.identity.oidc_config import is_loopback_url
from gateway.identity.replay import ReplayCache
from gateway.metrics import Metrics
from gateway.tls.failures import describe_tls_failure, tls_failure_in

__all__ = ["AwsIamSettings", "StsVerifier"]

_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
_MAX_RESPONSE = 64 * 1024


class AwsIamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    sts_endpoint: str = Field(default="https://sts.us-east-1.amazonaws.com",
                              description="where the gateway sends proofs; https (http only "
                                          "on loopback); default: the region's endpoint, "
                                          "which is what the client signs for by default")
    region: str = Field(default="us-east-1", description="the region proofs must be signed for")
    gateway_id: str = Field(default="", description="required X-Nats-Gateway-Id value")
    allowed_accounts: tuple[str, ...] = Field(default=(), description="12-digit account ids")
    timeout_seconds: float = Field(default=0.8, gt=0, le=10)
    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) for sts_endpoint (a VPC endpoint "
                                  "behind a TLS-inspecting proxy); default: the public CAs")
    max_identity_seconds: int = Field(default=3600, gt=0, le=43_200)
    replay_cache_size: int = Field(default=100_000, gt=0)
    max_clock_skew_seconds: int = Field(
        default=MAX_CLOCK_SKEW_SECONDS, ge=0, le=MAX_CLOCK_SKEW_SECONDS,
        description="how far in the future X-Amz-Date may be; may only be lowered")

    @model_validator(mode="before")
    @classmethod
    def _regional_endpoint_by_default(cls, data: Any) -> Any:
        # The client presigns for https://sts.<region>.amazonaws.com unless told otherwise
        # (gateway/client/aws.py): the gateway's default must be the same host, or every
        # proof made with both defaults is refused by STS (`sts_rejected`).
        if isinstance(data, dict) and "sts_endpoint" not in data:
            region = data.get("region", "us-east-1")
            if isinstance(region, str):
                data = {**data, "sts_endpoint": regional_sts_endpoint(region)}
        return data

    @field_validator("allowed_accounts")
    @classmethod
    def _accounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for account in value:
            if len(account) != 12 or not account.isdigit():
                raise ValueError(f"`{account}` is not a 12-digit account id")
        return value

    @model_validator(mode="after")
    def _usable_when_enabled(self) -> AwsIamSettings:
        if not self.enabled:
            return self
        parts = urlsplit(self.sts_endpoint)
        if parts.scheme != "https" and not (parts.scheme == "http"
                                            and is_loopback_url(self.sts_endpoint)):
            raise ValueError("sts_endpoint must use https (http only on loopback)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("sts_endpoint must be a bare origin like https://sts.eu-west-1."
                             "amazonaws.com")
        if not self.gateway_id:
            raise ValueError("gateway_id is required: proofs must name this gateway")
        if not self.allowed_accounts:
            raise ValueError("allowed_accounts is required: list the accounts to trust")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.sts_endpoint).netloc


def _text(result: Element, name: str) -> str:
    found = result.findall(_NS + name)
    if len(found) != 1 or not (found[0].text or "").strip():
        raise IdentityUnavailable(f"sts answer has no single `{name}`", code="sts_bad_response")
    return (found[0].text or "").strip()


def _parse_caller(response: httpx.Response) -> tuple[str, str, str]:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("text/xml", "application/xml"):
        raise IdentityUnavailable("sts answered with an unexpected content type",
                                  code="sts_bad_response")
    if len(response.content) > _MAX_RESPONSE:
        raise IdentityUnavailable("sts answer is too large", code="sts_bad_response")
    try:
        root = ElementTree.fromstring(response.content, forbid_dtd=True)
    except Exception:  # defusedxml raises several types for hostile or broken XML
        raise IdentityUnavailable("sts answer is not valid xml", code="sts_bad_response") from None
    results = root.findall(_NS + "GetCallerIdentityResult")
    if root.tag != _NS + "GetCallerIdentityResponse" or len(results) != 1:
        raise IdentityUnavailable("sts answer is not a GetCallerIdentityResponse",
                                  code="sts_bad_response")
    result = results[0]
    return _text(result, "Arn"), _text(result, "UserId"), _text(result, "Account")


def _sts_error_code(response: httpx.Response) -> str:
    try:
        root = ElementTree.fromstring(response.content[:_MAX_RESPONSE], forbid_dtd=True)
        code = root.find(f"{_NS}Error/{_NS}Code")
        if code is None:
            code = root.find("Error/Code")
        return (code.text or "").strip()[:64] if code is not None else "unknown"
    except Exception:
        return "unknown"


class StsVerifier:
    def __init__(self, settings: AwsIamSettings, http: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time,
                 metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._settings = settings
        self._http = http
        self._clock = clock
        self._replay = ReplayCache(settings.replay_cache_size)

    async def verify(self, proof: str) -> Identity:
        settings = self._settings
        now = self._clock()
        checked = check_proof(proof, gateway_id=settings.gateway_id, host=settings.host,
                              now=datetime.fromtimestamp(now, UTC),
                              max_clock_skew_seconds=settings.max_clock_skew_seconds)
        if checked.region != settings.region:
            raise IdentityError(f"aws proof is signed for region `{checked.region}`, not "
                                f"`{settings.region}`", code="wrong_region")
        window_end = checked.signed_at + timedelta(seconds=SIGNING_WINDOW_SECONDS)
        slot = fingerprint(checked.signature)
        self._replay.use(slot, expires=window_end.timestamp(), now=now)
        try:
            return await self._verified(proof, checked, now)
        except BaseException:
            # Not accepted (refused by STS, timed out, an untrusted account, cancelled):
            # the proof used nothing up, and a forged one must not hold a slot (issue 18).
            self._replay.release(slot)
            raise

    async def _verified(self, proof: str, checked: CheckedProof, now: float) -> Identity:
        settings = self._settings
        arn, user_id, account = await self._timed_sts_call(checked.headers)
        caller = parse_caller_arn(arn)
        if caller.account != account:
            raise IdentityUnavailable("sts answer's account does not match its arn",
                                      code="sts_bad_response")
        if account not in settings.allowed_accounts:
            raise IdentityError(f"account {account} is not trusted by this gateway",
                                code="account_not_allowed")
        return iam_identity(caller, user_id=user_id,
                            expires=int(now) + settings.max_identity_seconds,
                            proof_fingerprint=fingerprint(proof))

    async def _timed_sts_call(self, headers: dict[str, str]) -> tuple[str, str, str]:
        started = time.perf_counter()
        result = "error"
        try:
            answer = await self._call_sts(headers)
            result = "ok"
            return answer
        except (IdentityError, IdentityUnavailable) as exc:
            result = exc.code
            raise
        finally:
            if self._metrics is not None:
                self._metrics.sts_calls.labels(result).inc()
                self._metrics.sts_seconds.observe(time.perf_counter() - started)

    async def _call_sts(self, headers: dict[str, str]) -> tuple[str, str, str]:
        settings = self._settings
        try:
            response = await self._http.post(
                settings.sts_endpoint.rstrip("/") + "/", content=STS_BODY.encode(),
                headers={**headers, "host": settings.host, "accept": "text/xml"},
                timeout=settings.timeout_seconds, follow_redirects=False)
        except httpx.TimeoutException:
            raise IdentityUnavailable("sts did not answer in time", code="sts_timeout") from None
        except httpx.HTTPError as exc:
            failure = tls_failure_in(exc)
            if failure is not None:
                trust = f"`{settings.ca_file}`" if settings.ca_file else "the public ca bundle"
                cause = describe_tls_failure(failure, host=urlsplit(settings.sts_endpoint)
                                             .hostname or "", trust=trust)
                raise IdentityUnavailable(f"tls to `{settings.sts_endpoint}` failed: {cause}",
                                          code="identity_provider_tls") from None
            raise IdentityUnavailable(f"sts is unreachable ({type(exc).__name__})",
                                      code="sts_unreachable") from None
        if response.status_code in (400, 403):
            raise IdentityError(f"sts refused the proof ({_sts_error_code(response)})",
                                code="sts_rejected")
        if response.status_code != 200:
            raise IdentityUnavailable(f"sts answered http {response.status_code}",
                                      code="sts_unavailable")
        return _parse_caller(response)
