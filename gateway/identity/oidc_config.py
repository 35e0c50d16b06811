"""Per-issuer OIDC settings: what the gateway binds for each issuer it trusts.

Everything that decides acceptance comes from here, never from the token (STYLE.md:
bind explicitly): the exact issuer, the accepted audiences, the pinned algorithms, the
leeway and the longest lifetime a token may claim.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ASYMMETRIC_ALGORITHMS", "OidcIssuerConfig", "is_loopback_url"]

# No HS*: a shared secret cannot be a public identity provider's key, and accepting it
# next to RS* is the classic key-confusion hole. No `none`, ever.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OidcIssuerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", description="short name policies may use for this issuer")
    issuer: str = Field(description="exact `iss` value, also the discovery base URL")
    audiences: tuple[str, ...] = Field(min_length=1, description="accepted `aud` values")
    algorithms: tuple[str, ...] = Field(default=("RS256",), min_length=1)
    jwks_uri: str | None = Field(default=None, description="skip discovery and use this")
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    max_lifetime_seconds: int = Field(default=86_400, gt=0)
    jwks_refresh_seconds: float = Field(default=300.0, gt=0)
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0)
    http_timeout_seconds: float = Field(default=1.0, gt=0, le=10)
    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) for this issuer's https endpoints; "
                                  "default: `oidc.ca_file`, else the public CAs (certifi)")
    allow_plain_http: bool = Field(
        default=False, description="accept http:// off loopback: sample stacks only (the "
                                   "compose file's sample issuer); never for a real IdP")

    @field_validator("algorithms")
    @classmethod
    def _only_asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ValueError(f"algorithm `{bad[0]}` is not allowed: use RS*, PS*, ES* or EdDSA")
        return value

    @model_validator(mode="after")
    def _https_unless_loopback(self) -> OidcIssuerConfig:
        for url in (self.issuer, self.jwks_uri):
            if url is None:
                continue
            scheme = urlsplit(url).scheme
            if scheme == "https" or (scheme == "http" and (
                    is_loopback_url(url) or self.allow_plain_http)):
                continue
            raise ValueError(f"`{url}` must use https (http only on loopback)")
        return self
