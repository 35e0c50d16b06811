"""The cluster storm: workers connect to a 3-node cluster and one node is killed mid-storm.

    .venv/bin/python bench/cluster_storm.py --workers 600 --write docs/benchmarks.md

Three nats-server nodes (routes; each config from `nats-gateway nats-config --cluster-*`),
two `nats-gateway serve` replicas on nodes 0 and 1, PostgreSQL audit. ``--workers``
clients of the project's client helper (every node's URL, reconnecting, one CONNECT
name each) connect at once; once a third are in, node 1 (the one with replica r1 on it,
the harder case: its replica must reconnect elsewhere too) is killed with SIGKILL.
Measured: connects/s until every worker is connected, the time from the kill until every
worker has a working connection again (a flush round trip each), the workers that were
cut off and came back, the connect failures that were retried (a first connect refused
or cut off), workers that gave up, deny records (every worker is entitled), workers
whose accepted CONNECTs outnumber their grant records, and decision ids recorded twice.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import gateway_toml, machine, write_section
from _load import percentile
from _systems import OIDC_POLICY
from nats.aio.client import Client
from sqlalchemy import text

from gateway.audit.store import AuditStore
from gateway.client import OidcToken, connect
from gateway.dev.cluster import start_cluster
from gateway.dev.issuer import DevIssuer
from gateway.dev.postgres import postgres_database
from gateway.envelope import Scope
from gateway.keyfiles import generate_keys

KILLED_NODE = 1
SETTLE_SECONDS = 240.0


@dataclass
class ClusterStormResult:
    scenario: str
    workers: int
    connected: int = 0
    connect_seconds: float = 0.0
    cut_off: int = 0
    all_back_seconds: float = float("nan")  # the kill to the last cut-off worker back
    back_p50_seconds: float = float("nan")
    all_connected_at_end: int = 0
    retried_failures: Counter[str] = field(default_factory=Counter)  # first connects
    client_errors: Counter[str] = field(default_factory=Counter)  # once connected
    gave_up: int = 0
    deny_records: int = 0
    without_grant_record: int = 0
    duplicate_decisions: int = 0

    @property
    def connects_per_second(self) -> float:
        return self.connected / max(self.connect_seconds, 1e-9)


class _Workers:
    def __init__(self, urls: list[str], token: str, result: ClusterStormResult) -> None:
        self.urls, self.token, self.result = urls, token, result
        self.clients: dict[str, Client] = {}
        self.accepted: Counter[str] = Counter()
        self.cut_off: dict[str, float | None] = {}  # name -> when back (perf_counter)
        self.closing = False

    async def open(self, name: str) -> None:
        async def reconnected() -> None:
            self.accepted[name] += 1
            self.cut_off[name] = time.perf_counter()

        async def disconnected() -> None:
            if not self.closing:
                self.cut_off[name] = None

        async def closed() -> None:
            if not self.closing:
                self.result.gave_up += 1

        async def error(exc: Exception) -> None:
            self.result.client_errors[f"{type(exc).__name__}: {exc}"[:80]] += 1

        for _ in range(40):
            try:
                client = await connect(self.urls, OidcToken(self.token),
                                       scope=Scope("etl", name), name=name, connect_timeout=5,
                                       reconnected_cb=reconnected, error_cb=error,
                                       disconnected_cb=disconnected, closed_cb=closed)
            except Exception as exc:  # refused in the storm or cut off: a worker retries
                self.result.retried_failures[f"{type(exc).__name__}: {exc}"[:80]] += 1
                await asyncio.sleep(0.5)
                continue
            self.accepted[name] += 1
            self.clients[name] = client
            return

    async def down(self) -> int:
        async def broken(client: Client) -> bool:
            try:
                await client.flush(timeout=2)
            except Exception:
                return True
            return False

        return sum(await asyncio.gather(*(broken(c) for c in self.clients.values())))


async def _storm(urls: list[str], token: str, count: int, kill: Callable[[], None],
                 result: ClusterStormResult) -> Counter[str]:
    workers = _Workers(urls, token, result)
    started = time.perf_counter()
    tasks = [asyncio.create_task(workers.open(f"w{i}")) for i in range(count)]
    while sum(t.done() for t in tasks) < count // 3:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=1)
    killed_at = time.perf_counter()
    kill()
    await asyncio.gather(*tasks)
    result.connected = len(workers.clients)
    result.connect_seconds = time.perf_counter() - started
    deadline = time.monotonic() + SETTLE_SECONDS
    while (await workers.down() or None in workers.cut_off.values()) \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    back = [at - killed_at for at in workers.cut_off.values() if at is not None]
    result.cut_off = len(workers.cut_off)
    result.all_connected_at_end = result.connected - await workers.down()
    if back and len(back) == len(workers.cut_off):
        result.all_back_seconds = max(back)
    result.back_p50_seconds = percentile(back, 0.5)
    workers.closing = True
    await asyncio.gather(*(c.close() for c in workers.clients.values()),
                         return_exceptions=True)
    return workers.accepted


def _audit(audit_url: str, accepted: Counter[str], result: ClusterStormResult) -> None:
    store = AuditStore(audit_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT decision, client_name, COUNT(*) FROM decisions "
                                     "GROUP BY decision, client_name")).all()
            result.duplicate_decisions = len(conn.execute(text(
                "SELECT decision_id FROM decisions GROUP BY decision_id "
                "HAVING COUNT(*) > 1")).all())
    finally:
        store.close()
    grants = Counter({str(name): int(n) for decision, name, n in rows if decision == "grant"})
    result.deny_records = sum(int(n) for decision, _, n in rows if decision == "deny")
    result.without_grant_record = sum(1 for name, n in accepted.items() if grants[name] < n)


def _start_replica(tmp: Path, name: str, url: str, keys: Path, audit_url: str,
                   oidc: str) -> subprocess.Popen[bytes]:
    """`serve` with instance ``name`` on node ``url``; returns once it has subscribed."""
    base = gateway_toml(tmp, url, keys, audit_url, oidc).read_text()
    config = tmp / f"{name}.toml"
    config.write_text(f'instance = "{name}"\n{base}')
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        # INFO for the "gateway started" line; a log line per decision costs little
        # beside a decision, and goes to a file
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--log-level", "INFO",
                                 "serve", "--config", str(config)], stderr=out)
    deadline = time.monotonic() + 60
    while b"gateway started" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"replica {name} did not start: {log.read_text()[-500:]}")
        time.sleep(0.1)
    return proc


def run(count: int, *, kill: bool) -> ClusterStormResult:
    result = ClusterStormResult("node 1 killed mid-storm" if kill else "no failure (baseline)",
                                workers=count)
    with tempfile.TemporaryDirectory() as tmp_name, DevIssuer() as issuer, \
            postgres_database(prefix="gw_bench") as (audit_url, _):
        tmp = Path(tmp_name)
        keys = tmp / "keys"
        generate_keys(keys)
        (tmp / "policies").mkdir()
        (tmp / "policies" / "bench.yaml").write_text(OIDC_POLICY.format(issuer=issuer.issuer))
        oidc = f'[[oidc.issuers]]\nissuer = "{issuer.issuer}"\naudiences = ["nats-gateway"]'
        toml = gateway_toml(tmp, "nats://127.0.0.1:4222", keys, audit_url, oidc)
        with start_cluster(toml, tmp / "cluster") as cluster:
            replicas = [_start_replica(tmp, name, cluster.urls[index], keys, audit_url, oidc)
                        for index, name in enumerate(("r0", "r1"))]
            try:
                token = issuer.mint(subject="bench-worker", audience="nats-gateway",
                                    lifetime=3600)
                node = cluster.nodes[KILLED_NODE]
                accepted = asyncio.run(_storm(cluster.urls, token, count,
                                              node.kill if kill else lambda: None, result))
            finally:
                for proc in replicas:
                    proc.terminate()
                    proc.wait(timeout=60)
        _audit(audit_url, accepted, result)
    return result


def table(results: list[ClusterStormResult]) -> str:
    return "\n".join([
        "| scenario | workers | connected | connects/s | cut off by the kill | back: p50 s | "
        "time until all back s | connected at the end | first connects failed and retried | "
        "gave up | deny records | accepted without a record | decisions recorded twice |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(r) for r in results)])


def _seconds(value: float) -> str:
    return "n/a" if value != value else f"{value:.2f}"  # NaN: nobody was cut off


def _row(r: ClusterStormResult) -> str:
    retried = sum(r.retried_failures.values())
    return (
        f"| {r.scenario} | {r.workers} | {r.connected} | {r.connects_per_second:.0f} | "
        f"{r.cut_off} | "
        f"{_seconds(r.back_p50_seconds)} | {_seconds(r.all_back_seconds)} | "
        f"{r.all_connected_at_end} | "
        f"{retried} | {r.gave_up} | {r.deny_records} | {r.without_grant_record} | "
        f"{r.duplicate_decisions} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=600)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    results = [run(args.workers, kill=False), run(args.workers, kill=True)]
    report = f"Machine: {machine()}\n\n{table(results)}\n"
    for result in results:
        for failure, count in result.retried_failures.most_common(3):
            report += (f"\n- {result.scenario}: first connect failed and retried x{count}: "
                       f"`{failure}`")
        for error, count in result.client_errors.most_common(3):
            report += f"\n- {result.scenario}: client error x{count}: `{error}`"
    print(report)
    if args.write:
        command = shlex.join([".venv/bin/python", "bench/cluster_storm.py", *sys.argv[1:]])
        write_section(args.write, "cluster-storm", f"Command: `{command}`\n\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
