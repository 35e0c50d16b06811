"""The worker-side helpers: scope from Airflow's context, credential sources."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest

from gateway.client import ClientCredentialsToken, OidcTokenFile, Scope, scope_from_airflow
from gateway.dev.issuer import DevIssuer
from gateway.errors import CredentialError


def test_scope_from_the_airflow_environment() -> None:
    env = {"AIRFLOW_CTX_DAG_ID": "etl", "AIRFLOW_CTX_TASK_ID": "grp.load",
           "AIRFLOW_CTX_DAG_RUN_ID": "scheduled__2026-11-24T00:00:00+00:00"}
    assert scope_from_airflow(environ=env) == Scope(
        "etl", "grp.load", "scheduled__2026-11-24T00:00:00+00:00")
    assert scope_from_airflow(environ={"AIRFLOW_CTX_DAG_ID": "etl",
                                       "AIRFLOW_CTX_TASK_ID": "load"}).run_id is None
    with pytest.raises(ValueError, match="not inside an Airflow task"):
        scope_from_airflow(environ={})


def test_scope_from_the_task_context_dict() -> None:
    ti = SimpleNamespace(dag_id="etl", task_id="load", run_id="manual__1")
    assert scope_from_airflow({"ti": ti}) == Scope("etl", "load", "manual__1")
    assert scope_from_airflow({"task_instance": ti}) == Scope("etl", "load", "manual__1")
    with pytest.raises(ValueError, match="no `ti`"):
        scope_from_airflow({"dag": object()})


def test_scope_from_airflow_is_checked_like_the_envelope() -> None:
    with pytest.raises(CredentialError, match="dag_id"):
        scope_from_airflow(environ={"AIRFLOW_CTX_DAG_ID": "etl.>", "AIRFLOW_CTX_TASK_ID": "x"})


def test_token_file_is_reread_on_every_proof(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    source = OidcTokenFile(path)
    assert source.proof() == "first"
    path.write_text("second")
    assert source.proof() == "second"
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        source.proof()


async def test_client_credentials_are_fetched_in_the_background_and_cached() -> None:
    with DevIssuer() as issuer:
        source = ClientCredentialsToken(issuer.issuer + "/token", issuer.client_id,
                                        issuer.client_secret, audience="nats-gateway",
                                        dag_id="etl", task_id="load")
        with pytest.raises(RuntimeError, match="refresh"):
            source.proof()
        await source.refresh()
        token = source.proof()
        claims = jwt.decode(token, options={"verify_signature": False})
        assert (claims["aud"], claims["dag_id"], claims["task_id"]) == (
            "nats-gateway", "etl", "load")
        await source.refresh()  # still fresh: no new fetch
        assert source.proof() == token
