"""Operator-mode (decentralized JWT) documents: operator, account and user JWTs, creds.

Shapes follow nats-io/jwt v2 (operator_claims.go, account_claims.go, user_claims.go).
The callout account's JWT carries the ``authorization`` section nats-server reads in
operator mode: ``auth_users`` (the gateway's own user, which bypasses the callout),
``allowed_accounts`` (where the gateway may place users) and ``xkey``. Limits are written
out as -1 (unlimited), because an absent limit decodes as 0, which would forbid
everything. Pure: keys in, text out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.natsjwt.codec import encode_signed
from gateway.natsjwt.nkeys import Prefix, SigningKeyPair

__all__ = ["account_jwt", "creds_text", "operator_jwt", "user_jwt"]

_UNLIMITED_ACCOUNT = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                      "wildcards": True, "conn": -1, "leaf": -1}


def operator_jwt(operator: SigningKeyPair, *, name: str, system_account: str,
                 now: int) -> str:
    if operator.prefix is not Prefix.OPERATOR:
        raise ValueError("an operator JWT is signed by an operator key")
    claims = {"name": name, "sub": operator.public_key,
              "nats": {"system_account": system_account, "type": "operator", "version": 2}}
    return encode_signed(claims, operator, issued_at=now)


def account_jwt(operator: SigningKeyPair, *, name: str, account: str, now: int,
                signing_keys: Sequence[str] = (), auth_users: Sequence[str] = (),
                allowed_accounts: Sequence[str] = (), xkey: str | None = None) -> str:
    nats: dict[str, Any] = {"limits": dict(_UNLIMITED_ACCOUNT),
                            "default_permissions": {"pub": {}, "sub": {}},
                            "type": "account", "version": 2}
    if signing_keys:
        nats["signing_keys"] = list(signing_keys)
    if auth_users:
        authorization: dict[str, Any] = {"auth_users": list(auth_users),
                                         "allowed_accounts": list(allowed_accounts)}
        if xkey:
            authorization["xkey"] = xkey
        nats["authorization"] = authorization
    return encode_signed({"name": name, "sub": account, "nats": nats}, operator,
                         issued_at=now)


def user_jwt(account: SigningKeyPair, *, name: str, user: str, now: int,
             bearer: bool = False, deny_all: bool = False) -> str:
    """A user of ``account``. ``deny_all`` with ``bearer`` is the sentinel workers connect
    with: it proves nothing and may do nothing; the callout decides."""
    nats: dict[str, Any] = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                            "type": "user", "version": 2}
    if deny_all:
        nats["pub"] = {"deny": [">"]}
        nats["sub"] = {"deny": [">"]}
    if bearer:
        nats["bearer_token"] = True
    return encode_signed({"name": name, "sub": user, "nats": nats}, account, issued_at=now)


def creds_text(jwt: str, seed: str) -> str:
    """The `.creds` file format nats clients read (nats-py ``user_credentials``)."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
