"""Every connect benchmark, in one run on one machine: the first section of
docs/benchmarks.md, with the targets of issue 22 judged on this run's own figures.

    .venv/bin/python bench/run.py --write docs/benchmarks.md

Scenarios: static password (no callout), the no-op callout, and the gateway with OIDC or
AWS IAM (moto's STS) identity, each with the SQLite and the PostgreSQL audit store. Each
is measured one client at a time (p50/p99/p99.9 over ``--connects``) and as a storm
(``--storm`` connects with ``--in-flight`` outstanding, over ``--client-processes``). A
connect that fails, one at a time or in a storm, is counted in its table, never fatal.

Then, for the "Targets (issue 22), from this run" table:

1-3. ``--paired-rounds`` rounds in which the no-op floor, the gateway (OIDC, SQLite) and
     the same gateway without its record (bench/unaudited_gateway.py) are each measured
     in turn: one-at-a-time p50, then the storm's rate and responder CPU
     (bench/_paired.py, shared with bench/audit_bound.py); each target is the median of
     the rounds' own figures. The record's fsync'd commit floor (bench/_floor.py) is
     measured in the same run.
4.   The storm (``--scaling-storm`` connects) against the gateway under `serve --workers N`
     for each N of ``--scaling`` (default 1,2,4,8), beside the no-op and static floors.
     It runs by default only on a machine of 16 cores or more, for which the target is
     set; elsewhere only when ``--scaling`` is given, and is then not judged.
5.   Uncached policy decisions at 1,006 and 10,006 policies (``--policy-decisions``),
     the event-loop stall of ``--policy-reloads`` reloads of 1,006 policies and the
     decision cache across a reload (bench/policy_decide.py's functions, in a child
     process).
6.   The reconnect storm (``--reconnect-clients`` connected clients, nats-server
     restarted under them), ``--reconnect-runs`` times, each against a fresh gateway;
     and the gateway's memory over ``--memory-decisions`` decisions, the storm's
     connects cycling over ``--memory-workers`` distinct workers (each its own token and
     task) so that the gateway's caches fill.

``--only TEXT`` runs the scenarios whose name has TEXT, or one part: ``paired``,
``scaling``, ``policies``, ``reconnect`` or ``memory``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import machine, write_section  # bench/ is on sys.path as a script
from _floor import PACE_SECONDS, CommitFloor, durable_commit_floor
from _load import add_load_arguments, percentile, sequential, wait_ready
from _memory import audit_tally, memory_under_load
from _paired import Load, Round, paired_rounds, rounds_table, three_systems
from _policy_targets import policy_targets
from _reconnect import ReconnectResult, reconnect_storm
from _scaling import ScalingLoad, ScalingRow, default_scaling, scaling_storms
from _systems import (
    System,
    distinct_workers_credential,
    gateway_system,
    noop_system,
    static_system,
    storm_with_cpu,
)
from _targets import MemoryRun, RunResults, targets_table

from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts

PARTS = ("paired", "scaling", "policies", "reconnect", "memory")


@dataclass
class Row:
    scenario: str
    connects: int
    p50: float
    p99: float
    p999: float
    connect_failures: int  # one-at-a-time connects that failed (warm-up included)
    storm_connects: int
    storm_per_second: float
    storm_p99: float
    storm_failures: int
    storm_cpu_ms: float | None  # responder CPU per storm connect; None without a callout


def measure(name: str, system: System, args: argparse.Namespace) -> Row:
    wait_ready(system.url, system.credential)
    one = sequential(system.url, system.credential, args.connects, args.warmup)
    burst, cpu_ms = storm_with_cpu(system, args.storm, args.in_flight,
                                   args.client_processes)
    latencies = one.latencies
    row = Row(name, len(latencies), percentile(latencies, 0.5), percentile(latencies, 0.99),
              percentile(latencies, 0.999), one.failed, len(burst.latencies),
              burst.connects_per_second, percentile(burst.latencies, 0.99),
              sum(burst.failures.values()), cpu_ms)
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


def table(rows: list[Row]) -> str:
    lines = ["| scenario | 1 at a time: connects | p50 ms | p99 ms | p99.9 ms | failures | "
             "storm: connects | connects/s | p99 ms | failures | responder CPU ms/connect |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cpu = "n/a" if r.storm_cpu_ms is None else f"{r.storm_cpu_ms:.2f}"
        lines.append(f"| {r.scenario} | {r.connects} | {r.p50:.2f} | {r.p99:.2f} | "
                     f"{r.p999:.2f} | {r.connect_failures} | {r.storm_connects} | "
                     f"{r.storm_per_second:.0f} | {r.storm_p99:.1f} | {r.storm_failures} | "
                     f"{cpu} |")
    return "\n".join(lines)


def run_rounds(args: argparse.Namespace, issuer: DevIssuer, sts: MotoSts) -> list[Round]:
    with three_systems(issuer, sts) as systems:
        return paired_rounds(systems, args.paired_rounds, Load.from_args(args))


def scaling_table(rows: list[ScalingRow]) -> str:
    lines = ["| system | `serve --workers` | storm: connects | connects/s | p99 ms | failures "
             "| responder CPU ms/connect |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        workers = "" if r.workers is None else str(r.workers)
        cpu = "n/a" if r.cpu_ms is None else f"{r.cpu_ms:.2f}"
        lines.append(f"| {r.system} | {workers} | {r.connects} | {r.per_second:.0f} | "
                     f"{r.p99_ms:.1f} | {r.failures} | {cpu} |")
    return "\n".join(lines)


def run_reconnect(args: argparse.Namespace, issuer: DevIssuer, sts: MotoSts) -> ReconnectResult:
    with tempfile.TemporaryDirectory() as tmp, gateway_system(
            Path(tmp), identity="oidc", audit="sqlite", workers=args.reconnect_workers,
            issuer=issuer, sts=sts) as system:
        wait_ready(system.url, system.credential)
        assert system.stack is not None and system.audit_url is not None
        token = issuer.mint(subject="bench-worker", audience="nats-gateway", lifetime=3600)
        result = reconnect_storm(system.url, token, system.stack.server.restart,
                                 system.audit_url, clients=args.reconnect_clients,
                                 processes=args.reconnect_processes,
                                 unrecorded=system.stack.unrecorded_decisions)
    print(json.dumps({k: v for k, v in asdict(result).items() if k != "errors"}), flush=True)
    for error, count in result.errors.most_common(4):
        print(f"  client error x{count}: {error}", flush=True)
    return result


def run_memory(args: argparse.Namespace, issuer: DevIssuer, sts: MotoSts) -> MemoryRun:
    credential = distinct_workers_credential(issuer, args.memory_workers)
    with tempfile.TemporaryDirectory() as tmp, gateway_system(
            Path(tmp), identity="oidc", audit="sqlite", workers=1, issuer=issuer,
            sts=sts) as system:
        wait_ready(system.url, credential)
        assert system.stack is not None and system.audit_url is not None
        result = memory_under_load(system.url, credential,
                                   system.stack.responder_pids()[0],
                                   total=args.memory_decisions, steps=5,
                                   in_flight=args.in_flight, processes=args.client_processes)
        tally = audit_tally(system.audit_url)
    print(json.dumps({**asdict(result), **asdict(tally)}), flush=True)
    return MemoryRun(result, args.memory_workers, tally)


def floor_line(floor: CommitFloor) -> str:
    return (f"One durable audit record on this disk, one at a time (`bench/_floor.py`): "
            f"commit p50 {floor.commit_p50_ms:.2f} ms on the calling thread back to back, "
            f"{floor.paced_p50_ms:.2f} ms paced as one-at-a-time connects are (one every "
            f"{PACE_SECONDS * 1000:.1f} ms); through the gateway's writer thread and back "
            f"{floor.writer_p50_ms:.2f} ms.")


def reconnect_table(runs: list[ReconnectResult]) -> str:
    lines = ["| run | clients | back | time until all back s | p50 s | p99 s | "
             "auth errors retried | deny records | grant records | "
             "reconnected without a record | unrecorded decisions | "
             "longest refusal streak | gave up |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for index, r in enumerate(runs, 1):
        lines.append(
            f"| {index} | {r.clients} | {r.back} | {r.all_back_seconds:.1f} | "
            f"{r.p50_seconds:.1f} | {r.p99_seconds:.1f} | {r.retried_auth_errors} | "
            f"{_denies(r)} | {r.grant_records} | {r.clients_without_grant_record} | "
            f"{r.unrecorded_decisions} | {r.longest_refusal_streak} | {r.closed_for_good} |")
    return "\n".join(lines)


def _denies(r: ReconnectResult) -> str:
    """Deny records with their reason codes: which check refused an entitled client."""
    if not r.deny_records:
        return "0"
    reasons = ", ".join(f"{code} {n}" for code, n in sorted(
        r.deny_reasons.items(), key=lambda item: -item[1]))
    return f"{r.deny_records} ({reasons})"


def memory_table(run: MemoryRun) -> str:
    m = run.result
    cells = " | ".join(f"{mb:.1f}" for _, mb in m.samples)
    heads = " | ".join(f"{n:,}" for n, _ in m.samples)
    return "\n".join([f"| decisions | {heads} | peak (VmHWM) |",
                      "|---|" + "---:|" * (len(m.samples) + 1),
                      f"| RSS MiB | {cells} | {m.peak_mb:.1f} |"])


def worker_counts(text: str) -> list[int]:
    """`--scaling 1,2,4,8`: positive worker counts."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("worker counts are positive integers, e.g. 1,2,4,8")
    return counts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(p)
    p.add_argument("--workers", type=int, default=1,
                   help="gateway --workers for the connect scenarios")
    p.add_argument("--paired-rounds", type=int, default=3,
                   help="rounds of no-op, gateway, gateway without its record (targets 1-3)")
    p.add_argument("--scaling", type=worker_counts, default=None,
                   help="gateway --workers counts for target 4 (default 1,2,4,8 on a "
                        "machine of 16 cores or more, else not run)")
    p.add_argument("--scaling-storm", type=int, default=20_000,
                   help="connects in each scaling storm")
    p.add_argument("--scaling-in-flight", type=int, default=400)
    p.add_argument("--scaling-client-processes", type=int, default=4)
    p.add_argument("--policy-decisions", type=int, default=2000,
                   help="uncached decisions per policy-set size (target 5)")
    p.add_argument("--policy-reloads", type=int, default=5,
                   help="reloads of 1,006 policies under the stall probe (target 5)")
    p.add_argument("--reconnect-clients", type=int, default=10_000)
    p.add_argument("--reconnect-processes", type=int, default=4)
    p.add_argument("--reconnect-workers", type=int, default=2,
                   help="gateway --workers for the reconnect storm")
    p.add_argument("--reconnect-runs", type=int, default=3,
                   help="reconnect storms, each against a fresh gateway")
    p.add_argument("--memory-decisions", type=int, default=100_000)
    p.add_argument("--memory-workers", type=int, default=10_000,
                   help="distinct workers (token and task) the memory storm cycles over")
    p.add_argument("--only", default="",
                   help=f"scenarios whose name has this text, or one of: {', '.join(PARTS)}")
    p.add_argument("--write", type=Path, default=None)
    return p


def wanted(args: argparse.Namespace, part: str) -> bool:
    return not args.only or args.only == part


def collect(args: argparse.Namespace) -> tuple[list[Row], RunResults]:
    rows: list[Row] = []
    results = RunResults(args.reconnect_clients, args.memory_decisions, args.memory_workers)
    with DevIssuer() as issuer, MotoSts(roles=("airflow-bench",)) as sts:
        for name, start in scenarios(args, issuer, sts):
            if args.only and args.only not in name:
                continue
            with tempfile.TemporaryDirectory() as tmp, start(Path(tmp)) as system:
                rows.append(measure(name, system, args))
        if args.paired_rounds > 0 and wanted(args, "paired"):
            results.rounds = run_rounds(args, issuer, sts)
        if rows or results.rounds:
            results.floor = durable_commit_floor()
            print(json.dumps(asdict(results.floor)), flush=True)
        scaling = default_scaling(args.scaling)
        if scaling and wanted(args, "scaling"):
            results.scaling = scaling_storms(scaling, issuer, sts, ScalingLoad(
                args.scaling_storm, args.scaling_in_flight, args.scaling_client_processes))
        if wanted(args, "policies"):
            results.policies = policy_targets(args.policy_decisions, args.policy_reloads)
            print(json.dumps(asdict(results.policies)), flush=True)
        if wanted(args, "reconnect"):
            results.reconnects = [run_reconnect(args, issuer, sts)
                                  for _ in range(args.reconnect_runs)]
        if wanted(args, "memory"):
            results.memory = run_memory(args, issuer, sts)
    return rows, results


def report(args: argparse.Namespace, rows: list[Row], results: RunResults) -> str:
    parts = [
        f"Machine: {machine()}",
        table(rows) if rows else "",
        "No-op floor, gateway (OIDC, SQLite) and the same gateway without its record "
        "(`bench/unaudited_gateway.py`), measured in turn, round by round; ratios in "
        "brackets are against the same round's no-op:\n\n" + rounds_table(results.rounds)
        if results.rounds else "",
        floor_line(results.floor) if results.floor else "",
        "Targets (issue 22), from this run:\n\n" + targets_table(results),
        "Storm against `serve --workers N` (target 4; "
        f"{args.scaling_storm} connects, {args.scaling_in_flight} in flight, "
        f"{args.scaling_client_processes} client processes):\n\n"
        + scaling_table(results.scaling) if results.scaling else "",
        f"Reconnect storm (gateway `--workers {args.reconnect_workers}`, "
        f"{args.reconnect_processes} client processes), each run against a fresh "
        "gateway:\n\n" + reconnect_table(results.reconnects) if results.reconnects else "",
        f"Gateway memory (one process, OIDC + SQLite) during the decisions, from "
        f"{results.memory.workers:,} distinct workers:\n\n" + memory_table(results.memory)
        if results.memory else "",
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def main() -> int:
    args = parser().parse_args()
    rows, results = collect(args)
    text = report(args, rows, results)
    print(text)
    if args.write:
        command = shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
        write_section(args.write, "connect-bench", f"Command: `{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
