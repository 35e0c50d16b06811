"""The two ratio targets from paired rounds: the no-op floor and the gateway both running,
measured one after the other in each round, the ratio taken per round.

Scenarios in the main table run minutes apart, and on a shared machine the same code
measured 62% to 81% of the floor's storm rate from one round to the next in one process;
pairing puts the machine's drift on both sides of each ratio, and the median of the
rounds is the figure the targets are judged on (every round is printed with it)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from _load import percentile, sequential
from _systems import System, storm_with_cpu

__all__ = ["PairedRound", "median_ratios", "one_at_a_time_p50", "paired_rounds", "storm_rate"]


@dataclass
class PairedRound:
    noop_p50: float
    gateway_p50: float
    noop_per_second: float
    gateway_per_second: float
    gateway_cpu_ms: float  # the gateway's CPU per storm connect, this round
    storm_failures: int = 0  # connects that failed in this round's two storms

    @property
    def p50_ratio(self) -> float:
        return self.gateway_p50 / self.noop_p50

    @property
    def storm_share(self) -> float:
        return self.gateway_per_second / self.noop_per_second


def one_at_a_time_p50(system: System, connects: int, warmup: int) -> float:
    return percentile(sequential(system.url, system.credential, connects, warmup).latencies,
                      0.5)


def storm_rate(system: System, total: int, in_flight: int,
               processes: int) -> tuple[float, float, int]:
    """(successful connects/s, responder CPU ms per successful connect, failed connects).
    A failure is counted and shown, not fatal: one timed-out connect on a busy machine
    must not throw away a run of many minutes."""
    burst, cpu_ms = storm_with_cpu(system, total, in_flight, processes)
    failed = sum(burst.failures.values())
    for failure, count in burst.failures.most_common(3):
        print(f"  storm failure x{count}: {failure}", flush=True)
    return burst.connects_per_second, cpu_ms if cpu_ms is not None else 0.0, failed


def paired_rounds(noop: System, gateway: System, *, rounds: int, connects: int, warmup: int,
                  storm_connects: int, in_flight: int, processes: int) -> list[PairedRound]:
    results = []
    for index in range(rounds):
        noop_p50 = one_at_a_time_p50(noop, connects, warmup)
        gateway_p50 = one_at_a_time_p50(gateway, connects, warmup)
        noop_rate, _, noop_failed = storm_rate(noop, storm_connects, in_flight, processes)
        gateway_rate, gateway_cpu, failed = storm_rate(gateway, storm_connects, in_flight,
                                                       processes)
        result = PairedRound(noop_p50, gateway_p50, noop_rate, gateway_rate, gateway_cpu,
                             noop_failed + failed)
        print(f"paired round {index + 1}: p50 {gateway_p50:.2f}/{noop_p50:.2f} ms = "
              f"{result.p50_ratio:.2f}x, storm {gateway_rate:.0f}/{noop_rate:.0f} = "
              f"{result.storm_share:.0%}, {result.storm_failures} failed connects",
              flush=True)
        results.append(result)
    return results


def median_ratios(rounds: list[PairedRound]) -> tuple[float, float]:
    """(median p50 ratio, median storm share) over the rounds."""
    return (statistics.median(r.p50_ratio for r in rounds),
            statistics.median(r.storm_share for r in rounds))
