"""The audit promise through the real nats-server, on SQLite and the real PostgreSQL:
exactly one record per decision, and no grant without a committed record, even while
the database is down; writing resumes by itself when it returns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.store import AuditStore, DecisionQuery
from gateway.audit.verify import verify_store
from gateway.client import oidc_envelope
from gateway.keyfiles import CHECKPOINT_FILE
from gateway.runtime import trusted_checkpoint_keys
from tests.databases import postgres_database
from tests.integration.harness import Stack, Violations, connect

pytestmark = pytest.mark.integration


class TcpProxy:
    """Forwards a local port to PostgreSQL; `stop` cuts every connection, as a crashed or
    unreachable database would; `start` brings the same port back. It runs its own event
    loop in a thread: the gateway's loop must not be the one carrying its database."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _call(self, coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def start(self) -> None:
        self._call(self._start())

    async def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    side.close()
                    with contextlib.suppress(Exception):
                        await side.wait_closed()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        sink.close()


class Outage:
    """Takes the audit database away and gives it back."""

    async def down(self) -> None: ...

    async def up(self) -> None: ...

    async def close(self) -> None: ...


class SqliteLock(Outage):
    """Another process holding SQLite's write lock: every write fails after busy_timeout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    async def down(self) -> None:
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")

    async def up(self) -> None:
        assert self.conn is not None
        self.conn.execute("ROLLBACK")
        self.conn.close()


class ProxyCut(Outage):
    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    async def down(self) -> None:
        await self.proxy.stop()

    async def up(self) -> None:
        await self.proxy.start()

    async def close(self) -> None:
        self.proxy.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg() -> Iterator[tuple[str, int]]:
    with postgres_database() as database:
        yield database


@pytest.fixture
async def audited(stack: Stack, backend: str, request: pytest.FixtureRequest
                  ) -> AsyncIterator[tuple[Stack, Outage, str]]:
    policy = stack.tmp / "policies" / "etl.yaml"
    policy.write_text(policy.read_text().replace("tasks: [load, extract]", 'tasks: ["*"]'))
    if backend == "sqlite":
        url = f"sqlite:///{stack.tmp / 'audit.db'}"
        outage: Outage = SqliteLock(stack.tmp / "audit.db")
    else:
        pg_url, pg_port = request.getfixturevalue("pg")
        proxy = TcpProxy(pg_port)
        await proxy.start()
        url = pg_url.replace(f":{pg_port}/", f":{proxy.port}/")
        outage = ProxyCut(proxy)
    await stack.start_gateway(audit={"url": url,
                                     "checkpoint_key_file": str(stack.keys / CHECKPOINT_FILE)})
    try:
        yield stack, outage, url
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()
        await outage.close()


async def _worker(stack: Stack, task: str) -> bool:
    """Connect as etl/<task>, publish in its own space; True if granted and allowed."""
    errors = Violations()
    try:
        nc = await connect(stack.nats_url, oidc_envelope(stack.token(), dag_id="etl",
                                                         task_id=task), errors)
    except Exception as exc:
        assert "uthorization" in str(exc) or "timeout" in str(exc).lower(), exc
        return False
    try:
        await nc.publish(f"airflow.etl.{task}.done", b"ok")
        await nc.flush()
        return not errors.errors
    finally:
        await nc.close()


def _records(url: str) -> list[Any]:
    store = AuditStore(url)
    try:
        return store.query(DecisionQuery(limit=1000))
    finally:
        store.close()


async def test_n_concurrent_connections_make_exactly_n_matching_records(
        audited: tuple[Stack, Outage, str]) -> None:
    stack, _, url = audited
    results = await asyncio.gather(*(_worker(stack, f"t{i}") for i in range(50)))
    assert all(results)
    records = _records(url)
    assert len(records) == 50 and all(r.decision == "grant" for r in records)
    assert {r.task_id for r in records} == {f"t{i}" for i in range(50)}
    for record in records:  # what was recorded is what nats-server enforced
        assert record.permissions["pub"]["allow"] == [f"airflow.etl.{record.task_id}.>"]
    assert len({r.user_nkey for r in records}) == 50


async def test_no_grant_without_a_record_while_the_database_is_down(
        audited: tuple[Stack, Outage, str]) -> None:
    stack, outage, url = audited
    assert all(await asyncio.gather(*(_worker(stack, f"before{i}") for i in range(5))))
    await outage.down()
    try:
        during = await asyncio.gather(*(_worker(stack, f"during{i}") for i in range(5)))
    finally:
        await outage.up()
    assert not any(during), "granted while the audit store was down"
    assert stack.gateway is not None and stack.gateway.writer.failures >= 5
    after = await asyncio.gather(*(_worker(stack, f"after{i}") for i in range(5)))
    assert all(after), "grants did not resume after the database came back"

    records = _records(url)
    grants = sorted(r.task_id for r in records if r.decision == "grant")
    assert grants == sorted([f"before{i}" for i in range(5)] + [f"after{i}" for i in range(5)])
    assert not [r for r in records if r.task_id.startswith("during") and r.decision == "grant"]
    store = AuditStore(url)
    try:
        report = verify_store(store, trusted_checkpoint_keys(stack.gateway.settings))
    finally:
        store.close()
    assert report.ok, report.problems  # the chain did not fork across the outage


async def test_committed_records_are_streamed_on_nats(stack: Stack) -> None:
    """With audit.stream_subject set, each record is published after it commits, for a
    SIEM (or Airflow) subscribed in the gateway's auth account."""
    from nats.aio.client import Client

    from gateway.keyfiles import USER_FILE

    settings = stack.settings().audit.model_dump()
    await stack.start_gateway(audit={**settings, "stream_subject": "audit.decisions"})
    siem = Client()
    await siem.connect(stack.nats_url, nkeys_seed=str(stack.keys / USER_FILE))
    try:
        feed = await siem.subscribe("audit.decisions")
        await siem.flush()
        assert await _worker(stack, "load")
        first = json.loads((await feed.next_msg(timeout=3)).data)
        assert first["decision"] == "grant" and first["task_id"] == "load"
        assert first["record_hash"].startswith("sha256:") and "token" not in json.dumps(first)
    finally:
        await siem.close()
        assert stack.gateway is not None
        await stack.gateway.stop()
