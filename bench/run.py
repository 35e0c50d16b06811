"""Every connect benchmark, in one run on one machine: the table in docs/benchmarks.md.

    .venv/bin/python bench/run.py --write docs/benchmarks.md

Scenarios: static password (no callout), the no-op callout, and the gateway with OIDC or
AWS IAM (moto's STS) identity, each with the SQLite and the PostgreSQL audit store. Each
is measured one client at a time (p50/p99/p99.9 over ``--connects``) and as a storm
(``--storm`` connects with ``--in-flight`` outstanding, over ``--client-processes``).
Then the reconnect storm (``--reconnect-clients`` connected clients, nats-server
restarted) and the gateway's memory after ``--memory-decisions`` decisions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import write_section  # bench/ is on sys.path when run as a script
from _load import percentile, sequential, storm, wait_ready
from _systems import System, gateway_system, noop_system, static_system

from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts
from gateway.dev.natsserver import find_nats_server


@dataclass
class Row:
    scenario: str
    connects: int
    p50: float
    p99: float
    p999: float
    storm_connects: int
    storm_per_second: float
    storm_p99: float
    storm_failures: int


def measure(name: str, system: System, args: argparse.Namespace) -> Row:
    wait_ready(system.url, system.credential)
    one = sequential(system.url, system.credential, args.connects, args.warmup)
    burst = storm(system.url, system.credential, args.storm, args.in_flight,
                  args.client_processes)
    row = Row(name, len(one), percentile(one, 0.5), percentile(one, 0.99),
              percentile(one, 0.999), len(burst.latencies), burst.connects_per_second,
              percentile(burst.latencies, 0.99), sum(burst.failures.values()))
    print(json.dumps(asdict(row)), flush=True)
    for failure, count in burst.failures.most_common(3):
        print(f"  storm failure x{count}: {failure}", flush=True)
    return row


Scenario = tuple[str, Callable[[Path], AbstractContextManager[System]]]


def scenarios(args: argparse.Namespace, issuer: DevIssuer, sts: MotoSts) -> Iterator[Scenario]:
    yield "static password (no callout)", lambda tmp: static_system()
    yield "no-op callout (Python floor)", noop_system
    for identity, label in (("oidc", "OIDC"), ("aws_iam", "AWS IAM")):
        for audit, store in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            def start(tmp: Path, identity: str = identity,
                      audit: str = audit) -> AbstractContextManager[System]:
                return gateway_system(tmp, identity=identity, audit=audit,
                                      workers=args.workers, issuer=issuer, sts=sts)
            yield f"gateway: {label}, {store} audit", start


def machine() -> str:
    version = subprocess.run([find_nats_server(), "--version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return (f"{platform.platform()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {version}")


def table(rows: list[Row]) -> str:
    lines = ["| scenario | 1 at a time: connects | p50 ms | p99 ms | p99.9 ms | "
             "storm: connects | connects/s | p99 ms | failures |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.scenario} | {r.connects} | {r.p50:.2f} | {r.p99:.2f} | "
                     f"{r.p999:.2f} | {r.storm_connects} | {r.storm_per_second:.0f} | "
                     f"{r.storm_p99:.1f} | {r.storm_failures} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connects", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--storm", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="gateway --workers")
    parser.add_argument("--only", default="", help="run scenarios whose name has this text")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    rows: list[Row] = []
    with DevIssuer() as issuer, MotoSts(roles=("airflow-bench",)) as sts:
        for name, start in scenarios(args, issuer, sts):
            if args.only and args.only not in name:
                continue
            with tempfile.TemporaryDirectory() as tmp, start(Path(tmp)) as system:
                rows.append(measure(name, system, args))
    report = f"Machine: {machine()}\n\n{table(rows)}\n"
    print(report)
    if args.write:
        command = shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
        write_section(args.write, "connect-bench", f"Command: `{command}`\n\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
