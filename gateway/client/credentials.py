"""Build credential envelopes; fetch an OAuth2 client-credentials token (authlib).

authlib's httpx integration is deprecated in favour of `httpx2`; its requests
integration is stable and `requests` is already on every Airflow worker.
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.requests_client import OAuth2Session

from gateway.envelope import Scope, build_envelope

__all__ = ["fetch_client_credentials_token", "oidc_envelope"]


def oidc_envelope(token: str, *, dag_id: str, task_id: str, run_id: str | None = None) -> str:
    """The CONNECT auth_token for an OIDC identity acting for one DAG/task(/run)."""
    return build_envelope("oidc", token, Scope(dag_id=dag_id, task_id=task_id, run_id=run_id))


def fetch_client_credentials_token(
    token_endpoint: str, client_id: str, client_secret: str, *, timeout: float = 5.0,
    **extra: str,
) -> str:
    """An access token from an OAuth2 token endpoint (RFC 6749 section 4.4)."""
    with OAuth2Session(client_id, client_secret) as oauth:
        token: dict[str, Any] = oauth.fetch_token(
            token_endpoint, grant_type="client_credentials", timeout=timeout, **extra)
    access_token = token.get("access_token")
    if not isinstance(access_token, str):
        raise ValueError("token endpoint returned no access_token")
    return access_token
