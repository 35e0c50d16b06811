"""`nats-gateway nats-config` for operator mode: the JWTs and files nats-server needs.

From the operator-mode keys (``keys generate --operator``) and the gateway config it
writes, into one directory:

- ``nats-server.conf``: trusts the operator, preloads the system, callout and target
  account JWTs (memory resolver). The callout account's JWT holds the ``authorization``
  section: the gateway's user in ``auth_users``, the target accounts in
  ``allowed_accounts``, and the xkey.
- ``gateway.jwt``: the gateway's own user (its seed stays in ``nats.user_seed_file``).
- ``worker.creds``: the sentinel credential workers connect with beside their envelope:
  a bearer user that may do nothing; the callout decides what they get.

nsc users can do the same by hand: the steps are in docs/operator-mode.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewaySettings, read_seed
from gateway.errors import ConfigError
from gateway.keyfiles import OPERATOR_FILE, SYSTEM_ACCOUNT_FILE
from gateway.natsconf import render_operator_config
from gateway.natsjwt.accounts import account_jwt, creds_text, operator_jwt, user_jwt
from gateway.natsjwt.nkeys import CurveKeyPair, InvalidNkey, Prefix, SigningKeyPair

__all__ = ["OperatorFiles", "write_operator_files"]


@dataclass(frozen=True)
class OperatorFiles:
    server_config: Path
    gateway_jwt: Path
    worker_creds: Path


def _pair(path: Path, prefix: Prefix, what: str) -> SigningKeyPair:
    try:
        return SigningKeyPair.from_seed(read_seed(path, what), prefix)
    except InvalidNkey as exc:
        raise ConfigError(f"{what} seed `{path}` is not a valid {prefix.name.lower()} seed") \
            from exc


def _write(path: Path, text: str, *, secret: bool) -> None:
    if secret:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    else:
        path.write_text(text)


def write_operator_files(settings: GatewaySettings, keys: Path, out: Path, *, host: str,
                         port: int, ports_file_dir: str | None = None) -> OperatorFiles:
    if settings.nats.mode != "operator":
        raise ConfigError("nats.mode is not `operator` in this config")
    now = int(time.time())
    operator = _pair(keys / OPERATOR_FILE, Prefix.OPERATOR, "operator")
    system = _pair(keys / SYSTEM_ACCOUNT_FILE, Prefix.ACCOUNT, "system account")
    callout = _pair(settings.keys.issuer_seed_file, Prefix.ACCOUNT, "callout account (issuer)")
    gateway_user = _pair(settings.nats.user_seed_file, Prefix.USER, "gateway user")
    xkey = None
    if settings.keys.xkey_seed_file is not None:
        xkey = CurveKeyPair.from_seed(read_seed(settings.keys.xkey_seed_file, "xkey"))

    jwts = {system.public_key: account_jwt(operator, name="SYS", account=system.public_key,
                                           now=now)}
    allowed = []
    for name, account in settings.nats.accounts.items():
        assert account.signing_key_file is not None
        signer = _pair(account.signing_key_file, Prefix.ACCOUNT, f"account {name} signing")
        public = account.public_key or signer.public_key
        signing_keys = [signer.public_key] if signer.public_key != public else []
        jwts[public] = account_jwt(operator, name=name, account=public, now=now,
                                   signing_keys=signing_keys)
        allowed.append(public)
    jwts[callout.public_key] = account_jwt(
        operator, name=settings.nats.auth_account, account=callout.public_key, now=now,
        auth_users=[gateway_user.public_key], allowed_accounts=allowed,
        xkey=xkey.public_key if xkey else None)

    out.mkdir(parents=True, exist_ok=True)
    files = OperatorFiles(out / "nats-server.conf", out / "gateway.jwt", out / "worker.creds")
    _write(files.server_config, render_operator_config(
        operator_jwt=operator_jwt(operator, name="nats-gateway", now=now,
                                  system_account=system.public_key),
        system_account=system.public_key, account_jwts=jwts, host=host, port=port,
        ports_file_dir=ports_file_dir), secret=False)
    _write(files.gateway_jwt, user_jwt(callout, name="nats-gateway", now=now,
                                       user=gateway_user.public_key) + "\n", secret=False)
    sentinel = SigningKeyPair.generate(Prefix.USER)
    _write(files.worker_creds, creds_text(
        user_jwt(callout, name="worker-sentinel", user=sentinel.public_key, now=now,
                 bearer=True, deny_all=True), sentinel.seed), secret=True)
    return files
