"""OIDC verification against a real issuer over HTTP: every check, and the JWKS cache."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gateway.dev.issuer import DevIssuer
from gateway.errors import IdentityError, IdentityUnavailable
from gateway.identity.oidc import OidcVerifier
from gateway.identity.oidc_config import OidcIssuerConfig

pytestmark = pytest.mark.integration
AUD = "nats-gateway"


@pytest.fixture
def issuer() -> Iterator[DevIssuer]:
    with DevIssuer() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _verifier(issuer: DevIssuer, http: httpx.AsyncClient, **config: Any) -> OidcVerifier:
    settings = {"issuer": issuer.issuer, "audiences": [AUD], "algorithms": ["RS256"],
                "max_lifetime_seconds": 3600, **config}
    return OidcVerifier([OidcIssuerConfig(**settings)], http)


async def _code(verifier: OidcVerifier, token: str) -> str:
    with pytest.raises(IdentityError) as refused:
        await verifier.verify(token)
    assert token not in refused.value.description
    return refused.value.code


async def test_valid_token(issuer: DevIssuer, http: httpx.AsyncClient) -> None:
    identity = await _verifier(issuer, http).verify(issuer.mint(subject="w", audience=AUD))
    assert (identity.subject, identity.issuer, identity.method) == ("w", issuer.issuer, "oidc")
    assert identity.fingerprint.startswith("sha256:")


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c", "crit"])
async def test_token_chosen_key_material_is_refused(
    issuer: DevIssuer, http: httpx.AsyncClient, header: str
) -> None:
    value: Any = {"jwk": issuer.public_jwk(), "x5c": ["MIIB"], "crit": ["exp"]}.get(
        header, "https://attacker.example/jwks")
    token = issuer.mint(subject="w", audience=AUD, headers={header: value})
    # PyJWT already refuses an unknown `crit` while parsing the header
    expected = "malformed_token" if header == "crit" else "forbidden_header"
    assert await _code(_verifier(issuer, http), token) == expected


@dataclass(frozen=True)
class FromNow:
    """A time claim relative to when the test runs, not to when it was collected (a long
    suite would otherwise turn "in ten minutes" into the past)."""

    seconds: int


def _at_run_time(claims: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    return {k: now + v.seconds if isinstance(v, FromNow) else v for k, v in claims.items()}


@pytest.mark.parametrize("claims,code", [
    ({"exp": None}, "missing_claim"),
    ({"iat": None}, "missing_claim"),
    ({"sub": None}, "missing_claim"),
    ({"aud": None}, "missing_claim"),
    ({"iat": FromNow(600), "nbf": None}, "token_not_yet_valid"),
    ({"nbf": FromNow(600)}, "token_not_yet_valid"),
    ({"exp": FromNow(7200)}, "lifetime_too_long"),
    ({"aud": ["other", "more"]}, "wrong_audience"),
], ids=["no-exp", "no-iat", "no-sub", "no-aud", "future-iat", "future-nbf", "too-long",
        "aud-list"])
async def test_claim_checks(issuer: DevIssuer, http: httpx.AsyncClient,
                            claims: dict[str, Any], code: str) -> None:
    token = issuer.mint(subject="w", audience=AUD, claims=_at_run_time(claims))
    assert await _code(_verifier(issuer, http), token) == code


async def test_key_confusion_es256_header_with_rsa_key(
    issuer: DevIssuer, http: httpx.AsyncClient
) -> None:
    token = issuer.mint(subject="w", audience=AUD, algorithm="ES256",
                        key=DevIssuer.foreign_private_key("ES256"))
    verifier = _verifier(issuer, http, algorithms=["RS256", "ES256"])
    assert await _code(verifier, token) == "key_mismatch"


async def test_malformed_and_oversized(issuer: DevIssuer, http: httpx.AsyncClient) -> None:
    verifier = _verifier(issuer, http)
    assert await _code(verifier, "a.b") == "malformed_token"
    assert await _code(verifier, "e30.e30.") == "unknown_issuer"
    assert await _code(verifier, "x" * 20_000) == "oversized_token"


async def test_rotation_is_picked_up_by_unknown_kid(
    issuer: DevIssuer, http: httpx.AsyncClient
) -> None:
    verifier = _verifier(issuer, http, jwks_refetch_cooldown_seconds=0)
    await verifier.verify(issuer.mint(subject="w", audience=AUD))
    issuer.rotate_key()
    await verifier.verify(issuer.mint(subject="w", audience=AUD))
    assert issuer.jwks_requests == 2


async def test_unknown_kid_refetch_has_a_cooldown(
    issuer: DevIssuer, http: httpx.AsyncClient
) -> None:
    verifier = _verifier(issuer, http, jwks_refetch_cooldown_seconds=60)
    await verifier.verify(issuer.mint(subject="w", audience=AUD))
    for _ in range(5):
        token = issuer.mint(subject="w", audience=AUD, kid="forged-kid")
        assert await _code(verifier, token) == "unknown_key"
    assert issuer.jwks_requests == 1  # no JWKS flood from forged kids


async def test_idp_down_keeps_cached_keys_and_recovers(
    issuer: DevIssuer, http: httpx.AsyncClient
) -> None:
    verifier = _verifier(issuer, http, jwks_refetch_cooldown_seconds=0,
                         jwks_refresh_seconds=0.001)
    await verifier.verify(issuer.mint(subject="w", audience=AUD))
    issuer.available = False
    time.sleep(0.01)
    await verifier.verify(issuer.mint(subject="w", audience=AUD))  # cached key serves
    new_kid = issuer.rotate_key()
    assert await _code(verifier, issuer.mint(subject="w", audience=AUD)) == "unknown_key"
    issuer.available = True
    identity = await verifier.verify(issuer.mint(subject="w", audience=AUD, kid=new_kid))
    assert identity.subject == "w"


async def test_unreachable_issuer_is_unavailable(http: httpx.AsyncClient) -> None:
    with DevIssuer() as gone:
        token = gone.mint(subject="w", audience=AUD)
        verifier = _verifier(gone, http)
    with pytest.raises(IdentityUnavailable) as down:
        await verifier.verify(token)
    assert down.value.code == "idp_unreachable"


@pytest.mark.parametrize("config", [
    {"algorithms": ["HS256"]}, {"algorithms": ["none"]},
    {"issuer": "http://idp.example"}, {"audiences": []},
])
def test_unsafe_issuer_configs_are_refused(config: dict[str, Any]) -> None:
    base = {"issuer": "https://idp.example", "audiences": [AUD]}
    with pytest.raises(ValidationError):
        OidcIssuerConfig(**{**base, **config})


async def test_an_unconfigured_issuer_is_never_contacted(http: httpx.AsyncClient) -> None:
    """SSRF through `iss` (or through `jku`/`x5u`, refused before any fetch): the gateway
    only ever fetches from issuers in its own configuration."""
    with DevIssuer() as configured, DevIssuer() as attacker:
        token = attacker.mint(subject="w", audience=AUD,
                              headers={"jku": attacker.jwks_uri})
        before = attacker.jwks_requests
        verifier = _verifier(configured, http)
        assert await _code(verifier, token) == "unknown_issuer"
        forged = configured.mint(subject="w", audience=AUD,
                                 headers={"jku": attacker.jwks_uri, "x5u": attacker.jwks_uri})
        assert await _code(verifier, forged) == "forbidden_header"
        assert attacker.jwks_requests == before == 0


def _clocked_verifier(issuer: DevIssuer, http: httpx.AsyncClient,
                      now: list[float]) -> OidcVerifier:
    """A verifier whose clock is ``now[0]`` (5 s leeway), for the cache's time checks."""
    return OidcVerifier([OidcIssuerConfig(issuer=issuer.issuer, audiences=[AUD],
                                          leeway_seconds=5)], http, clock=lambda: now[0])


async def test_a_verified_token_is_served_from_the_cache_until_it_expires(
    issuer: DevIssuer, http: httpx.AsyncClient
) -> None:
    now = [time.time()]
    verifier = _clocked_verifier(issuer, http, now)
    token = issuer.mint(subject="w", audience=AUD, lifetime=60)
    first = await verifier.verify(token)
    again = await verifier.verify(token)
    assert again == first and (verifier.tokens.hits, verifier.tokens.misses) == (1, 1)
    now[0] += 60 + 5 + 1  # past exp plus leeway: the cached entry must not outlive it
    assert await _code(verifier, token) == "expired_token"
    assert len(verifier.tokens) == 0


async def test_the_waitless_cache_lookup_agrees_with_verify(
    issuer: DevIssuer, http: httpx.AsyncClient
) -> None:
    # The handler asks the cache first, without a timer: it must refuse what verify
    # refuses and never answer for a token that was not verified.
    now = [time.time()]
    verifier = _clocked_verifier(issuer, http, now)
    token = issuer.mint(subject="w", audience=AUD, lifetime=60)
    assert verifier.cached(token) is None
    assert verifier.cached("x" * 20_000) is None  # oversized: verify refuses it
    verified = await verifier.verify(token)
    assert verifier.cached(token) == verified
    now[0] += 60 + 5 + 1
    with pytest.raises(IdentityError) as expired:
        verifier.cached(token)
    assert expired.value.code == "expired_token" and verifier.cached(token) is None


async def test_a_cached_token_is_refused_once_its_key_leaves_the_jwks(
    issuer: DevIssuer, http: httpx.AsyncClient
) -> None:
    verifier = _verifier(issuer, http, jwks_refresh_seconds=0.05,
                         jwks_refetch_cooldown_seconds=0)
    old_kid = issuer.public_jwk()["kid"]
    token = issuer.mint(subject="w", audience=AUD)
    await verifier.verify(token)
    issuer.rotate_key()
    issuer.remove_key(old_kid)  # the IdP withdraws the key, e.g. after a compromise
    await asyncio.sleep(0.1)
    with contextlib.suppress(IdentityError):
        await verifier.verify(token)  # may still be served while the refresh runs
    await asyncio.sleep(0.2)  # the background refresh has replaced the key set
    assert await _code(verifier, token) == "unknown_key"
    assert await _code(verifier, token) == "unknown_key"  # and it is not cached again


async def test_refused_tokens_are_never_cached(issuer: DevIssuer,
                                               http: httpx.AsyncClient) -> None:
    verifier = _verifier(issuer, http)
    forged = issuer.mint(subject="w", audience=AUD, kid=issuer.public_jwk()["kid"],
                         key=DevIssuer.foreign_private_key())
    for _ in range(2):
        assert await _code(verifier, forged) == "bad_signature"
    assert (len(verifier.tokens), verifier.tokens.hits) == (0, 0)


async def test_cache_size_zero_verifies_every_time(issuer: DevIssuer,
                                                   http: httpx.AsyncClient) -> None:
    verifier = OidcVerifier([OidcIssuerConfig(issuer=issuer.issuer, audiences=[AUD])], http,
                            token_cache_size=0)
    token = issuer.mint(subject="w", audience=AUD)
    await verifier.verify(token)
    await verifier.verify(token)
    assert (len(verifier.tokens), verifier.tokens.hits) == (0, 0)


async def test_a_lone_surrogate_token_is_malformed_not_a_crash(
    issuer: DevIssuer, http: httpx.AsyncClient
) -> None:
    # A JSON-escaped "\ud800" in the envelope decodes to a lone surrogate: it is hashed
    # for the cache lookup and then refused like any other garbage.
    assert await _code(_verifier(issuer, http), "a.\ud800.b") == "malformed_token"
