"""The one error tree of the gateway.

Every failure in verifying, deciding or auditing is one of these. Each leaf has a
stable machine ``code``: it is what the audit record stores and what operators
filter on. The ``description`` is a short, non-secret, one-line reason (lowercase,
user input in backticks) that may travel to nats-server and into the audit log: the
quoted input is often a client's (an unsigned token's ``iss``, an envelope key), so the
description is made safe here, once, for every error (:func:`gateway.untrusted.safe_text`:
bounded, escaped, one line).
Third-party exceptions are translated at the edge with ``raise ... from exc`` so
that nothing from a token, seed or signature leaks through ``str(exc)``.

    GatewayError
    ├── RequestError          the authorization request from nats-server is not acceptable
    ├── CredentialError       the worker's credential envelope is malformed or oversized
    ├── IdentityError         the worker's proof of identity does not verify
    │   └── IdentityUnavailable   the identity provider could not be reached in time
    ├── PolicyDenied          no policy grants the requested scope to this identity
    ├── AuditUnavailable      the decision could not be recorded: fail closed
    ├── ConfigError           the gateway's own configuration or keys are unusable
    └── TlsError              a TLS connection to nats-server could not be set up or verified
"""

from __future__ import annotations

from gateway.untrusted import safe_text

__all__ = [
    "AuditUnavailable",
    "ConfigError",
    "CredentialError",
    "GatewayError",
    "IdentityError",
    "IdentityUnavailable",
    "PolicyDenied",
    "RequestError",
    "TlsError",
]

# Room for a quoted value and its context; the record's reason column keeps 200.
MAX_DESCRIPTION = 300


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code: str = "internal_error"

    def __init__(self, description: str, *, code: str | None = None) -> None:
        # Quoted values may already be escaped at their own edge: not a second time.
        description = safe_text(description, MAX_DESCRIPTION, backslash=False)
        super().__init__(description)
        self.description = description
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.description}"


class RequestError(GatewayError):
    """The authorization request JWT from nats-server failed a check (signature, issuer,
    audience, expiry, xkey header); the request is not answered with a grant."""

    code = "bad_request"


class CredentialError(GatewayError):
    """The credential envelope in the CONNECT `auth_token` is missing, not valid JSON,
    of an unknown version or method, oversized, or carries an invalid scope."""

    code = "bad_credential"


class IdentityError(GatewayError):
    """The proof of identity (an OIDC token, an AWS IAM proof) did not verify."""

    code = "invalid_identity"


class IdentityUnavailable(IdentityError):
    """The identity provider (JWKS endpoint, STS) could not answer in time, so no proof
    can be verified: deny, and say so."""

    code = "identity_provider_unavailable"


class PolicyDenied(GatewayError):
    """The identity is valid, but no loaded policy grants it the requested scope."""

    code = "policy_denied"


class AuditUnavailable(GatewayError):
    """The audit store could not durably record the decision: the gateway denies
    rather than grant without a record (Vault's rule)."""

    code = "audit_unavailable"


class ConfigError(GatewayError):
    """The gateway's configuration, keys or policy set cannot be used."""

    code = "config_error"


class TlsError(GatewayError):
    """A TLS connection to nats-server (the gateway's own, or a worker's) could not be set
    up or verified: a certificate expired, signed by a CA that is not trusted or made out
    to another host, a server that does not require TLS where TLS was asked for, or
    certificate files that cannot be loaded. Raised by the first connect instead of
    retrying: a wrong certificate does not fix itself. The description names the address
    and the cause, never key material. (TLS failures towards an identity provider or STS
    are :class:`IdentityUnavailable` with code ``identity_provider_tls``.)"""

    code = "tls_failed"
