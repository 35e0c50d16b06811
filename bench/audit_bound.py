"""What the durable audit record costs a connect, set against the two ratio targets.

Three responders stay up behind their own nats-servers and are measured in turn, round
by round: the no-op floor, the gateway (OIDC, SQLite audit), and the same gateway with
its record left out (bench/unaudited_gateway.py, a measuring instrument only). The
third is the best any design that keeps the gateway's checks could do, so the room it
leaves under each target is the most a durable record may cost; beside it stands what
the record's fsync'd commit alone costs on this disk (bench/_floor.py).

The rounds are bench/_paired.py's, the same that bench/run.py judges issue 22's targets
on; the room reported here is against the earlier ratio targets (1.3x the no-op's p50,
80% of its storm rate).

    .venv/bin/python bench/audit_bound.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

from _common import machine, write_section  # bench/ is on sys.path as a script
from _floor import CommitFloor, durable_commit_floor
from _load import add_load_arguments
from _paired import Load, Round, paired_rounds, ratio, rounds_table, three_systems

from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts

P50_TARGET = 1.3  # gateway p50 at most this times the no-op's
STORM_TARGET = 0.8  # gateway connects/s at least this share of the no-op's


def _shares(rounds: list[Round], system: int) -> list[float]:
    return [ratio(row.in_order()[system].per_second, row.noop.per_second) for row in rounds]


def _listed(shares: list[float]) -> str:
    return ", ".join(f"{share:.0%}" for share in shares)


def budget_lines(rounds: list[Round], floor: CommitFloor) -> str:
    """The room each target leaves for the record: p50s as medians in ms, storm shares as
    the median of each round's own share (as bench/run.py takes its rounds' figures)."""
    noop_p50, gateway_p50, bound_p50 = (
        statistics.median(row.in_order()[i].p50_ms for row in rounds) for i in range(3))
    gateway_shares, bound_shares = _shares(rounds, 1), _shares(rounds, 2)
    bound_share = statistics.median(bound_shares)
    record_cpu = statistics.median(row.gateway.cpu_ms - row.bound.cpu_ms for row in rounds)
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
        f"thread back to back, {floor.paced_p50_ms:.2f} ms paced as one-at-a-time connects "
        f"are, {floor.writer_p50_ms:.2f} ms through a writer thread and back; in the "
        f"gateway the record costs {gateway_p50 - bound_p50:.2f} ms ({gateway_p50:.2f} ms, "
        f"{gateway_p50 / noop_p50:.2f}x).",
        f"- Storm (median of the rounds' shares): without its record the gateway makes "
        f"{bound_share:.0%} of the no-op's connects per second (rounds "
        f"{_listed(bound_shares)}), which leaves {room} the {STORM_TARGET:.0%} target for "
        f"the record; with it, "
        f"{statistics.median(gateway_shares):.0%} (rounds {_listed(gateway_shares)}). The "
        f"record costs the gateway {record_cpu:.2f} ms of CPU per storm connect.",
    ])


def report(rounds: list[Round], floor: CommitFloor, command: str) -> str:
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
    with DevIssuer() as issuer, MotoSts(roles=("airflow-bench",)) as sts, three_systems(
            issuer, sts) as systems:
        rounds = paired_rounds(systems, args.rounds, Load.from_args(args))
    floor = durable_commit_floor()
    command = shlex.join([".venv/bin/python", "bench/audit_bound.py", *sys.argv[1:]])
    section = report(rounds, floor, command)
    print(section)
    if args.write:
        write_section(args.write, "audit-bound", section)


if __name__ == "__main__":
    main()
