"""Every connect benchmark, in one run on one machine: the table in docs/benchmarks.md.

    .venv/bin/python bench/run.py --write docs/benchmarks.md

Scenarios: static password (no callout), the no-op callout, and the gateway with OIDC or
AWS IAM (moto's STS) identity, each with the SQLite and the PostgreSQL audit store. Each
is measured one client at a time (p50/p99/p99.9 over ``--connects``) and as a storm
(``--storm`` connects with ``--in-flight`` outstanding, over ``--client-processes``).
The two ratio targets are then judged on ``--paired-rounds`` rounds in which the no-op
floor and the gateway (OIDC, SQLite) are measured one after the other (bench/_paired.py).
Then the reconnect storm (``--reconnect-clients`` connected clients, nats-server
restarted) and the gateway's memory after ``--memory-decisions`` decisions.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import machine, write_section  # bench/ is on sys.path as a script
from _floor import CommitFloor, durable_commit_floor
from _load import add_load_arguments, percentile, sequential, wait_ready
from _memory import MemoryResult, memory_under_load
from _paired import PairedRound, median_ratios, paired_rounds
from _reconnect import ReconnectResult, reconnect_storm
from _systems import System, gateway_system, noop_system, static_system, storm_with_cpu

from gateway.dev.issuer import DevIssuer
from gateway.dev.moto_sts import MotoSts


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
NOOP = "no-op callout (Python floor)"
GATEWAY_OIDC_SQLITE = "gateway: OIDC, SQLite audit"


def scenarios(args: argparse.Namespace, issuer: DevIssuer, sts: MotoSts) -> Iterator[Scenario]:
    yield "static password (no callout)", lambda tmp: static_system()
    yield NOOP, noop_system
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


def run_paired(args: argparse.Namespace, issuer: DevIssuer, sts: MotoSts) -> list[PairedRound]:
    with ExitStack() as stack:
        noop = stack.enter_context(noop_system(Path(stack.enter_context(
            tempfile.TemporaryDirectory()))))
        gateway = stack.enter_context(gateway_system(
            Path(stack.enter_context(tempfile.TemporaryDirectory())), identity="oidc",
            audit="sqlite", workers=args.workers, issuer=issuer, sts=sts))
        for system in (noop, gateway):
            wait_ready(system.url, system.credential)
        return paired_rounds(noop, gateway, rounds=args.paired_rounds,
                             connects=args.connects, warmup=args.warmup,
                             storm_connects=args.storm, in_flight=args.in_flight,
                             processes=args.client_processes)


def paired_table(rounds: list[PairedRound]) -> str:
    lines = ["| round | no-op p50 ms | gateway p50 ms | ratio | no-op connects/s | "
             "gateway connects/s | share | gateway CPU ms/connect | failed connects |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for index, r in enumerate(rounds, 1):
        lines.append(f"| {index} | {r.noop_p50:.2f} | {r.gateway_p50:.2f} | "
                     f"{r.p50_ratio:.2f}x | {r.noop_per_second:.0f} | "
                     f"{r.gateway_per_second:.0f} | {r.storm_share:.0%} | "
                     f"{r.gateway_cpu_ms:.2f} | {r.storm_failures} |")
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


def run_memory(args: argparse.Namespace, issuer: DevIssuer, sts: MotoSts) -> MemoryResult:
    with tempfile.TemporaryDirectory() as tmp, gateway_system(
            Path(tmp), identity="oidc", audit="sqlite", workers=1, issuer=issuer,
            sts=sts) as system:
        wait_ready(system.url, system.credential)
        assert system.stack is not None
        result = memory_under_load(system.url, system.credential,
                                   system.stack.responder_pids()[0],
                                   total=args.memory_decisions, steps=5,
                                   in_flight=args.in_flight, processes=args.client_processes)
    print(json.dumps(asdict(result)), flush=True)
    return result


def _ratio_verdicts(noop: Row | None, gateway: Row | None, paired: list[PairedRound],
                    ) -> tuple[tuple[float, str], tuple[float, str]] | None:
    """((p50 ratio, text), (storm share, text)): the paired rounds' medians when there are
    any, with the table's single-shot ratios quoted beside them; else the table's."""
    texts = ["", ""]
    values: list[float] = []
    if noop and gateway:
        values = [gateway.p50 / noop.p50, gateway.storm_per_second / noop.storm_per_second]
        texts = [f"{gateway.p50:.2f} / {noop.p50:.2f} ms = {values[0]:.2f}x",
                 f"{gateway.storm_per_second:.0f} / {noop.storm_per_second:.0f} = "
                 f"{values[1]:.0%}"]
    if paired:
        beside = ([f"; table above {values[0]:.2f}x", f"; table above {values[1]:.0%}"]
                  if values else ["", ""])
        values = list(median_ratios(paired))
        rounds = f"median of {len(paired)} paired rounds"
        texts = [f"{rounds} {values[0]:.2f}x (rounds "
                 f"{', '.join(f'{r.p50_ratio:.2f}x' for r in paired)}){beside[0]}",
                 f"{rounds} {values[1]:.0%} (rounds "
                 f"{', '.join(f'{r.storm_share:.0%}' for r in paired)}){beside[1]}"]
    if not values:
        return None
    return (values[0], texts[0]), (values[1], texts[1])


def verdicts(rows: list[Row], paired: list[PairedRound], reconnect: ReconnectResult | None,
             memory: MemoryResult | None) -> str:
    by_name = {row.scenario: row for row in rows}
    noop, gateway = by_name.get(NOOP), by_name.get(GATEWAY_OIDC_SQLITE)
    lines = ["| target | measured | met |", "|---|---|---|"]

    def line(target: str, measured: str, met: bool) -> None:
        lines.append(f"| {target} | {measured} | {'yes' if met else '**no**'} |")

    ratios = _ratio_verdicts(noop, gateway, paired)
    if ratios is not None:
        (ratio, ratio_text), (share, share_text) = ratios
        line("gateway OIDC + SQLite, 1 at a time: p50 <= 1.3x no-op p50", ratio_text,
             ratio <= 1.3)
        line("gateway OIDC + SQLite storm: >= 80% of no-op connects/s", share_text,
             share >= 0.8)
    if reconnect:
        r = reconnect
        line(f"reconnect storm, {r.clients} clients: all back",
             f"{r.back} / {r.clients} back in {r.all_back_seconds:.1f} s "
             f"({r.closed_for_good} gave up)", r.back == r.clients)
        line("reconnect storm: 0 wrong denials", f"{r.deny_records} deny records",
             r.deny_records == 0)
        line("reconnect storm: every grant audited",
             f"{r.clients_without_grant_record} clients back without a grant record; "
             f"{r.grant_records} grant records for {r.back} reconnections",
             r.clients_without_grant_record == 0)
        line("reconnect storm: every decision recorded",
             f"{r.unrecorded_decisions} decisions answered but not recorded",
             r.unrecorded_decisions == 0)
    if memory:
        last = memory.samples[-1][1]
        half = memory.samples[len(memory.samples) // 2][1]
        line(f"RSS after {memory.decisions} decisions <= 150 MB, not growing",
             f"peak {memory.peak_mb:.1f} MB; {half:.1f} MB at half way, {last:.1f} MB at the "
             "end", memory.peak_mb <= 150 and last - half <= 0.1 * half)
    return "\n".join(lines)


def floor_note(rows: list[Row], floor: CommitFloor) -> str:
    """The share of the one-at-a-time budget that the durable audit write alone takes."""
    noop = next((r for r in rows if r.scenario == NOOP), None)
    text = (f"One durable audit record on this disk, one at a time (`bench/_floor.py`): "
            f"commit p50 {floor.commit_p50_ms:.2f} ms; through the gateway's writer thread "
            f"and back {floor.writer_p50_ms:.2f} ms.")
    if noop is not None:
        budget = 0.3 * noop.p50
        text += (f" The 1.3x target leaves 0.3 x {noop.p50:.2f} = {budget:.2f} ms for "
                 "everything the gateway adds to a connect; the durable write alone "
                 f"takes {floor.writer_p50_ms / budget:.0%} of it.")
    return text


def reconnect_table(r: ReconnectResult) -> str:
    return "\n".join([
        "| clients | back | time until all back s | p50 s | p99 s | auth errors retried | "
        "deny records | grant records | reconnected without a record | "
        "unrecorded decisions | longest refusal streak | gave up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r.clients} | {r.back} | {r.all_back_seconds:.1f} | {r.p50_seconds:.1f} | "
        f"{r.p99_seconds:.1f} | {r.retried_auth_errors} | {r.deny_records} | "
        f"{r.grant_records} | {r.clients_without_grant_record} | "
        f"{r.unrecorded_decisions} | {r.longest_refusal_streak} | {r.closed_for_good} |"])


def memory_table(m: MemoryResult) -> str:
    cells = " | ".join(f"{mb:.1f}" for _, mb in m.samples)
    heads = " | ".join(f"{n:,}" for n, _ in m.samples)
    return "\n".join([f"| decisions | {heads} | peak (VmHWM) |",
                      "|---|" + "---:|" * (len(m.samples) + 1),
                      f"| RSS MiB | {cells} | {m.peak_mb:.1f} |"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway --workers for the connect scenarios")
    parser.add_argument("--paired-rounds", type=int, default=3,
                        help="rounds of no-op vs gateway for the two ratio targets")
    parser.add_argument("--reconnect-clients", type=int, default=10_000)
    parser.add_argument("--reconnect-processes", type=int, default=4)
    parser.add_argument("--reconnect-workers", type=int, default=2,
                        help="gateway --workers for the reconnect storm")
    parser.add_argument("--memory-decisions", type=int, default=100_000)
    parser.add_argument("--only", default="", help="run scenarios whose name has this text")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    rows: list[Row] = []
    reconnect: ReconnectResult | None = None
    memory: MemoryResult | None = None
    floor: CommitFloor | None = None
    paired: list[PairedRound] = []
    with DevIssuer() as issuer, MotoSts(roles=("airflow-bench",)) as sts:
        for name, start in scenarios(args, issuer, sts):
            if args.only and args.only not in name:
                continue
            with tempfile.TemporaryDirectory() as tmp, start(Path(tmp)) as system:
                rows.append(measure(name, system, args))
        if rows:
            floor = durable_commit_floor()
            print(json.dumps(asdict(floor)), flush=True)
        if args.paired_rounds > 0 and (not args.only or args.only == "paired"):
            paired = run_paired(args, issuer, sts)
        if not args.only or args.only == "reconnect":
            reconnect = run_reconnect(args, issuer, sts)
        if not args.only or args.only == "memory":
            memory = run_memory(args, issuer, sts)
    report = "\n\n".join(part for part in (
        f"Machine: {machine()}", table(rows) if rows else "",
        "No-op floor and gateway (OIDC, SQLite) measured in turn, round by round:\n\n"
        + paired_table(paired) if paired else "",
        "Targets, from this run:\n\n" + verdicts(rows, paired, reconnect, memory),
        floor_note(rows, floor) if floor else "",
        f"Reconnect storm (gateway `--workers {args.reconnect_workers}`, "
        f"{args.reconnect_processes} "
        "client processes):\n\n" + reconnect_table(reconnect) if reconnect else "",
        "Gateway memory (one process, OIDC + SQLite) during the decisions:\n\n"
        + memory_table(memory) if memory else "") if part) + "\n"
    print(report)
    if args.write:
        command = shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
        write_section(args.write, "connect-bench", f"Command: `{command}`\n\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
