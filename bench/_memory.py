"""The gateway's resident memory while it makes ``total`` decisions: sampled after every
step of the storm, and the kernel's own peak (VmHWM) at the end."""

from __future__ import annotations

from dataclasses import dataclass

from _common import rss_mb
from _load import Credential, storm

__all__ = ["MemoryResult", "memory_under_load"]


@dataclass
class MemoryResult:
    decisions: int
    failures: int
    samples: list[tuple[int, float]]  # (decisions so far, RSS MiB)
    peak_mb: float


def memory_under_load(url: str, credential: Credential, pid: int, *, total: int,
                      steps: int, in_flight: int, processes: int) -> MemoryResult:
    samples = [(0, rss_mb(pid))]
    done = failures = 0
    for _ in range(steps):
        result = storm(url, credential, total // steps, in_flight, processes)
        done += len(result.latencies)
        failures += sum(result.failures.values())
        samples.append((done, rss_mb(pid)))
    return MemoryResult(done, failures, samples, rss_mb(pid, "VmHWM"))
