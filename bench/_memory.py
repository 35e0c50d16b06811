"""The gateway's resident memory while it makes ``total`` decisions: sampled after every
step of the storm, and the kernel's own peak (VmHWM) at the end. With a credential of
many distinct workers (bench/_systems.py ``distinct_workers_credential``) the gateway's
caches fill as they would in a fleet; the audit store then shows how many distinct
workers were granted, so the decisions measured are real grants."""

from __future__ import annotations

from dataclasses import dataclass

from _common import rss_mb
from _load import Credential, storm
from sqlalchemy import text

from gateway.audit.store import AuditStore

__all__ = ["AuditTally", "MemoryResult", "audit_tally", "memory_under_load"]


@dataclass
class MemoryResult:
    decisions: int
    failures: int
    samples: list[tuple[int, float]]  # (decisions so far, RSS MiB)
    peak_mb: float


@dataclass
class AuditTally:
    grant_records: int
    deny_records: int
    granted_principals: int  # distinct identities with at least one grant record


def memory_under_load(url: str, credential: Credential, pid: int, *, total: int,
                      steps: int, in_flight: int, processes: int) -> MemoryResult:
    samples = [(0, rss_mb(pid))]
    done = failures = 0
    for _ in range(steps):
        result = storm(url, credential, total // steps, in_flight, processes)
        done += len(result.latencies)
        failures += sum(result.failures.values())
        for failure, count in result.failures.most_common(3):
            print(f"  memory storm failure x{count}: {failure}", flush=True)
        samples.append((done, rss_mb(pid)))
    return MemoryResult(done, failures, samples, rss_mb(pid, "VmHWM"))


def audit_tally(audit_url: str) -> AuditTally:
    store = AuditStore(audit_url)
    try:
        with store.engine.connect() as conn:
            grants, denies, principals = conn.execute(text(
                "SELECT COALESCE(SUM(CASE WHEN decision = 'grant' THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END), 0), "
                "COUNT(DISTINCT CASE WHEN decision = 'grant' THEN principal END) "
                "FROM decisions")).one()
    finally:
        store.close()
    return AuditTally(int(grants), int(denies), int(principals))
