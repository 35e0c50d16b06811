"""The dev OIDC issuer, over real HTTP: discovery, JWKS, rotation, token endpoint, outages."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from gateway.dev.issuer import DevIssuer

AUD = "nats-gateway"


@pytest.fixture(params=["RS256", "ES256"])
def issuer(request: pytest.FixtureRequest) -> Iterator[DevIssuer]:
    with DevIssuer(algorithm=request.param) as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def _jwks(issuer: DevIssuer, http: httpx.Client) -> dict[str, Any]:
    response = http.get(issuer.jwks_uri)
    assert response.status_code == 200
    keys: dict[str, Any] = response.json()
    return keys


def _verify(issuer: DevIssuer, http: httpx.Client, token: str) -> dict[str, Any]:
    """Verify as a relying party would: the key comes from the JWKS fetched over HTTP."""
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [key for key in _jwks(issuer, http)["keys"] if key["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=[issuer.algorithm], audience=AUD,
        issuer=issuer.issuer)
    return claims


def _token_request(issuer: DevIssuer, http: httpx.Client, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_id": issuer.client_id,
            "client_secret": issuer.client_secret, **form}
    return http.post(issuer.issuer + "/token", data=data)


def _segment(token: str, index: int) -> dict[str, Any]:
    raw = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return decoded


def test_discovery_document(issuer: DevIssuer, http: httpx.Client) -> None:
    response = http.get(issuer.issuer + "/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["issuer"] == issuer.issuer
    assert not issuer.issuer.endswith("/")
    assert issuer.issuer.startswith("http://127.0.0.1:")
    assert document["jwks_uri"] == issuer.jwks_uri == issuer.issuer + "/jwks"
    assert document["token_endpoint"] == issuer.issuer + "/token"
    assert document["id_token_signing_alg_values_supported"] == [issuer.algorithm]
    assert document["grant_types_supported"] == ["client_credentials"]


def test_jwks_holds_the_public_key_only(issuer: DevIssuer, http: httpx.Client) -> None:
    [jwk] = _jwks(issuer, http)["keys"]
    assert jwk == issuer.public_jwk()
    assert (jwk["use"], jwk["alg"]) == ("sig", issuer.algorithm)
    assert jwk["kty"] == ("RSA" if issuer.algorithm == "RS256" else "EC")
    assert "d" not in jwk  # no private parameter leaks into the JWKS


def test_minted_token_verifies_against_the_jwks(issuer: DevIssuer, http: httpx.Client) -> None:
    token = issuer.mint(subject="worker", audience=AUD, claims={"dag_id": "etl"})
    assert jwt.get_unverified_header(token)["alg"] == issuer.algorithm
    claims = _verify(issuer, http, token)
    assert (claims["sub"], claims["aud"], claims["dag_id"]) == ("worker", AUD, "etl")
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"]
    assert claims["jti"]


def test_rotation_keeps_the_old_key_published(issuer: DevIssuer, http: httpx.Client) -> None:
    old_kid = issuer.public_jwk()["kid"]
    old_token = issuer.mint(subject="worker", audience=AUD)
    new_kid = issuer.rotate_key()
    assert new_kid != old_kid
    assert issuer.public_jwk()["kid"] == new_kid
    assert {key["kid"] for key in _jwks(issuer, http)["keys"]} == {old_kid, new_kid}
    new_token = issuer.mint(subject="worker", audience=AUD)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert _verify(issuer, http, old_token)["sub"] == "worker"
    assert _verify(issuer, http, new_token)["sub"] == "worker"


def test_foreign_key_keeps_the_kid_but_fails_verification(
    issuer: DevIssuer, http: httpx.Client
) -> None:
    token = issuer.mint(subject="worker", audience=AUD,
                        key=DevIssuer.foreign_private_key(issuer.algorithm))
    assert jwt.get_unverified_header(token)["kid"] == issuer.public_jwk()["kid"]
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(issuer, http, token)


def test_a_none_claim_is_removed(issuer: DevIssuer, http: httpx.Client) -> None:
    token = issuer.mint(subject="worker", audience=AUD, claims={"exp": None, "jti": None})
    claims = _verify(issuer, http, token)
    assert "exp" not in claims and "jti" not in claims
    assert claims["sub"] == "worker"


def test_mint_overrides(issuer: DevIssuer) -> None:
    token = issuer.mint(subject="worker", audience=["a", "b"], now=1_000, lifetime=60,
                        issuer="https://elsewhere.example", kid="forged",
                        headers={"typ": "at+jwt"})
    header, claims = _segment(token, 0), _segment(token, 1)
    assert (header["kid"], header["typ"]) == ("forged", "at+jwt")
    assert (claims["iss"], claims["aud"]) == ("https://elsewhere.example", ["a", "b"])
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (1_000, 1_000, 1_060)


def test_mint_hs256_with_a_bytes_secret(issuer: DevIssuer) -> None:
    secret = b"k" * 32
    token = issuer.mint(subject="worker", audience=AUD, key=secret, algorithm="HS256")
    assert jwt.get_unverified_header(token) == {
        "alg": "HS256", "typ": "JWT", "kid": issuer.public_jwk()["kid"]}
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience=AUD)
    assert claims["sub"] == "worker"


def test_mint_unsigned(issuer: DevIssuer) -> None:
    token = issuer.mint_unsigned(subject="worker", audience=AUD)
    assert token.endswith(".") and token.count(".") == 2
    assert _segment(token, 0) == {"alg": "none", "typ": "JWT", "kid": issuer.public_jwk()["kid"]}
    claims = _segment(token, 1)
    assert (claims["iss"], claims["sub"], claims["aud"]) == (issuer.issuer, "worker", AUD)
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, "", algorithms=[issuer.algorithm])


def test_token_endpoint_issues_a_verifiable_token(issuer: DevIssuer, http: httpx.Client) -> None:
    response = _token_request(issuer, http, dag_id="etl", task_id="load")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 600)
    claims = _verify(issuer, http, body["access_token"])
    assert claims["sub"] == issuer.client_id
    assert (claims["dag_id"], claims["task_id"]) == ("etl", "load")


def test_token_endpoint_form_overrides(issuer: DevIssuer, http: httpx.Client) -> None:
    response = _token_request(issuer, http, audience="other", subject="someone")
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert (claims["aud"], claims["sub"]) == ("other", "someone")
    assert "dag_id" not in claims


def test_token_endpoint_accepts_basic_auth(issuer: DevIssuer, http: httpx.Client) -> None:
    response = http.post(issuer.issuer + "/token", data={"grant_type": "client_credentials"},
                         auth=(issuer.client_id, issuer.client_secret))
    assert response.status_code == 200
    assert _verify(issuer, http, response.json()["access_token"])["sub"] == issuer.client_id


def test_token_endpoint_refuses_bad_requests(issuer: DevIssuer, http: httpx.Client) -> None:
    wrong = _token_request(issuer, http, client_secret="wrong")
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_client"})
    other_client = _token_request(issuer, http, client_id="someone-else")
    assert other_client.status_code == 401
    basic = http.post(issuer.issuer + "/token", data={"grant_type": "client_credentials"},
                      auth=(issuer.client_id, "wrong"))
    assert basic.status_code == 401
    assert basic.headers["www-authenticate"].startswith("Basic")
    grant = _token_request(issuer, http, grant_type="password")
    assert (grant.status_code, grant.json()) == (400, {"error": "unsupported_grant_type"})
    repeated = http.post(issuer.issuer + "/token",
                         content=b"grant_type=client_credentials&grant_type=password",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert repeated.status_code == 400
    oversized = _token_request(issuer, http, padding="x" * 9000)
    assert oversized.status_code == 413


def test_explicit_client_secret() -> None:
    assert DevIssuer(client_secret="s3cret").client_secret == "s3cret"
    assert DevIssuer().client_secret != DevIssuer().client_secret


def test_unknown_paths_are_404(issuer: DevIssuer, http: httpx.Client) -> None:
    assert http.get(issuer.issuer + "/nope").status_code == 404
    assert http.get(issuer.issuer + "/token").status_code == 404
    assert http.post(issuer.issuer + "/jwks").status_code == 404


def test_unavailable_answers_503_and_counts_jwks(issuer: DevIssuer, http: httpx.Client) -> None:
    _jwks(issuer, http)
    issuer.available = False
    assert http.get(issuer.issuer + "/.well-known/openid-configuration").status_code == 503
    assert http.get(issuer.jwks_uri).status_code == 503
    assert _token_request(issuer, http).status_code == 503
    assert issuer.jwks_requests == 2  # served JWKS GETs, whatever the status
    issuer.available = True
    assert http.get(issuer.jwks_uri).status_code == 200
    assert issuer.jwks_requests == 3


def test_lifecycle() -> None:
    issuer = DevIssuer()
    with pytest.raises(RuntimeError):
        _ = issuer.issuer
    with issuer, pytest.raises(RuntimeError):
        issuer.start()
    url = issuer.issuer  # still known after stop, so tokens for a gone IdP can be minted
    issuer.stop()  # idempotent
    with httpx.Client(timeout=2) as client, pytest.raises(httpx.ConnectError):
        client.get(url + "/jwks")


def test_unsupported_algorithm() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        DevIssuer(algorithm="HS256")
    with pytest.raises(ValueError, match="algorithm"):
        DevIssuer.foreign_private_key("none")
