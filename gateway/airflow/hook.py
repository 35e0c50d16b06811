"""A NATS connection through the gateway, built from an Airflow Connection.

The scope requested is the running task's (from its context), or an explicit one for
triggers, which run outside any task. The client reconnects with a fresh credential
whenever its grant expires (gateway.client.connect). A connect the gateway refuses
raises :class:`gateway.client.GatewayRefused`, whose message says where the denial is
recorded; a TLS failure (untrusted, expired or misnamed certificate) raises
:class:`gateway.client.TlsError` naming the address and the cause; nats errors are
logged one line each (nats-py's default logs a traceback).

The connection type is ``natsgateway`` (no ``_``: Airflow warns about it under RFC 3986
and its CLI downgrades unknown types to ``generic``); the provider registration
(:mod:`gateway.airflow.provider`) gives the UI one form field per ``extra`` key. The
Connection is looked up once per hook, off the event loop in :meth:`connect` (the
lookup is a blocking call to Airflow's API or database, and triggers share one loop).
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.sdk import BaseHook
from nats.aio.client import Client

from gateway.client import (
    AwsIamCredentials,
    ClientCredentialsToken,
    CredentialSource,
    GatewayRefused,
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
    conn_type = "natsgateway"
    hook_name = "NATS through nats-gateway"

    def __init__(self, nats_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.nats_conn_id = nats_conn_id
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.get_connection(self.nats_conn_id)
        return self._conn

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden-fields": ["schema"],
                "relabeling": {"host": "nats-server host", "login": "Client id "
                               "(client_credentials)", "password": "Client secret "
                               "(client_credentials)"},
                "placeholders": {"port": "4222"}}

    def test_connection(self) -> tuple[bool, str]:
        """Connect through the gateway as the scope in ``extra["test_scope"]`` (default
        dag ``airflow`` task ``test_connection``): a policy must allow that scope."""
        raw = self._connection().extra_dejson.get("test_scope") or {}
        scope = Scope(raw.get("dag_id", "airflow"), raw.get("task_id", "test_connection"))

        async def attempt() -> None:
            nc = await self.connect(scope, max_reconnect_attempts=0, connect_timeout=5,
                                    allow_reconnect=False)
            await nc.close()

        try:
            asyncio.run(attempt())
        except GatewayRefused as refused:
            return False, str(refused)
        except Exception as exc:
            return False, f"cannot connect to {self.servers()}: {type(exc).__name__}"
        return True, f"connected through the gateway as dag `{scope.dag_id}` task " \
                     f"`{scope.task_id}`"

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
        extra = (await asyncio.to_thread(self._connection)).extra_dejson
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
