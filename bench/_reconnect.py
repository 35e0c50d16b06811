"""The reconnect storm: many connected workers, nats-server restarted under them.

Client processes each open their share of the clients with the project's own client
(`gateway.client.connect`: the envelope is rebuilt at every reconnect, reconnecting
forever with jittered backoff from 0.5 s up to 8 s while the server is down and up to
30 s after a refusal, giving up after 10 refusals in a row), each client acting for its
own task. Once every client is connected, nats-server is restarted on the same port (as
after a crash or an upgrade) and every client must come back through the gateway.
Measured: the time until the last one is back, the p99 of the per-client time back,
client-side auth errors (requests that timed out in the storm and were retried), deny
records (every client is entitled, so any deny is a wrong denial) and, per client, a
grant record for its reconnection. The longest run of refusals any one client saw
(timed-out callouts: every client is entitled) is what the client's give-up bound
(``RefusalPolicy.give_up_after``) must stay above.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from _load import percentile
from sqlalchemy import text

from gateway.audit.store import AuditStore

__all__ = ["ReconnectResult", "reconnect_storm"]

SETTLE_SECONDS = 240.0


@dataclass
class ReconnectResult:
    clients: int
    connected_before: int
    back: int
    all_back_seconds: float
    p50_seconds: float
    p99_seconds: float
    retried_auth_errors: int
    deny_records: int
    grant_records: int
    clients_without_grant_record: int
    unrecorded_decisions: int
    closed_for_good: int
    longest_refusal_streak: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # reason code -> records (a dict: dataclasses.asdict cannot copy a Counter)
    deny_reasons: dict[str, int] = field(default_factory=dict)


async def _clients(url: str, envelope_token: str, names: list[str], conn: Connection) -> None:
    from gateway.client import OidcToken, connect
    from gateway.envelope import Scope

    back: dict[str, float | None] = {}
    errors: Counter[str] = Counter()
    streak: Counter[str] = Counter()  # refusals in a row, per client, since it was back
    longest: Counter[str] = Counter()
    slots = asyncio.Semaphore(100)

    async def open_one(name: str) -> Any:
        async def reconnected() -> None:
            back[name] = time.time()
            streak[name] = 0

        async def on_error(exc: Exception) -> None:
            errors[f"{type(exc).__name__}: {exc}"[:80]] += 1
            if "uthorization" in str(exc):
                streak[name] += 1
                longest[name] = max(longest[name], streak[name])

        async def closed() -> None:
            errors[f"CLOSED: {name}"] += 1  # gave up: it would never come back

        async with slots:
            for _ in range(40):
                try:
                    return await connect(url, OidcToken(envelope_token),
                                         scope=Scope("storm", name), name=name,
                                         reconnected_cb=reconnected, error_cb=on_error,
                                         closed_cb=closed, connect_timeout=5)
                except Exception:  # the gateway is busy with the others: try again
                    await asyncio.sleep(0.5)
        return None  # counted (connected_before < clients), not an abort of the storm

    opened = await asyncio.gather(*(open_one(name) for name in names))
    clients = [client for client in opened if client is not None]
    errors.clear()  # from here on, only the storm's errors count
    streak.clear()
    longest.clear()
    conn.send(len(clients))
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # server restarted
    back.update(dict.fromkeys(names))
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and any(t is None for t in back.values()):
        await asyncio.sleep(0.2)
    conn.send((back, errors, max(longest.values(), default=0)))
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def _client_process(url: str, token: str, names: list[str], conn: Connection) -> None:
    asyncio.run(_clients(url, token, names, conn))


def reconnect_storm(url: str, token: str, restart: Any, audit_url: str, *, clients: int,
                    processes: int, unrecorded: Any = lambda: 0) -> ReconnectResult:
    """``restart()`` restarts nats-server; ``token`` is the workers' OIDC token;
    ``unrecorded()`` counts the decisions the gateway answered but could not record."""
    context = multiprocessing.get_context("spawn")
    names = [f"c{p}-{i}" for p in range(processes) for i in range(clients // processes)]
    pipes, procs = [], []
    for index in range(processes):
        parent, child = context.Pipe()
        share = names[index::processes]
        proc = context.Process(target=_client_process, args=(url, token, share, child))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    try:
        connected = sum(pipe.recv() for pipe in pipes)
        restarted_at = time.time()
        restart()
        for pipe in pipes:
            pipe.send("restarted")
        back: dict[str, float | None] = {}
        errors: Counter[str] = Counter()
        longest = 0
        for pipe in pipes:
            part, part_errors, part_longest = pipe.recv()
            back.update(part)
            errors.update(part_errors)
            longest = max(longest, part_longest)
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    times = sorted(t - restarted_at for t in back.values() if t is not None)
    came_back = [name for name, at in back.items() if at is not None]
    denies, grants, missing = _audit_counts(audit_url, restarted_at, came_back)
    reasons = _deny_reasons(audit_url, restarted_at)
    auth_errors = sum(n for e, n in errors.items() if "uthorization" in e)
    return ReconnectResult(
        clients=len(names), connected_before=connected, back=len(times),
        all_back_seconds=times[-1] if times else float("nan"),
        p50_seconds=percentile(times, 0.5), p99_seconds=percentile(times, 0.99),
        retried_auth_errors=auth_errors, deny_records=denies, grant_records=grants,
        clients_without_grant_record=missing, unrecorded_decisions=unrecorded(),
        closed_for_good=sum(n for e, n in errors.items() if e.startswith("CLOSED")),
        longest_refusal_streak=longest, errors=errors, deny_reasons=reasons)


def _audit_counts(audit_url: str, since: float, names: list[str]) -> tuple[int, int, int]:
    """Deny records, grant records, and clients of ``names`` with no grant record, since
    ``since``."""
    store = AuditStore(audit_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT decision, client_name, COUNT(*) FROM decisions "
                "WHERE decided_at >= :since GROUP BY decision, client_name"),
                {"since": since}).all()
    finally:
        store.close()
    denies = sum(int(n) for decision, _, n in rows if decision == "deny")
    granted = {name for decision, name, _ in rows if decision == "grant"}
    grants = sum(int(n) for decision, _, n in rows if decision == "grant")
    return denies, grants, sum(1 for name in names if name not in granted)


def _deny_reasons(audit_url: str, since: float) -> dict[str, int]:
    """Deny records since ``since`` by reason code: which check refused an entitled
    client."""
    store = AuditStore(audit_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT reason_code, COUNT(*) FROM decisions WHERE decision = 'deny' "
                "AND decided_at >= :since GROUP BY reason_code"), {"since": since}).all()
    finally:
        store.close()
    return {str(code): int(n) for code, n in rows}
