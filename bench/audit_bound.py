"""What the durable audit record costs a connect, set against the two ratio targets.

Three responders stay up behind their own nats-servers and are measured in turn, round
by round: the no-op floor, the gateway (OIDC, SQLite audit), and the same gateway with
its record left out (bench/unaudited_gateway.py, a measuring instrument only). The
third is the best any design that keeps the gateway's checks could do, so the room it
leaves under each target is the most a durable record may cost; beside it stands what
the record's fsync'd commit alone costs on this disk (bench/_floor.py).

    .venv/bin/python bench/audit_bound.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from _common import BENCH_DIR, machine, write_section  # bench/ is on sys.path as a script
from _floor import CommitFloor, durable_commit_floor
from _load import add_load_arguments, wait_ready
from _paired import one_at_a_time_p50, storm_rate
from _systems import System, gateway_system, noop_system

from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts

P50_TARGET = 1.3  # gateway p50 at most this times the no-op's
STORM_TARGET = 0.8  # gateway connects/s at least this share of the no-op's
SYSTEMS = ("no-op", "gateway", "gateway without its record")


@dataclass
class Measured:
    p50_ms: float
    per_second: float
    cpu_ms: float  # the responder's CPU per storm connect
    failures: int = 0  # storm connects that failed (counted, not fatal)


def measure(system: System, args: argparse.Namespace) -> Measured:
    p50 = one_at_a_time_p50(system, args.connects, args.warmup)
    rate, cpu_ms, failures = storm_rate(system, args.storm, args.in_flight,
                                        args.client_processes)
    return Measured(p50, rate, cpu_ms, failures)


def rounds_of(systems: list[System], args: argparse.Namespace) -> list[list[Measured]]:
    results = []
    for index in range(args.rounds):
        row = [measure(system, args) for system in systems]
        noop = row[0]
        print(f"round {index + 1}: " + ", ".join(
            f"{name} p50 {m.p50_ms:.2f} ms ({m.p50_ms / noop.p50_ms:.2f}x) "
            f"{m.per_second:.0f}/s ({m.per_second / noop.per_second:.0%}, "
            f"{m.failures} failed)"
            for name, m in zip(SYSTEMS, row, strict=True)), flush=True)
        results.append(row)
    return results


def rounds_table(rounds: list[list[Measured]]) -> str:
    lines = ["| round | " + " | ".join(f"{n} p50 ms" for n in SYSTEMS) + " | "
             + " | ".join(f"{n} connects/s" for n in SYSTEMS) + " | "
             + " | ".join(f"{n} CPU ms/connect" for n in SYSTEMS) + " |",
             "|---:|" + "---:|" * (3 * len(SYSTEMS))]
    for index, row in enumerate(rounds, 1):
        noop = row[0]
        p50s = [f"{m.p50_ms:.2f}" + ("" if i == 0 else f" ({m.p50_ms / noop.p50_ms:.2f}x)")
                for i, m in enumerate(row)]
        rates = [f"{m.per_second:.0f}" + ("" if i == 0 else
                                          f" ({m.per_second / noop.per_second:.0%})")
                 for i, m in enumerate(row)]
        cpus = [f"{m.cpu_ms:.2f}" for m in row]
        lines.append(f"| {index} | {' | '.join(p50s)} | {' | '.join(rates)} | "
                     f"{' | '.join(cpus)} |")
    return "\n".join(lines)


def _shares(rounds: list[list[Measured]], system: int) -> list[float]:
    return [row[system].per_second / row[0].per_second for row in rounds]


def _listed(shares: list[float]) -> str:
    return ", ".join(f"{share:.0%}" for share in shares)


def budget_lines(rounds: list[list[Measured]], floor: CommitFloor) -> str:
    """The room each target leaves for the record: p50s as medians in ms, storm shares as
    the median of each round's own share (as the targets are judged in bench/run.py)."""
    noop_p50, gateway_p50, bound_p50 = (
        statistics.median(row[i].p50_ms for row in rounds) for i in range(3))
    gateway_shares, bound_shares = _shares(rounds, 1), _shares(rounds, 2)
    bound_share = statistics.median(bound_shares)
    record_cpu = statistics.median(row[1].cpu_ms - row[2].cpu_ms for row in rounds)
    allowed = P50_TARGET * noop_p50
    points = round((bound_share - STORM_TARGET) * 100)
    room = (f"**{points} point{'' if points == 1 else 's'}** above" if points > 0 else
            f"**nothing** ({-points} points short of)")
    return "\n".join([
        f"- One at a time (medians): the target allows {allowed:.2f} ms "
        f"({P50_TARGET}x the no-op's {noop_p50:.2f} ms). Without its record the gateway "
        f"takes {bound_p50:.2f} ms ({bound_p50 / noop_p50:.2f}x), which leaves "
        f"**{max(allowed - bound_p50, 0):.2f} ms** for a durable record. The record's fsync'd "
        f"commit alone takes {floor.commit_p50_ms:.2f} ms on this disk on the calling "
        f"thread, {floor.writer_p50_ms:.2f} ms through a writer thread and back; in the "
        f"gateway the record costs {gateway_p50 - bound_p50:.2f} ms ({gateway_p50:.2f} ms, "
        f"{gateway_p50 / noop_p50:.2f}x).",
        f"- Storm (median of the rounds' shares): without its record the gateway makes "
        f"{bound_share:.0%} of the no-op's connects per second (rounds "
        f"{_listed(bound_shares)}), which leaves {room} the {STORM_TARGET:.0%} target for "
        f"the record; with it, "
        f"{statistics.median(gateway_shares):.0%} (rounds {_listed(gateway_shares)}). The "
        f"record costs the gateway {record_cpu:.2f} ms of CPU per storm connect.",
    ])


def report(rounds: list[list[Measured]], floor: CommitFloor, command: str) -> str:
    return "\n\n".join([
        "## What the audit record costs, against the ratio targets",
        f"Command: `{command}`",
        f"Machine: {machine()}",
        "Each round measures, in turn, the no-op floor, the gateway (OIDC, SQLite audit) "
        "and the same gateway with its audit sink replaced by one that records nothing "
        "(`bench/unaudited_gateway.py`, a measuring instrument: the product has no such "
        "setting). Ratios in brackets are against the same round's no-op.",
        rounds_table(rounds),
        budget_lines(rounds, floor),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    add_load_arguments(parser)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    unaudited = (sys.executable, str(BENCH_DIR / "unaudited_gateway.py"))
    with DevIssuer() as issuer, MotoSts(roles=("airflow-bench",)) as sts, ExitStack() as stack:
        def scratch() -> Path:
            return Path(stack.enter_context(tempfile.TemporaryDirectory()))

        systems = [
            stack.enter_context(noop_system(scratch())),
            stack.enter_context(gateway_system(scratch(), identity="oidc", audit="sqlite",
                                               workers=1, issuer=issuer, sts=sts)),
            stack.enter_context(gateway_system(scratch(), identity="oidc", audit="sqlite",
                                               workers=1, issuer=issuer, sts=sts,
                                               serve=unaudited)),
        ]
        for system in systems:
            wait_ready(system.url, system.credential)
        rounds = rounds_of(systems, args)
    floor = durable_commit_floor()
    command = shlex.join([".venv/bin/python", "bench/audit_bound.py", *sys.argv[1:]])
    section = report(rounds, floor, command)
    print(section)
    if args.write:
        write_section(args.write, "audit-bound", section)


if __name__ == "__main__":
    main()
