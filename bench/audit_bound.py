"""What the durable audit record costs a connect: issue 22's targets 1 to 3, alone.

Three responders stay up behind their own nats-servers and are measured in turn, round
by round: the no-op floor, the gateway (OIDC, SQLite audit), and the same gateway with
its record left out (bench/unaudited_gateway.py, a measuring instrument only); beside
them, what the record's fsync'd commit alone costs on this disk (bench/_floor.py). The
rounds are bench/_paired.py's and the verdicts bench/_targets.py's, the same that
bench/run.py reports: a quicker run of that part, for trying a change.

    .venv/bin/python bench/audit_bound.py --rounds 2 --connects 500 --storm 2000
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from _common import machine, write_section  # bench/ is on sys.path as a script
from _floor import CommitFloor, durable_commit_floor
from _load import add_load_arguments
from _paired import Load, Round, paired_rounds, rounds_table, three_systems
from _targets import (
    RunResults,
    decision_without_record,
    record_at_floor,
    storm_one_process,
)

from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts


def verdict_lines(rounds: list[Round], floor: CommitFloor) -> str:
    results = RunResults(floor=floor, rounds=rounds)
    lines = []
    for name, judge in (("1. the record at its floor", record_at_floor),
                        ("2. decision without the record", decision_without_record),
                        ("3. storm CPU, one process", storm_one_process)):
        measured, met = judge(results)
        lines.append(f"- {name}: {measured}: {'met' if met else 'not met'}")
    return "\n".join(lines)


def report(rounds: list[Round], floor: CommitFloor, command: str) -> str:
    return "\n\n".join([
        "## What the audit record costs: targets 1 to 3",
        f"Command: `{command}`",
        f"Machine: {machine()}",
        "Each round measures, in turn, the no-op floor, the gateway (OIDC, SQLite audit) "
        "and the same gateway with its audit sink replaced by one that records nothing "
        "(`bench/unaudited_gateway.py`, a measuring instrument: the product has no such "
        "setting). Ratios in brackets are against the same round's no-op.",
        rounds_table(rounds),
        verdict_lines(rounds, floor),
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
