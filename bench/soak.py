"""A bounded soak: clients connect, work and reconnect for minutes; nothing may be lost.

    .venv/bin/python bench/soak.py --minutes 10 --clients 200 --write docs/benchmarks.md

A real nats-server (auth callout, xkey on), the dev OIDC issuer and `nats-gateway serve`
(SQLite audit) as a separate process. Each client loops: connect with a fresh token as
one of 50 tasks (one in ten asks for a DAG no policy covers, so denials are expected),
publish in its own subjects, close. At the end: decisions seen by clients against audit
records (grant == grant, deny == deny), records verified, and the gateway's resident
memory sampled along the way (it must stay flat).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import nats
from _common import callout_stack, rss_mb, write_section  # bench/ is on sys.path as a script
from _load import Credential, wait_ready

from gateway.audit.chain import CheckpointSigner
from gateway.audit.store import AuditStore
from gateway.audit.verify import verify_store
from gateway.client import oidc_envelope
from gateway.dev.issuer import DevIssuer
from gateway.keyfiles import (
    CHECKPOINT_FILE,
)

POLICY = """version: 1
policies:
  - id: soak
    match: {{oidc: {{issuer: "{issuer}", subject: "soak-worker"}}}}
    scopes: [{{dag: "etl"}}]
    permissions:
      publish: {{allow: ["airflow.{{dag_id}}.{{task_id}}.>"]}}
      subscribe: {{allow: ["airflow.{{dag_id}}.{{task_id}}.>"]}}
    ttl_seconds: 60
"""


class Tally:
    def __init__(self) -> None:
        self.grants = 0
        self.denies = 0
        self.unexpected: list[str] = []


async def client_loop(url: str, issuer: DevIssuer, deadline: float, tally: Tally,
                      rng: random.Random) -> None:
    while time.monotonic() < deadline:
        denied = rng.random() < 0.1
        dag = "billing" if denied else "etl"
        task = f"t{rng.randrange(50)}"
        token = issuer.mint(subject="soak-worker", audience="nats-gateway", lifetime=300)
        try:
            nc = await nats.connect(url, token=oidc_envelope(token, dag_id=dag, task_id=task),
                                    allow_reconnect=False, max_reconnect_attempts=0,
                                    connect_timeout=5)
        except Exception as exc:
            if denied and "uthorization" in str(exc):
                tally.denies += 1
            else:
                tally.unexpected.append(f"{type(exc).__name__}: {exc}"[:200])
            continue
        tally.grants += 1
        if denied:
            tally.unexpected.append("granted a DAG no policy covers")
        try:
            await nc.publish(f"airflow.{dag}.{task}.done", b"x")
            await nc.flush()
        finally:
            await nc.close()


async def drive(url: str, issuer: DevIssuer, clients: int, seconds: float, pid: int,
                samples: list[tuple[float, float]]) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    async def sample() -> None:
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - started, rss_mb(pid)))
            await asyncio.sleep(max(1.0, seconds / 20))

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(client_loop(url, issuer, deadline, tally, random.Random(i))
                           for i in range(clients)))
    sampler.cancel()
    samples.append((time.monotonic() - started, rss_mb(pid)))
    return tally


def run(minutes: float, clients: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "policies").mkdir()
        with DevIssuer() as issuer:
            (tmp / "policies" / "soak.yaml").write_text(POLICY.format(issuer=issuer.issuer))
            extra = f"""[[oidc.issuers]]
issuer = "{issuer.issuer}"
audiences = ["nats-gateway"]"""
            with callout_stack(tmp, extra_toml=extra) as stack:
                url = stack.url
                wait_ready(url, Credential("token", token=oidc_envelope(
                    issuer.mint(subject="soak-worker", audience="nats-gateway", lifetime=300),
                    dag_id="etl", task_id="ready")))
                samples: list[tuple[float, float]] = []
                started = time.monotonic()
                tally = asyncio.run(drive(url, issuer, clients, minutes * 60, stack.process.pid,
                                          samples))
                elapsed = time.monotonic() - started
        store = AuditStore(f"sqlite:///{tmp / 'audit.db'}")
        recorded_grants, recorded_denies = store.count("grant"), store.count("deny")
        signer = CheckpointSigner.from_seed_hex(
            (tmp / "keys" / CHECKPOINT_FILE).read_text())
        report = verify_store(store, [signer.public_key])
        store.close()
    first_half = [mb for t, mb in samples if t < elapsed / 2]
    second_half = [mb for t, mb in samples if t >= elapsed / 2]
    return {
        "minutes": minutes, "clients": clients, "decisions": tally.grants + tally.denies,
        "per_second": (tally.grants + tally.denies) / elapsed,
        # The readiness connect is one more grant than the clients counted.
        "grants": tally.grants + 1, "recorded_grants": recorded_grants,
        "denies": tally.denies, "recorded_denies": recorded_denies,
        "unexpected": len(tally.unexpected), "examples": tally.unexpected[:3],
        "chain_ok": report.ok,
        "rss_start": samples[0][1], "rss_peak": max(mb for _, mb in samples),
        "rss_end": samples[-1][1],
        "rss_first_half_max": max(first_half, default=0.0),
        "rss_second_half_max": max(second_half, default=0.0),
    }


def section(result: dict[str, object], command: str) -> str:
    r = result
    return "\n".join([
        "## Soak", "", f"Command: `{command}`", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}.", "",
        "| minutes | clients | decisions | per second | grants (clients / records) | "
        "denials (clients / records) | unexpected errors | chain | RSS MB start / peak / end |",
        "|---:|---:|---:|---:|---|---|---:|---|---|",
        f"| {r['minutes']} | {r['clients']} | {r['decisions']} | {r['per_second']:.0f} | "
        f"{r['grants']} / {r['recorded_grants']} | {r['denies']} / {r['recorded_denies']} | "
        f"{r['unexpected']} | {'verified' if r['chain_ok'] else 'BROKEN'} | "
        f"{r['rss_start']:.1f} / {r['rss_peak']:.1f} / {r['rss_end']:.1f} |"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.minutes, args.clients)
    print(result)
    command = (f".venv/bin/python bench/soak.py --minutes {args.minutes:g} "
               f"--clients {args.clients} --write docs/benchmarks.md")
    if args.write:
        write_section(args.write, "soak", section(result, command))
    ok = (result["grants"] == result["recorded_grants"]
          and result["denies"] == result["recorded_denies"]
          and result["unexpected"] == 0 and result["chain_ok"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
