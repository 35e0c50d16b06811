"""Paired rounds: the no-op floor, the gateway (OIDC, SQLite audit) and the same gateway
without its record (bench/unaudited_gateway.py) all running, each measured in turn in
every round (one-at-a-time p50, then a storm's rate and the responder's CPU), every ratio
taken within its round. bench/run.py judges its targets on these rounds and
bench/audit_bound.py reports them; both use this one implementation.

Scenarios in the main table run minutes apart, and on a shared machine the same code
measured 62% to 81% of the floor's storm rate from one round to the next in one process;
pairing puts the machine's drift on every side of each ratio, and the median of the
rounds is the figure the targets are judged on (every round is printed with it)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import BENCH_DIR
from _load import percentile, sequential, wait_ready
from _systems import System, gateway_system, noop_system, storm_with_cpu

from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts

__all__ = ["SYSTEMS", "Load", "Measured", "Round", "measure", "median_of", "paired_rounds",
           "ratio", "rounds_table", "three_systems"]

SYSTEMS = ("no-op", "gateway", "gateway without its record")
UNAUDITED_SERVE = (sys.executable, str(BENCH_DIR / "unaudited_gateway.py"))


def ratio(part: float, whole: float) -> float:
    """``part / whole``; NaN when the whole is 0 (a storm with no successful connect), so
    one failed measurement shows in its round instead of ending the run."""
    return part / whole if whole else float("nan")


@dataclass(frozen=True)
class Load:
    """What each system gets in a round (bench/_load.py's arguments)."""
    connects: int
    warmup: int
    storm: int
    in_flight: int
    processes: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Load:
        return cls(args.connects, args.warmup, args.storm, args.in_flight,
                   args.client_processes)


@dataclass
class Measured:
    p50_ms: float
    per_second: float
    cpu_ms: float  # the responder's CPU per successful storm connect
    connect_failures: int = 0  # one-at-a-time connects that failed (counted, not fatal)
    storm_failures: int = 0  # storm connects that failed (counted, not fatal)


@dataclass
class Round:
    noop: Measured
    gateway: Measured
    bound: Measured  # the gateway without its record

    def in_order(self) -> tuple[Measured, Measured, Measured]:
        """The three, in the order of SYSTEMS."""
        return self.noop, self.gateway, self.bound

    @property
    def record_ms(self) -> float:
        """What the record adds to the gateway's one-at-a-time p50."""
        return self.gateway.p50_ms - self.bound.p50_ms

    @property
    def bound_p50_ratio(self) -> float:
        return ratio(self.bound.p50_ms, self.noop.p50_ms)

    @property
    def cpu_ratio(self) -> float:
        """The gateway's responder CPU per storm connect against the no-op's."""
        return ratio(self.gateway.cpu_ms, self.noop.cpu_ms)

    @property
    def failed_connects(self) -> tuple[int, int]:
        """(one at a time, storm) connects that failed in this round, all three systems."""
        return (sum(m.connect_failures for m in self.in_order()),
                sum(m.storm_failures for m in self.in_order()))


def measure(system: System, load: Load) -> Measured:
    one = sequential(system.url, system.credential, load.connects, load.warmup)
    burst, cpu_ms = storm_with_cpu(system, load.storm, load.in_flight, load.processes)
    for failure, count in burst.failures.most_common(3):
        print(f"  storm failure x{count}: {failure}", flush=True)
    return Measured(percentile(one.latencies, 0.5), burst.connects_per_second,
                    cpu_ms if cpu_ms is not None else 0.0, one.failed,
                    sum(burst.failures.values()))


@contextmanager
def three_systems(issuer: DevIssuer, sts: MotoSts) -> Iterator[list[System]]:
    """The no-op, the gateway and the gateway without its record, each behind its own
    nats-server, one process each (the instrument serves one only), all answering."""
    with ExitStack() as stack:
        def scratch() -> Path:
            return Path(stack.enter_context(tempfile.TemporaryDirectory()))

        systems = [
            stack.enter_context(noop_system(scratch())),
            stack.enter_context(gateway_system(scratch(), identity="oidc", audit="sqlite",
                                               workers=1, issuer=issuer, sts=sts)),
            stack.enter_context(gateway_system(scratch(), identity="oidc", audit="sqlite",
                                               workers=1, issuer=issuer, sts=sts,
                                               serve=UNAUDITED_SERVE)),
        ]
        for system in systems:
            wait_ready(system.url, system.credential)
        yield systems


def paired_rounds(systems: list[System], rounds: int, load: Load) -> list[Round]:
    """``rounds`` rounds over the three of :func:`three_systems`, in that order."""
    results = []
    for index in range(rounds):
        noop, gateway, bound = (measure(system, load) for system in systems)
        result = Round(noop, gateway, bound)
        one, storm = result.failed_connects
        print(f"round {index + 1}: " + ", ".join(
            f"{name} p50 {m.p50_ms:.2f} ms ({ratio(m.p50_ms, noop.p50_ms):.2f}x) "
            f"{m.per_second:.0f}/s ({ratio(m.per_second, noop.per_second):.0%}) "
            f"CPU {m.cpu_ms:.2f} ms/connect"
            for name, m in zip(SYSTEMS, result.in_order(), strict=True))
            + f"; failed connects {one} one at a time, {storm} in storms", flush=True)
        results.append(result)
    return results


def median_of(rounds: list[Round], figure: Callable[[Round], float]) -> float:
    return statistics.median(figure(r) for r in rounds)


def rounds_table(rounds: list[Round]) -> str:
    """One line per round; ratios in brackets are against the same round's no-op."""
    lines = ["| round | " + " | ".join(f"{n} p50 ms" for n in SYSTEMS) + " | "
             + " | ".join(f"{n} connects/s" for n in SYSTEMS) + " | "
             + " | ".join(f"{n} CPU ms/connect" for n in SYSTEMS)
             + " | failed connects (1 at a time / storm) |",
             "|---:|" + "---:|" * (3 * len(SYSTEMS) + 1)]
    for index, row in enumerate(rounds, 1):
        noop, *others = row.in_order()
        p50s = [f"{noop.p50_ms:.2f}"] + [
            f"{m.p50_ms:.2f} ({ratio(m.p50_ms, noop.p50_ms):.2f}x)" for m in others]
        rates = [f"{noop.per_second:.0f}"] + [
            f"{m.per_second:.0f} ({ratio(m.per_second, noop.per_second):.0%})"
            for m in others]
        cpus = [f"{m.cpu_ms:.2f}" for m in row.in_order()]
        one, storm = row.failed_connects
        lines.append(f"| {index} | {' | '.join(p50s)} | {' | '.join(rates)} | "
                     f"{' | '.join(cpus)} | {one} / {storm} |")
    return "\n".join(lines)
