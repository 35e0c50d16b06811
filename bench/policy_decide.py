"""How a policy decision, a policy reload and the decision cache behave as the set grows.

    .venv/bin/python bench/policy_decide.py --write docs/benchmarks.md

Decisions use the shipped examples plus N synthetic team policies (each matching a
different service-account namespace of one issuer; the identity is the last team's), and
are uncached: the indexed engine against the unindexed reference scan (what every decision
did before the index). A load is read + YAML + validation + hash of the whole directory.

The loop-stall probe is a task that sleeps 1 ms in a loop and records how late it wakes;
its worst lateness is taken while a reload of 1,000 team policies runs as the gateway runs
it (a worker thread calling PolicyHolder.reload), in a process whose heap was settled as a
serving gateway's is. The same probe with nothing running is the machine's own noise.

Cache survival: a cache full of 10,000 decisions (1,000 teams x 10 DAGs), a reload that
edits one team's policy, then every decision again.
The section between the policy-bench markers in the target file is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import machine, write_section  # bench/ is on sys.path when run as a script

from gateway.envelope import Scope
from gateway.heap import settle_heap_for_serving
from gateway.identity.model import Identity
from gateway.policy.cache import DecisionCache
from gateway.policy.decide import (
    ClientConnection,
    Decision,
    decide,
    decision_from,
    matching_unindexed,
    shape_of,
)
from gateway.policy.load import PolicySet, load_policy_dir
from gateway.policy.offload import load_policy_dir_isolated
from gateway.policy.reload import PolicyHolder

ROOT = Path(__file__).resolve().parents[1]
TEAM = """\
  - id: team-{n}
    match:
      oidc:
        issuer: kubernetes
        subject: "system:serviceaccount:team-{n}:*"
        claims: {{/kubernetes.io/namespace: team-{n}}}
    scopes:
      - dag: "team{n}_*"
        tasks: ["*"]
    permissions:
      publish: {{allow: ["{prefix}.{{dag_id}}.{{task_id}}.>"]}}
      subscribe: {{allow: ["airflow.{{dag_id}}.{{task_id}}.>"]}}
"""
CLIENT = ClientConnection("10.0.0.1", "STANDARD")
SIZES = (1, 100, 1000, 10_000)
STALL_TEAMS = 1000
CACHE_TEAMS, CACHE_DAGS = 1000, 10
TEAMS_PER_FILE = 1000


def build_dir(target: Path, teams: int, edited: int | None = None) -> None:
    """Examples plus ``teams`` team policies, 1,000 to a file (a file is at most 1 MiB);
    team ``edited`` publishes elsewhere."""
    for example in (ROOT / "policies" / "examples").glob("*.yaml"):
        shutil.copy(example, target / example.name)
    for first in range(0, teams, TEAMS_PER_FILE):
        body = "".join(TEAM.format(n=n, prefix="edited" if n == edited else "airflow")
                       for n in range(first, min(first + TEAMS_PER_FILE, teams)))
        name = f"teams-{first // TEAMS_PER_FILE:02d}.yaml"
        (target / name).write_text("version: 1\npolicies:\n" + body)


def identity(team: int) -> Identity:
    subject = f"system:serviceaccount:team-{team}:worker"
    return Identity(method="oidc", issuer="https://k8s.example", issuer_name="kubernetes",
                    subject=subject, expires=2_000_000_000, fingerprint="",
                    claims={"sub": subject, "aud": "nats-gateway",
                            "kubernetes.io": {"namespace": f"team-{team}"}})


def decide_unindexed(policy_set: PolicySet, who: Identity, scope: Scope,
                     client: ClientConnection, now: int) -> Decision:
    """The engine before the index: every policy through the matcher."""
    shape = shape_of(matching_unindexed(policy_set, who, scope), who, scope, client)
    return decision_from(shape, policy_set.content_hash, who, now)


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return sorted(samples)


def measure(teams: int, decisions: int, loads: int | None = None) -> dict[str, float]:
    """Uncached decide p50/p99 at ``teams`` team policies (plus the examples), and the
    median of ``loads`` directory loads (default 3, 1 from 10,000 teams: each takes
    seconds), here and in a reload's child process."""
    runs = loads if loads is not None else 3 if teams <= 1000 else 1
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        build_dir(directory, teams)
        in_process = timed(lambda: load_policy_dir(directory), runs)
        reloads = timed(lambda: load_policy_dir_isolated(directory), runs)
        policy_set = load_policy_dir(directory)
    last = max(teams - 1, 0)
    who, scope = identity(last), Scope(f"team{last}_etl", "grp.load")
    assert decide(policy_set, who, scope, CLIENT, 1_000) == decide_unindexed(
        policy_set, who, scope, CLIENT, 1_000)
    indexed = timed(lambda: decide(policy_set, who, scope, CLIENT, 1_000), decisions)
    scans = max(20, min(decisions, 200_000 // max(teams, 1)))
    reference = timed(lambda: decide_unindexed(policy_set, who, scope, CLIENT, 1_000), scans)
    return {"policies": len(policy_set.policies),
            "p50_us": indexed[len(indexed) // 2] * 1e6,
            "p99_us": indexed[int(len(indexed) * 0.99)] * 1e6,
            "scan_p50_us": reference[len(reference) // 2] * 1e6, "scans": scans,
            "load_ms": statistics.median(in_process) * 1e3,
            "reload_ms": statistics.median(reloads) * 1e3}


async def _worst_lateness(work: Callable[[], object]) -> float:
    """The worst lateness (ms) of a 1 ms sleeper on the loop while ``work`` runs in a
    worker thread, as the gateway runs a reload."""
    worst, running = 0.0, True

    async def probe() -> None:
        nonlocal worst
        while running:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - started - 0.001)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.02)
    try:
        await asyncio.to_thread(work)
    finally:
        running = False
        await task
    return worst * 1e3


async def _stalls(runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"idle": [], "thread": [], "isolated": []}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        build_dir(directory, STALL_TEAMS)
        holders = {"thread": PolicyHolder(directory, loader=load_policy_dir),
                   "isolated": PolicyHolder(directory)}
        settle_heap_for_serving()  # as `serve` does once started
        for run in range(runs):
            for name, holder in holders.items():
                build_dir(directory, STALL_TEAMS, edited=run)  # a real change each time
                out[name].append(await _worst_lateness(_reload_of(holder)))
            out["idle"].append(await _worst_lateness(lambda: time.sleep(0.3)))
    return out


def _reload_of(holder: PolicyHolder) -> Callable[[], object]:
    return lambda: holder.reload("bench")


def stalls(runs: int) -> dict[str, list[float]]:
    """Worst loop lateness (ms) per reload of 1,006 policies, ``runs`` of each: "thread"
    (the old way), "isolated" (the gateway's way now) and "idle" (nothing reloading)."""
    return asyncio.run(_stalls(runs))


def cache_survival() -> dict[str, float]:
    """A full cache, a reload that edits one team's policy, every decision again:
    ``kept`` of ``entries`` answered from the cache, ``edited_entries`` the edited team's
    (the only ones the reload can change)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        build_dir(directory, CACHE_TEAMS)
        before = load_policy_dir(directory)
        build_dir(directory, CACHE_TEAMS, edited=0)
        after = load_policy_dir(directory)
    asks = [(identity(n), Scope(f"team{n}_dag{d}", "t"))
            for n in range(CACHE_TEAMS) for d in range(CACHE_DAGS)]

    def replay(cache: DecisionCache, policy_set: PolicySet) -> float:
        started = time.process_time()
        for who, scope in asks:
            cache.decide(policy_set, who, scope, CLIENT, 1_000)
        return time.process_time() - started

    cache = DecisionCache(len(asks))
    fill = replay(cache, before)
    hits = cache.hits
    kept = replay(cache, after)
    return {"entries": len(asks), "hit_rate": (cache.hits - hits) / len(asks),
            "kept": cache.hits - hits, "edited_entries": CACHE_DAGS,
            "invalidated": cache.invalidated, "replay_s": kept, "empty_s": fill}


def report(rows: list[dict[str, float]], decisions: int, stall: dict[str, list[float]],
           cache: dict[str, float]) -> str:
    def worst(name: str) -> str:
        return f"{statistics.median(stall[name]):.1f} / {max(stall[name]):.1f}"

    runs = len(stall["idle"])
    lines = [
        "## Policy decision, reload and cache cost", "",
        "Command: `.venv/bin/python bench/policy_decide.py --write docs/benchmarks.md`", "",
        f"Machine: {machine()}. A shared, busy host: the idle row below is its own noise.",
        "", f"Uncached decisions ({decisions} per row, indexed; the unindexed reference "
        "scan, what every decision did before the index, fewer). The matching policy is "
        "the last one; a load is the median of 3 (1 at 10,000) full directory loads, in "
        "this process and in the reload's child process.", "",
        "| policies | decide p50 µs | decide p99 µs | scan (before) p50 µs | load ms "
        "| reload (child) ms |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['policies']:.0f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | "
              f"{r['scan_p50_us']:.0f} | {r['load_ms']:.0f} | {r['reload_ms']:.0f} |"
              for r in rows]
    lines += [
        "", f"Event-loop stall while {STALL_TEAMS + 6} policies reload: worst lateness of "
        f"a 1 ms sleeper, median / worst of {runs} reloads, ms.", "",
        "| reload | stall ms (median / worst) |", "|---|---:|",
        f"| none (the machine's noise over 0.3 s) | {worst('idle')} |",
        f"| in a worker thread of the gateway's process (the old way, today's parser) | "
        f"{worst('thread')} |",
        f"| in a child process, handed back in steps (now) | {worst('isolated')} |",
        "", f"Cache survival: {cache['entries']:.0f} cached decisions "
        f"({CACHE_TEAMS} teams x {CACHE_DAGS} DAGs, {CACHE_TEAMS + 6} policies), then a "
        "reload that edits one team's policy.", "",
        "| after the reload | value |", "|---|---:|",
        f"| hit rate of the same {cache['entries']:.0f} decisions | "
        f"{cache['hit_rate'] * 100:.1f}% |",
        f"| entries recomputed (the edited team's) | {cache['invalidated']:.0f} |",
        f"| CPU to answer them all again | {cache['replay_s']:.2f} s |",
        f"| CPU with an emptied cache, as after every reload before (indexed matching) | "
        f"{cache['empty_s']:.2f} s |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--stall-runs", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    rows = [measure(teams, args.decisions) for teams in SIZES]
    stall = stalls(args.stall_runs)
    cache = cache_survival()
    section = report(rows, args.decisions, stall, cache)
    print(section)
    if args.write:
        write_section(args.write, "policy-bench", section)


if __name__ == "__main__":
    main()
