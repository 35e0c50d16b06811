"""Target 4 of bench/run.py, "replicas add throughput": the connect storm against the
gateway (OIDC, SQLite audit) under `serve --workers N` for each N, beside the no-op
floor and the static-password floor under the same storm.

The storm starts only once every worker has answered a connect (one grant record per
worker instance in the audit store): a worker still starting would make N look like
fewer. The target is set for a 16-core machine; on fewer cores the workers, nats-server
and the clients share the CPUs and the figures say little about replicas.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from _load import percentile, sequential, wait_ready
from _systems import System, gateway_system, noop_system, static_system, storm_with_cpu
from sqlalchemy import text

from gateway.audit.store import AuditStore
from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts

__all__ = ["SCALING_CORES", "SCALING_RATE", "ScalingLoad", "ScalingRow", "default_scaling",
           "scaling_storms"]

SCALING_CORES = 16  # the machine the target is set for
SCALING_RATE = 4000.0  # connects/s the gateway must reach with some N on it
DEFAULT_WORKERS = (1, 2, 4, 8)


@dataclass(frozen=True)
class ScalingLoad:
    storm: int
    in_flight: int
    processes: int


@dataclass
class ScalingRow:
    system: str
    workers: int | None  # `serve --workers`; None for the floors
    connects: int
    per_second: float
    p99_ms: float
    failures: int
    cpu_ms: float | None  # all responder processes' CPU per connect; None without callout


def default_scaling(requested: list[int] | None) -> list[int] | None:
    """The worker counts to measure: those asked for, else 1, 2, 4, 8 on a machine of
    16 cores or more, else none (the target cannot be judged on a smaller machine)."""
    if requested is not None:
        return requested
    return list(DEFAULT_WORKERS) if (os.cpu_count() or 1) >= SCALING_CORES else None


def _granting_instances(audit_url: str) -> int:
    store = AuditStore(audit_url)
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT COUNT(DISTINCT gateway_instance) FROM decisions "
                "WHERE decision = 'grant'")).scalar_one())
    finally:
        store.close()


def wait_every_worker(system: System, timeout: float = 120.0) -> None:
    """Connect until every responder process has granted one (nats-server spreads the
    queue group's requests at random), or raise after ``timeout`` seconds."""
    assert system.stack is not None and system.audit_url is not None
    workers = len(system.stack.responder_pids())
    deadline = time.monotonic() + timeout
    while _granting_instances(system.audit_url) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every one of {workers} gateway workers answered "
                               f"within {timeout}s")
        sequential(system.url, system.credential, 4 * workers, 0)


def _storm_row(name: str, workers: int | None, system: System,
               load: ScalingLoad) -> ScalingRow:
    burst, cpu_ms = storm_with_cpu(system, load.storm, load.in_flight, load.processes)
    for failure, count in burst.failures.most_common(3):
        print(f"  storm failure x{count}: {failure}", flush=True)
    row = ScalingRow(name, workers, len(burst.latencies), burst.connects_per_second,
                     percentile(burst.latencies, 0.99), sum(burst.failures.values()),
                     cpu_ms)
    print(f"scaling: {row}", flush=True)
    return row


def _systems(workers: list[int], issuer: DevIssuer, sts: MotoSts, tmp: Path,
             ) -> Iterator[tuple[str, int | None, AbstractContextManager[System]]]:
    yield "static password (no callout)", None, static_system()
    yield "no-op callout (Python floor)", None, noop_system(tmp / "noop")
    for n in workers:
        yield "gateway: OIDC, SQLite audit", n, gateway_system(
            tmp / f"gateway-{n}", identity="oidc", audit="sqlite", workers=n,
            issuer=issuer, sts=sts)


def scaling_storms(workers: list[int], issuer: DevIssuer, sts: MotoSts,
                   load: ScalingLoad) -> list[ScalingRow]:
    """One storm each: static, no-op, then the gateway with each of ``workers``; each
    system is started for its storm and stopped after it."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for name in ("noop", *(f"gateway-{n}" for n in workers)):
            (tmp / name).mkdir()
        for name, n, start in _systems(workers, issuer, sts, tmp):
            with start as system:
                wait_ready(system.url, system.credential)
                if n is not None:
                    wait_every_worker(system)
                rows.append(_storm_row(name, n, system, load))
    return rows
