"""OIDC token verification, per configured issuer.

The checks, in order, each refusing with a named IdentityError code:

1. shape and size: a compact JWS of at most ``MAX_TOKEN_BYTES``;
2. header: ``alg`` must be one the *issuer's configuration* pins (so `none` and HS* are
   refused before any key is touched); ``jku``/``x5u``/``jwk``/``x5c`` (key material or
   key locations chosen by the token, RFC 8725 section 3.10) and ``crit`` are refused;
3. issuer: the unverified ``iss`` selects a configured issuer, and only that issuer's
   keys; an unconfigured issuer is refused;
4. key: by ``kid`` from the issuer's JWKS cache; the JWK's ``kty`` (and ``alg`` when it
   has one) must fit the header ``alg`` (no key confusion);
5. signature and claims (PyJWT, with ``require`` because PyJWT checks ``exp``/``iat``
   only when present): ``iss`` exact, ``aud`` one of the configured, ``exp``, ``nbf``,
   ``iat`` not in the future, all with the issuer's leeway;
6. lifetime: ``exp - iat`` at most ``max_lifetime_seconds``.

A token that passed all of them is cached by its hash until it expires
(``identity/token_cache.py``); each later use re-runs the time checks and confirms its
key is still in the issuer's JWKS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import jwt

from gateway.errors import IdentityError
from gateway.identity.jwks import JwksCache
from gateway.identity.model import Identity, fingerprint
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.identity.token_cache import CachedToken, TokenCache

__all__ = ["MAX_TOKEN_BYTES", "OidcVerifier"]

MAX_TOKEN_BYTES = 12 * 1024
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
_KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_REQUIRED = ["iss", "aud", "exp", "iat", "sub"]


def _unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if token.count(".") != 2:
        raise IdentityError("token is not a compact jws", code="malformed_token")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.InvalidTokenError, ValueError, json.JSONDecodeError) as exc:
        raise IdentityError("token is not a decodable jwt", code="malformed_token") from exc
    if not isinstance(claims, dict):
        raise IdentityError("token claims are not an object", code="malformed_token")
    return header, claims


def _check_header(header: Mapping[str, Any], config: OidcIssuerConfig) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in config.algorithms:
        raise IdentityError(f"algorithm `{alg}` is not allowed for `{config.issuer}`",
                            code="algorithm_not_allowed")
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise IdentityError(f"token header `{name}` is refused", code="forbidden_header")
    return alg


def _key_for(jwk: Mapping[str, Any], alg: str) -> Any:
    if jwk.get("kty") != _KTY_FOR_ALG.get(alg[:2]) or jwk.get("alg", alg) != alg:
        raise IdentityError(f"key `{jwk.get('kid')}` does not fit algorithm `{alg}`",
                            code="key_mismatch")
    try:
        return jwt.PyJWK(dict(jwk), algorithm=alg).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise IdentityError(f"key `{jwk.get('kid')}` is unusable", code="bad_jwks") from exc


_PYJWT_ERRORS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired_token", "token is expired"),
    (jwt.ImmatureSignatureError, "token_not_yet_valid", "token is not yet valid"),
    (jwt.InvalidAudienceError, "wrong_audience", "token audience is not accepted"),
    (jwt.InvalidIssuerError, "wrong_issuer", "token issuer does not match"),
    (jwt.MissingRequiredClaimError, "missing_claim", "token lacks a required claim"),
    (jwt.InvalidSignatureError, "bad_signature", "token signature does not verify"),
    (jwt.InvalidIssuedAtError, "token_not_yet_valid", "token is issued in the future"),
)


def _translate(exc: jwt.InvalidTokenError) -> IdentityError:
    for kind, code, text in _PYJWT_ERRORS:
        if isinstance(exc, kind):
            if isinstance(exc, jwt.MissingRequiredClaimError):
                text = f"token lacks required claim `{exc.claim}`"
            return IdentityError(text, code=code)
    return IdentityError("token does not verify", code="invalid_token")


def validate_signed_claims(
    token: str, key: Any, alg: str, config: OidcIssuerConfig, now: float
) -> dict[str, Any]:
    """Signature and claim checks (steps 5 and 6); pure, ``now`` injected."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[alg], audience=list(config.audiences),
            issuer=config.issuer, leeway=config.leeway_seconds,
            options={"require": _REQUIRED, "verify_iat": False, "verify_exp": False,
                     "verify_nbf": False},
        )
    except jwt.InvalidTokenError as exc:
        raise _translate(exc) from exc
    _check_times(claims, config, now)
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise IdentityError("token `sub` must be a non-empty string", code="missing_claim")
    return claims


def _check_times(claims: Mapping[str, Any], config: OidcIssuerConfig, now: float) -> None:
    # Done here rather than by PyJWT so the clock is injectable and the rules are visible.
    leeway = config.leeway_seconds
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)
    for name, value in (("exp", exp), ("iat", iat), ("nbf", nbf)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise IdentityError(f"token `{name}` is not a number", code="malformed_token")
    assert isinstance(exp, int | float) and isinstance(iat, int | float)
    if now > exp + leeway:
        raise IdentityError("token is expired", code="expired_token")
    if iat > now + leeway or nbf > now + leeway:
        raise IdentityError("token is not yet valid", code="token_not_yet_valid")
    if exp - iat > config.max_lifetime_seconds:
        raise IdentityError(
            f"token lifetime exceeds {config.max_lifetime_seconds}s for `{config.issuer}`",
            code="lifetime_too_long")


class OidcVerifier:
    """Verifies OIDC tokens against the configured issuers; owns one JWKS cache each."""

    def __init__(
        self, issuers: Sequence[OidcIssuerConfig],
        http: httpx.AsyncClient | Callable[[OidcIssuerConfig], httpx.AsyncClient], *,
        clock: Callable[[], float] = time.time, token_cache_size: int = 10_000,
    ) -> None:
        # One client for all, or one per issuer (an issuer's own CA bundle: tls/http.py).
        client_for = http if callable(http) else (lambda _config: http)
        self._configs = {config.issuer: config for config in issuers}
        self._caches = {config.issuer: JwksCache(config, client_for(config))
                        for config in issuers}
        self._clock = clock
        self.tokens = TokenCache(token_cache_size)

    @property
    def caches(self) -> Mapping[str, JwksCache]:
        return self._caches

    async def warm(self) -> None:
        for cache in self._caches.values():
            await cache.warm()

    def cached(self, token: str) -> Identity | None:
        """The identity of ``token`` if it was verified before and every check that can
        change since still passes; None when it must be verified (again). Raises what
        :meth:`verify` raises for a cached token whose time ran out."""
        if len(token) > MAX_TOKEN_BYTES:
            return None  # verify refuses it
        return self._cached(fingerprint(token))

    def _cached(self, token_hash: str) -> Identity | None:
        cached = self.tokens.get(token_hash)
        if cached is not None and self._still_valid(cached, token_hash):
            return cached.identity
        return None

    async def verify(self, token: str) -> Identity:
        if len(token) > MAX_TOKEN_BYTES:
            raise IdentityError(f"token exceeds {MAX_TOKEN_BYTES} bytes", code="oversized_token")
        token_hash = fingerprint(token)
        identity = self._cached(token_hash)
        if identity is not None:
            return identity
        identity, kid, jwk = await self._verify_fully(token, token_hash)
        self.tokens.put(token_hash, CachedToken(identity, kid, jwk), self._clock())
        return identity

    def _still_valid(self, cached: CachedToken, token_hash: str) -> bool:
        """Re-run what can change while a verified token is cached; a token whose time
        ran out is refused as such, one whose key left the JWKS is verified afresh."""
        identity = cached.identity
        config = self._configs[identity.issuer]
        try:
            _check_times(identity.claims, config, self._clock())
        except IdentityError:
            self.tokens.discard(token_hash)
            raise
        if not self._caches[identity.issuer].is_current(cached.kid, cached.jwk):
            self.tokens.discard(token_hash)
            return False
        return True

    async def _verify_fully(self, token: str,
                            token_hash: str) -> tuple[Identity, str | None, dict[str, Any]]:
        header, unverified = _unverified_parts(token)
        issuer = unverified.get("iss")
        config = self._configs.get(issuer) if isinstance(issuer, str) else None
        if config is None:
            raise IdentityError(f"issuer `{str(issuer)[:200]}` is not configured",
                                code="unknown_issuer")
        alg = _check_header(header, config)
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        jwk = await self._caches[config.issuer].get(kid)
        claims = validate_signed_claims(token, _key_for(jwk, alg), alg, config, self._clock())
        identity = Identity(
            method="oidc", issuer=config.issuer, issuer_name=config.name,
            subject=claims["sub"], expires=int(claims["exp"]),
            fingerprint=token_hash, claims=claims,
        )
        return identity, kid, jwk
