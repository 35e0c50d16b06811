"""Task events through real Airflow 3 processes: published → asset events, with a
triggerer restart in the middle. The table in docs/benchmarks.md ("Airflow events").

    PYTHONPATH=$PWD .venv/bin/python bench/airflow_events.py --write docs/benchmarks.md

nats-server with JetStream, the gateway with the example policies, and Airflow's
api-server, scheduler, dag-processor and triggerer with the example DAGs
(tests/integration/airflow_events.py sets them up). ``--events`` events are published as
the producer task does (its scope, Nats-Msg-Id, lineage headers, PubAck awaited) in
bursts of ``--burst``; after half of them the triggerer is stopped (SIGTERM, not waiting
for the consumer to drain), ``--down-bursts`` bursts are published while it is down, and
it is started again. Then: asset events created, lost (published ids with no asset
event), duplicated (asset events beyond one per id), and publish (PubAck) → asset event
(its stored timestamp) latency.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import machine, write_section  # bench/ is on sys.path as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.integration helpers

from tests.integration.airflow_events import (
    Airflow,
    Producer,
    eventually,
    start_event_stack,
    start_example_airflow,
    start_gateway,
    stop_event_stack,
)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _stored_at(timestamp: str) -> float:
    # Airflow stores UTC without an offset in SQLite.
    parsed = datetime.datetime.fromisoformat(str(timestamp))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


async def _run(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    events = start_event_stack(tmp / "stack")
    airflow: Airflow | None = None
    try:
        await start_gateway(events)
        airflow = await start_example_airflow(events, tmp, token_lifetime=7200)

        async def reading() -> bool:
            return (await events.consumer_state())[2] > 0

        await eventually(reading, "the watcher", timeout=600, airflow=airflow)
        return await _measure(args, events, airflow)
    finally:
        if airflow is not None:
            await asyncio.to_thread(airflow.stop_all)
        await stop_event_stack(events)


async def _measure(args: argparse.Namespace, events: object, airflow: Airflow
                   ) -> dict[str, float]:
    producer = Producer(events)  # type: ignore[arg-type]
    bursts = args.events // args.burst
    restart_at = bursts // 2
    for number in range(bursts):
        if number == restart_at:
            await asyncio.to_thread(airflow.stop, "triggerer")
        if number == restart_at + args.down_bursts:
            airflow.start("triggerer")
        await producer.publish([f"b{number}__{i}" for i in range(args.burst)])
        await asyncio.sleep(args.gap)
    if "triggerer" not in airflow.processes:
        airflow.start("triggerer")

    async def settled() -> bool:
        ids = {e["payload"]["message_id"] for e in airflow.asset_events()}
        return set(producer.published) <= ids and (
            await events.consumer_state())[:2] == (0, 0)  # type: ignore[attr-defined]

    try:
        await eventually(settled, "every event", timeout=args.settle_timeout, airflow=airflow)
    except AssertionError as exc:
        print(f"not settled: {str(exc)[:200]}", file=sys.stderr)
    stored = airflow.asset_events()
    counts = Counter(e["payload"]["message_id"] for e in stored)
    first_stored: dict[str, float] = {}
    for event in stored:
        key, at = event["payload"]["message_id"], _stored_at(event["_timestamp"])
        first_stored[key] = min(at, first_stored.get(key, at))
    latencies = [first_stored[k] - t for k, t in producer.published.items()
                 if k in first_stored]
    return {"published": len(producer.published), "asset_events": len(stored),
            "lost": len(set(producer.published) - set(counts)),
            "duplicated": sum(n - 1 for n in counts.values()),
            "p50": _percentile(latencies, 0.50), "p99": _percentile(latencies, 0.99),
            "max": max(latencies, default=float("nan"))}


def _table(args: argparse.Namespace, result: dict[str, float]) -> str:
    command = (f"PYTHONPATH=$PWD .venv/bin/python bench/airflow_events.py --events "
               f"{args.events} --burst {args.burst} --down-bursts {args.down_bursts} "
               f"--write docs/benchmarks.md")
    return "\n".join([
        "## Airflow events: published → asset events, triggerer restarted midway",
        "",
        f"`{command}`",
        "",
        f"Machine: {machine()}. Airflow 3 api-server, scheduler, dag-processor and "
        "triggerer (LocalExecutor, SQLite) with the example DAGs, the gateway and "
        f"nats-server (JetStream) on the same machine. {args.events} events in bursts of "
        f"{args.burst}; the triggerer stopped (SIGTERM) after half of them and started "
        f"again after {args.down_bursts} more bursts. Latency: PubAck → the asset "
        "event's stored timestamp; events published while the triggerer was down wait "
        "for it, so p99 and max include the restart.",
        "",
        "| events published | asset events | lost | duplicated | latency p50 | p99 | max |",
        "|---|---|---|---|---|---|---|",
        f"| {result['published']:.0f} | {result['asset_events']:.0f} | "
        f"{result['lost']:.0f} | {result['duplicated']:.0f} | {result['p50']:.2f} s | "
        f"{result['p99']:.2f} s | {result['max']:.2f} s |",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--down-bursts", type=int, default=2,
                        help="bursts published while the triggerer is stopped")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between bursts")
    parser.add_argument("--settle-timeout", type=float, default=900)
    parser.add_argument("--write", type=Path, help="write the table into this file")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airflow-events-") as tmp:
        result = asyncio.run(_run(args, Path(tmp)))
    table = _table(args, result)
    print(table)
    print(f"(ran {time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.write:
        write_section(args.write, "airflow-events", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
