"""Valid workers' connects while one client sends one hostile class at a fixed rate.

    .venv/bin/python bench/hostile_load.py --write docs/security.md

For each audit store (SQLite, PostgreSQL) and each hostile class found in the attack
run of issue 18, one client sends raw CONNECTs of that class at ``--rate`` per second
for ``--seconds`` while ``--workers`` valid workers connect and disconnect in a loop
through the same nats-server, gateway (`nats-gateway serve`) and store. The table shows
the share of valid connects that succeeded (100% expected), how many hostile attempts
were recorded as denials, and how many decisions the gateway answered but could not
record (0 expected). A first row per store has no hostile traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import machine, write_section
from _load import Credential
from _systems import System, gateway_system
from sqlalchemy import text

from gateway.audit.store import AuditStore
from gateway.client import oidc_envelope
from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return oidc_envelope(f"{_b64(header)}.{_b64(claims)}.c2ln", dag_id="etl", task_id="load")


# name -> (CONNECT fields, auth_token)
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "none (baseline)": ({}, ""),
    "lone surrogate, duplicated envelope key": ({}, '{"v":1,"\\ud800":1,"\\ud800":2}'),
    "lone surrogate in unsigned token alg/kid/iss": ({}, _unsigned(
        {"alg": "\ud800", "kid": "\ud800"}, {"iss": "\ud800", "sub": "x"})),
    "newline in unsigned token iss": ({}, _unsigned(
        {"alg": "RS256"}, {"iss": "x\n2026-11-28 INFO gateway grant forged", "sub": "x"})),
    "NUL in CONNECT name": ({"name": "w\x00rker"}, ""),
    "CONNECT lang/version of 40 chars": ({"lang": "l" * 40, "version": "v" * 40}, ""),
    "30 KB CONNECT name": ({"name": "n" * 30_000}, ""),
}


@dataclass
class Row:
    store: str
    hostile: str
    hostile_sent: int
    hostile_refused: int
    valid_attempts: int
    valid_ok: int
    deny_records: int
    largest_record_kb: float
    unrecorded: int

    @property
    def share(self) -> float:
        return self.valid_ok / max(self.valid_attempts, 1)


async def _raw_connect(port: int, fields: dict[str, Any], token: str) -> bool:
    """One hand-written CONNECT; True when nats-server refused it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(reader.readline(), 5)
        connect = {"verbose": False, "pedantic": False, "protocol": 1, "lang": "raw",
                   "version": "0", **fields}
        if token:
            connect["auth_token"] = token
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        return b"Authorization Violation" in line
    finally:
        writer.close()


async def _hostile(port: int, fields: dict[str, Any], token: str, rate: float,
                   until: float) -> tuple[int, int]:
    tasks = []
    while time.monotonic() < until:
        tasks.append(asyncio.create_task(_raw_connect(port, fields, token)))
        await asyncio.sleep(1 / rate)
    refused = await asyncio.gather(*tasks, return_exceptions=True)
    return len(tasks), sum(1 for r in refused if r is True)


async def _valid(url: str, credential: Credential, until: float) -> tuple[int, int]:
    import nats

    attempts = ok = 0
    while time.monotonic() < until:
        attempts += 1
        try:
            nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                                    connect_timeout=5, **credential.options()())
            await nc.flush(timeout=2)
            await nc.close()
        except Exception as exc:  # a refused or timed-out valid connect: counted
            print(f"valid connect failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            ok += 1
    return attempts, ok


async def _round(system: System, fields: dict[str, Any], token: str, *, rate: float,
                 seconds: float, workers: int) -> tuple[int, int, int, int]:
    until = time.monotonic() + seconds
    port = int(system.url.rsplit(":", 1)[1])
    valid = [_valid(system.url, system.credential, until) for _ in range(workers)]
    if fields or token:
        hostile = _hostile(port, fields, token, rate, until)
        (sent, refused), *results = await asyncio.gather(hostile, *valid)
    else:
        sent = refused = 0
        results = list(await asyncio.gather(*valid))
    return sent, refused, sum(a for a, _ in results), sum(o for _, o in results)


def _deny_stats(audit_url: str, since: float) -> tuple[int, float]:
    store = AuditStore(audit_url)
    try:
        with store.engine.connect() as conn:
            count, largest = conn.execute(text(
                "SELECT COUNT(*), MAX(LENGTH(client_name) + LENGTH(reason) + "
                "LENGTH(client_lang) + LENGTH(client_version)) FROM decisions "
                "WHERE decision = 'deny' AND decided_at >= :since"), {"since": since}).one()
    finally:
        store.close()
    return int(count), (largest or 0) / 1024


def run_store(store: str, args: argparse.Namespace, issuer: DevIssuer,
              sts: MotoSts) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, gateway_system(
            Path(tmp), identity="oidc", audit=store, workers=1, issuer=issuer,
            sts=sts) as system:
        assert system.stack is not None and system.audit_url is not None
        from _load import wait_ready
        wait_ready(system.url, system.credential)
        for name, (fields, token) in HOSTILE.items():
            since, unrecorded_before = time.time(), system.stack.unrecorded_decisions()
            sent, refused, attempts, ok = asyncio.run(_round(
                system, fields, token, rate=args.rate, seconds=args.seconds,
                workers=args.workers))
            denies, largest = _deny_stats(system.audit_url, since)
            rows.append(Row(store, name, sent, refused, attempts, ok, denies, largest,
                            system.stack.unrecorded_decisions() - unrecorded_before))
            print(json.dumps(rows[-1].__dict__), flush=True)
    return rows


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"Command: `.venv/bin/python bench/hostile_load.py --seconds {args.seconds:g} "
        f"--rate {args.rate:g} --workers {args.workers}`  ",
        f"Machine: {machine()}",
        "",
        "| store | hostile class (one client) | hostile sent | refused | valid connects | "
        "valid succeeded | deny records | largest deny record KB | unrecorded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.store} | {r.hostile} | {r.hostile_sent} | {r.hostile_refused} | "
            f"{r.valid_attempts} | {r.valid_ok} ({r.share:.0%}) | {r.deny_records} | "
            f"{r.largest_record_kb:.2f} | {r.unrecorded} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per hostile class")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="hostile CONNECTs per second")
    parser.add_argument("--workers", type=int, default=4,
                        help="valid workers connecting in a loop meanwhile")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--write", type=Path, help="replace this section in a markdown file")
    args = parser.parse_args()
    rows: list[Row] = []
    with DevIssuer() as issuer, MotoSts() as sts:
        for store in args.stores.split(","):
            rows.extend(run_store(store, args, issuer, sts))
    body = table(rows, args)
    print(body)
    if args.write:
        write_section(args.write, "Hostile load", body)
    failed = [r for r in rows if r.share < 1 or r.unrecorded]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
