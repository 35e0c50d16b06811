"""Fuzzing every parser that faces the outside, and the whole decision pipeline.

Property: whatever arrives, nothing raises out of the pipeline, nothing is granted, and
every refusal carries a reason code. The pipeline runs in-process with real keys, a real
OIDC issuer over HTTP and a real SQLite audit store; only nats-server's transport is left
out (the same handler serves it in the end-to-end tests). Inputs hypothesis once found
to crash a parser are kept in ``tests/fuzz_corpus/`` and replayed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit.record import AuditRecord
from gateway.callout.handler import CalloutHandler, HandlerSettings
from gateway.dev.issuer import DevIssuer
from gateway.envelope import parse_envelope
from gateway.errors import GatewayError
from gateway.identity.aws_proof import check_proof
from gateway.identity.model import Identity
from gateway.identity.oidc import OidcVerifier
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.natsjwt.claims import verify_authorization_request
from gateway.natsjwt.codec import JwtError, decode_verified, encode_signed
from gateway.natsjwt.nkeys import CurveKeyPair, Prefix, SigningKeyPair
from gateway.natsjwt.xkey import XKeyError, open_sealed, seal
from gateway.policy.load import PolicySet, load_policy_dir, load_policy_text

pytestmark = pytest.mark.integration
CORPUS = Path(__file__).resolve().parents[1] / "fuzz_corpus"
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Surrogates included: a JSON `\ud800` escape decodes to one, and once crashed the parsers.
text = st.text(st.characters(exclude_categories=()), max_size=400)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=20)


def _corpus(kind: str) -> list[str]:
    path = CORPUS / f"{kind}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- parsers, one by one -------------------------------------------------------------------

@FUZZ
@given(text)
def test_envelope_parser_only_refuses_with_a_code(raw: str) -> None:
    try:
        parse_envelope(raw)
    except GatewayError as exc:
        assert exc.code


@FUZZ
@given(json_values)
def test_envelope_parser_on_json_shapes(value: Any) -> None:
    try:
        parse_envelope(json.dumps(value))
    except GatewayError as exc:
        assert exc.code


@FUZZ
@given(text | json_values.map(json.dumps))
def test_iam_proof_checker_only_refuses_with_a_code(raw: str) -> None:
    from datetime import UTC, datetime

    try:
        check_proof(raw, gateway_id="gw", host="sts.amazonaws.com", now=datetime.now(UTC))
    except GatewayError as exc:
        assert exc.code


SERVER = SigningKeyPair.generate(Prefix.SERVER)
ISSUER = SigningKeyPair.generate(Prefix.ACCOUNT)


@FUZZ
@given(text)
def test_jwt_decoder_only_refuses(raw: str) -> None:
    with contextlib.suppress(JwtError):
        decode_verified(raw, Prefix.SERVER, max_length=10_000)


@FUZZ
@given(json_values)
def test_request_verifier_on_signed_garbage_claims(claims: Any) -> None:
    """A correctly signed request JWT whose claims are anything: refused with a code."""
    body = claims if isinstance(claims, dict) else {"nats": claims}
    token = encode_signed(body, SERVER, issued_at=int(time.time()))
    try:
        verify_authorization_request(token, expected_subject=ISSUER.public_key,
                                     now=int(time.time()))
    except GatewayError as exc:
        assert exc.code


@FUZZ
@given(st.binary(max_size=600))
def test_xkey_opener_only_refuses(data: bytes) -> None:
    ours, theirs = CurveKeyPair.generate(), CurveKeyPair.generate()
    with contextlib.suppress(XKeyError):
        open_sealed(data, ours, theirs.public_key)


@FUZZ
@given(text | json_values.map(lambda v: json.dumps({"version": 1, "policies": v})))
def test_policy_loader_reports_problems_never_raises(raw: str) -> None:
    policies, problems = load_policy_text(raw, "fuzz.yaml")
    assert not (problems and policies), "a file with problems must yield no policies"
    assert all(problem.startswith("fuzz.yaml:") for problem in problems)


# -- the whole pipeline ---------------------------------------------------------------------

class Pipeline:
    """The real handler: real keys, real OIDC issuer over HTTP, audit records kept."""

    def __init__(self, issuer: DevIssuer, http: httpx.AsyncClient, policies: PolicySet,
                 xkey: CurveKeyPair) -> None:
        self.server_xkey = CurveKeyPair.generate()
        self.records: list[AuditRecord] = []
        self.verifier = OidcVerifier([OidcIssuerConfig(
            issuer=issuer.issuer, audiences=["nats-gateway"])], http)

        async def audit(record: AuditRecord, deadline: float) -> None:
            self.records.append(record)

        async def verify(envelope: Any) -> Identity:
            return await self.verifier.verify(envelope.proof)

        self.handler = CalloutHandler(
            issuer=ISSUER, xkey=xkey, verify_identity=verify, policies=lambda: policies,
            audit=audit, settings=HandlerSettings())
        self.xkey = xkey

    def request(self, auth_token: str, *, user: str | None = None,
                expires: int | None = None) -> tuple[bytes, dict[str, str]]:
        claims = {
            "aud": "nats-authorization-request", "sub": ISSUER.public_key,
            "exp": int(time.time()) + 2 if expires is None else expires,
            "nats": {"type": "authorization_request", "version": 2,
                     "server_id": {"id": SERVER.public_key, "name": "fuzz",
                                   "xkey": self.server_xkey.public_key},
                     "user_nkey": user or SigningKeyPair.generate(Prefix.USER).public_key,
                     "client_info": {"host": "127.0.0.1", "kind": "Client", "type": "nats"},
                     "connect_opts": {"auth_token": auth_token}},
        }
        token = encode_signed(claims, SERVER, issued_at=int(time.time()))
        sealed = seal(token.encode(), self.server_xkey, self.xkey.public_key)
        return sealed, {"Nats-Server-Xkey": self.server_xkey.public_key}

    def outcome(self, reply: bytes | None) -> dict[str, Any] | None:
        """The response's ``nats`` claims, opened and verified; None when unanswered."""
        if reply is None:
            return None
        opened = open_sealed(reply, self.xkey, self.server_xkey.public_key)
        verified = decode_verified(opened.decode(), Prefix.ACCOUNT, max_length=100_000)
        nats: dict[str, Any] = verified.claims["nats"]
        return nats


@pytest.fixture(scope="module")
def dev_issuer() -> Iterator[DevIssuer]:
    with DevIssuer() as issuer:
        yield issuer


PIPELINE_POLICY = """\
version: 1
policies:
  - id: p
    match: {oidc: {issuer: "ISSUER", subject: worker}}
    scopes: [{dag: etl, tasks: [load]}]
    permissions: {publish: {allow: ["airflow.{dag_id}.{task_id}.>"]}}
"""


@contextlib.asynccontextmanager
async def open_pipeline(issuer: DevIssuer, tmp_path: Path) -> AsyncIterator[Pipeline]:
    """The real handler with one policy: subject `worker` may act for etl/load."""
    (tmp_path / "p.yaml").write_text(PIPELINE_POLICY.replace("ISSUER", issuer.issuer))
    async with httpx.AsyncClient() as http:
        yield Pipeline(issuer, http, load_policy_dir(tmp_path), CurveKeyPair.generate())


@pytest.fixture
async def pipeline(dev_issuer: DevIssuer, tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with open_pipeline(dev_issuer, tmp_path) as opened:
        yield opened


def _assert_denied(pipeline: Pipeline, reply: bytes | None) -> None:
    outcome = pipeline.outcome(reply)
    if outcome is not None:
        assert "jwt" not in outcome, "granted"
        assert outcome["error"].split(":")[0], "a deny must carry a reason code"
    assert pipeline.records and pipeline.records[-1].decision == "deny"
    assert pipeline.records[-1].reason_code


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


envelopes = st.one_of(
    # Raw: nats-server sends UTF-8, so a lone surrogate only arrives JSON-escaped (below).
    text.filter(_utf8),
    json_values.map(json.dumps),
    st.builds(lambda token, dag, task: json.dumps(
        {"v": 1, "method": "oidc", "token": token, "scope": {"dag_id": dag, "task_id": task}}),
        text, st.text(max_size=30), st.text(max_size=30)),
    st.builds(lambda proof: json.dumps({"v": 1, "method": "aws_iam", "token": proof,
                                        "scope": {"dag_id": "etl", "task_id": "load"}}),
              text | json_values.map(json.dumps)),
)


@FUZZ
@given(auth_token=envelopes)
def test_pipeline_never_grants_garbage(pipeline: Pipeline, auth_token: str) -> None:
    data, headers = pipeline.request(auth_token)
    reply = asyncio.get_event_loop().run_until_complete(pipeline.handler.handle(data, headers))
    _assert_denied(pipeline, reply)


@FUZZ
@given(data=st.binary(max_size=2000), header=st.none() | st.text(max_size=80))
def test_pipeline_never_grants_raw_bytes(pipeline: Pipeline, data: bytes,
                                         header: str | None) -> None:
    headers = {} if header is None else {"Nats-Server-Xkey": header}
    reply = asyncio.get_event_loop().run_until_complete(pipeline.handler.handle(data, headers))
    assert reply is None  # nothing verifiable: unanswered, and audited
    assert pipeline.records[-1].decision == "deny"


@FUZZ
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_pipeline_never_grants_a_tampered_valid_request(
        pipeline: Pipeline, dev_issuer: DevIssuer, position: int, flip: int) -> None:
    from gateway.client import oidc_envelope

    token = dev_issuer.mint(subject="worker", audience="nats-gateway")
    data, headers = pipeline.request(oidc_envelope(token, dag_id="etl", task_id="load"))
    mutated = bytearray(data)
    mutated[position % len(mutated)] ^= flip
    reply = asyncio.get_event_loop().run_until_complete(
        pipeline.handler.handle(bytes(mutated), headers))
    assert reply is None  # the seal or the signature no longer verifies
    assert pipeline.records[-1].decision == "deny"


async def test_the_pipeline_grants_the_untampered_request(pipeline: Pipeline,
                                                          dev_issuer: DevIssuer) -> None:
    """The fuzz properties above are not vacuous: the same pipeline grants a real one."""
    from gateway.client import oidc_envelope

    token = dev_issuer.mint(subject="worker", audience="nats-gateway")
    data, headers = pipeline.request(oidc_envelope(token, dag_id="etl", task_id="load"))
    outcome = pipeline.outcome(await pipeline.handler.handle(data, headers))
    assert outcome is not None and "jwt" in outcome


@pytest.mark.parametrize("raw", _corpus("envelope"), ids=repr)
def test_envelope_corpus(raw: str) -> None:
    with pytest.raises(GatewayError) as refused:
        parse_envelope(raw)
    assert refused.value.code


@pytest.mark.parametrize("raw", _corpus("iam_proof"), ids=repr)
def test_iam_proof_corpus(raw: str) -> None:
    from datetime import UTC, datetime

    with pytest.raises(GatewayError) as refused:
        check_proof(raw, gateway_id="gw", host="sts.amazonaws.com", now=datetime.now(UTC))
    assert refused.value.code


async def test_xkey_header_must_match_the_signed_server_xkey(
        pipeline: Pipeline, dev_issuer: DevIssuer) -> None:
    """An attacker who re-seals a captured request under their own curve key (and says so
    in the header) is refused: the header must equal the server xkey the JWT signs."""
    from gateway.client import oidc_envelope

    token = dev_issuer.mint(subject="worker", audience="nats-gateway")
    data, headers = pipeline.request(oidc_envelope(token, dag_id="etl", task_id="load"))
    opened = open_sealed(data, pipeline.xkey, headers["Nats-Server-Xkey"])
    attacker = CurveKeyPair.generate()
    resealed = seal(opened, attacker, pipeline.xkey.public_key)
    reply = await pipeline.handler.handle(resealed, {"Nats-Server-Xkey": attacker.public_key})
    assert reply is None
    assert pipeline.records[-1].reason_code == "xkey_mismatch"


async def test_an_answer_is_bound_to_the_request_it_answers(
        pipeline: Pipeline, dev_issuer: DevIssuer) -> None:
    """Replaying a captured request gets an answer only for that request's server and
    per-connection user key, which nats-server generated and never discloses: useless
    to the replayer. An expired request is refused outright (test_natsjwt)."""
    from gateway.client import oidc_envelope

    user = SigningKeyPair.generate(Prefix.USER).public_key
    token = dev_issuer.mint(subject="worker", audience="nats-gateway")
    data, headers = pipeline.request(oidc_envelope(token, dag_id="etl", task_id="load"),
                                     user=user)
    reply = await pipeline.handler.handle(data, headers)
    opened = open_sealed(reply or b"", pipeline.xkey, pipeline.server_xkey.public_key)
    verified = decode_verified(opened.decode(), Prefix.ACCOUNT, max_length=100_000)
    assert verified.claims["sub"] == user and verified.claims["aud"] == SERVER.public_key
    granted = decode_verified(verified.claims["nats"]["jwt"], Prefix.ACCOUNT,
                              max_length=100_000)
    assert granted.claims["sub"] == user
