"""The systems under test, each a context manager yielding a :class:`System`: a NATS url,
the credential a client presents there, and (for callout systems) the running stack.

- static: nats-server with a password user, no callout (the physical floor);
- no-op callout: ``bench/noop_callout.py`` behind nats-server (the Python callout floor);
- gateway: `nats-gateway serve` with OIDC (the dev issuer) or AWS IAM (moto's STS) and
  the SQLite or PostgreSQL audit store.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import BENCH_DIR, GATEWAY_SERVE, Stack, callout_stack, cpu_seconds
from _load import Credential, StormResult, storm

from gateway.client import oidc_envelope
from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import ACCOUNT, REGION, MotoSts
from gateway.dev.natsserver import NatsServer
from gateway.dev.postgres import postgres_database
from gateway.natsconf import render_static_config

__all__ = ["System", "distinct_workers_credential", "gateway_system", "noop_system",
           "static_system", "storm_with_cpu"]

# `bench-worker*`: the one worker of the connect scenarios and the many distinct workers
# (`bench-worker-N`) of the memory run are all entitled.
OIDC_POLICY = """version: 1
policies:
  - id: bench
    match: {{oidc: {{issuer: "{issuer}", subject: "bench-worker*"}}}}
    scopes: [{{dag: "*"}}]
    permissions:
      publish: {{allow: ["airflow.{{dag_id}}.{{task_id}}.>"]}}
      subscribe: {{allow: ["airflow.{{dag_id}}.{{task_id}}.>"]}}
"""

IAM_POLICY = f"""version: 1
policies:
  - id: bench-iam
    match: {{aws_iam: {{account: "{ACCOUNT}", role: "arn:aws:iam::{ACCOUNT}:role/airflow-*"}}}}
    scopes: [{{dag: "*"}}]
    permissions:
      publish: {{allow: ["airflow.{{dag_id}}.{{task_id}}.>"]}}
"""
IAM_ROLE = "airflow-bench"


@dataclass
class System:
    url: str
    credential: Credential
    stack: Stack | None = None
    audit_url: str | None = None


def storm_with_cpu(system: System, total: int, in_flight: int,
                   processes: int) -> tuple[StormResult, float | None]:
    """A storm against ``system`` and its responder's CPU ms per successful connect
    (None when there is no responder: the static floor)."""
    pids = system.stack.responder_pids() if system.stack else []
    before = sum(cpu_seconds(pid) for pid in pids)
    burst = storm(system.url, system.credential, total, in_flight, processes)
    if not pids:
        return burst, None
    used = sum(cpu_seconds(pid) for pid in pids) - before
    return burst, used * 1000 / max(len(burst.latencies), 1)


@contextmanager
def static_system() -> Iterator[System]:
    config = render_static_config(user="bench", password="bench-password", port=-1)  # noqa: S106
    with NatsServer(config) as server:
        yield System(server.url, Credential("password", user="bench",
                                            password="bench-password"))  # noqa: S106


@contextmanager
def noop_system(tmp: Path) -> Iterator[System]:
    command = [sys.executable, str(BENCH_DIR / "noop_callout.py"), "--url", "{url}",
               "--keys", "{keys}"]
    with callout_stack(tmp, command) as stack:
        yield System(stack.url, Credential("token", token="anything"), stack)  # noqa: S106


def oidc_credential(issuer: DevIssuer, task_id: str = "load") -> Credential:
    token = issuer.mint(subject="bench-worker", audience="nats-gateway", lifetime=3600)
    return Credential("token", token=oidc_envelope(token, dag_id="etl", task_id=task_id))


def distinct_workers_credential(issuer: DevIssuer, workers: int) -> Credential:
    """``workers`` distinct workers, one per connect in turn: each its own token (subject
    ``bench-worker-N``, minted once) acting for its own task, so the gateway's token and
    decision caches hold one entry per worker, as in a fleet."""
    envelopes = tuple(
        oidc_envelope(issuer.mint(subject=f"bench-worker-{n}", audience="nats-gateway",
                                  lifetime=3600), dag_id="etl", task_id=f"task-{n}")
        for n in range(workers))
    return Credential("tokens", tokens=envelopes)


def iam_credential(sts: MotoSts) -> Credential:
    creds = sts.role_session(IAM_ROLE, "bench").get_credentials().get_frozen_credentials()
    return Credential("aws_iam", aws=(sts.url, REGION, "bench", creds.access_key,
                                      creds.secret_key, creds.token))


@contextmanager
def _audit_url(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'audit.db'}"
        return
    with postgres_database(prefix="gw_bench") as (url, _):
        yield url


@contextmanager
def gateway_system(tmp: Path, *, identity: str, audit: str, workers: int,
                   issuer: DevIssuer, sts: MotoSts, extra_toml: str = "",
                   serve: Sequence[str] = GATEWAY_SERVE) -> Iterator[System]:
    (tmp / "policies").mkdir(exist_ok=True)
    if identity == "oidc":
        (tmp / "policies" / "bench.yaml").write_text(OIDC_POLICY.format(issuer=issuer.issuer))
        settings = f"""[[oidc.issuers]]
issuer = "{issuer.issuer}"
audiences = ["nats-gateway"]"""
        credential = oidc_credential(issuer)
    else:
        (tmp / "policies" / "bench.yaml").write_text(IAM_POLICY)
        settings = f"""[aws]
enabled = true
sts_endpoint = "{sts.url}"
region = "{REGION}"
gateway_id = "bench"
allowed_accounts = ["{ACCOUNT}"]"""
        credential = iam_credential(sts)
    with _audit_url(audit, tmp) as audit_url, callout_stack(
            tmp, extra_toml=f"{extra_toml}\n{settings}", audit_url=audit_url,
            workers=workers, serve=serve) as stack:
        yield System(stack.url, credential, stack, audit_url)
