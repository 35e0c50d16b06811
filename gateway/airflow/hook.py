"""A NATS connection through the gateway, built from an Airflow Connection.

The scope requested is the running task's (from its context), or an explicit one for
triggers, which run outside any task. The client reconnects with a fresh credential
whenever its grant expires (gateway.client.connect). A connect the gateway refuses
raises :class:`gateway.client.GatewayRefused`, whose message says where the denial is
recorded; a TLS failure (untrusted, expired or misnamed certificate) raises
:class:`gateway.client.TlsError` naming the address and the cause; nats errors are
logged one line each (nats-py's default logs a traceback).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook
from nats.aio.client import Client

from gateway.client import (
    AwsIamCredentials,
    ClientCredentialsToken,
    CredentialSource,
    OidcToken,
    OidcTokenFile,
    RefusalPolicy,
    Scope,
    connect,
)

__all__ = ["NatsGatewayHook"]

_TLS_EXTRAS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_hostname")


class NatsGatewayHook(BaseHook):
    conn_name_attr = "nats_conn_id"
    default_conn_name = "nats_gateway_default"
    conn_type = "nats_gateway"
    hook_name = "NATS through nats-gateway"

    def __init__(self, nats_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.nats_conn_id = nats_conn_id

    def _connection(self) -> Any:
        return self.get_connection(self.nats_conn_id)

    def servers(self) -> str:
        """``tls://`` when the connection has TLS extras, so the scheme says what the
        client enforces (it refuses a server that does not require TLS either way)."""
        conn = self._connection()
        scheme = "tls" if self._tls_extras(conn.extra_dejson) else "nats"
        return f"{scheme}://{conn.host}:{conn.port or 4222}"

    @staticmethod
    def _tls_extras(extra: dict[str, Any]) -> dict[str, Any]:
        """``tls_ca_file``, ``tls_cert_file``, ``tls_key_file`` (paths on the worker) and
        ``tls_hostname`` (the name the server's certificate must carry)."""
        return {k: v for k, v in extra.items() if k in _TLS_EXTRAS and v}

    def credential_source(self) -> CredentialSource:
        conn = self._connection()
        extra = conn.extra_dejson
        kind = extra.get("credential", "token_file")
        if kind == "token_file":
            return OidcTokenFile(extra["token_file"])
        if kind == "token":
            return OidcToken(extra["token"])
        if kind == "client_credentials":
            params = {k: v for k, v in extra.items() if k in ("audience", "scope")}
            return ClientCredentialsToken(extra["token_endpoint"], conn.login or "",
                                          conn.password or "", **params)
        if kind == "aws_iam":
            return AwsIamCredentials(gateway_id=extra["gateway_id"], region=extra["region"],
                                     sts_endpoint=extra.get("sts_endpoint"))
        raise ValueError(f"connection {self.nats_conn_id}: unknown credential `{kind}`")

    async def connect(self, scope: Scope, **options: Any) -> Client:
        """:func:`gateway.client.connect` with this connection's servers and credential;
        raises :class:`gateway.client.GatewayRefused` when the gateway refuses it."""
        extra = self._connection().extra_dejson
        if extra.get("creds_file"):
            options.setdefault("user_credentials", extra["creds_file"])
        options.setdefault("error_cb", self._log_nats_error)
        if extra.get("refusals"):
            options.setdefault("refusals", self._refusal_policy(extra["refusals"]))
        for key, value in self._tls_extras(extra).items():
            options.setdefault(key, value)
        return await connect(self.servers(), self.credential_source(), scope=scope,
                             **options)

    def _refusal_policy(self, settings: Any) -> RefusalPolicy:
        names = {"connect_attempts", "give_up_after", "backoff_cap_seconds"}
        if not isinstance(settings, dict) or not set(settings) <= names:
            raise ValueError(f"connection `{self.nats_conn_id}`: `refusals` takes only "
                             f"{', '.join(sorted(names))}")
        return RefusalPolicy(**settings)

    async def _log_nats_error(self, exc: Exception) -> None:
        self.log.warning("%s", exc)  # nats-py's messages start with `nats:`
