"""The JetStream anchor against a real nats-server with JetStream: the gateway creates
the stream append-only (deny_delete, deny_purge), publishes every signed checkpoint
through the publisher, and `audit verify --anchors-stream` names what the database lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from gateway.audit.anchors import AnchorPublisher, DirectoryAnchor, JetStreamAnchor, read_stream
from gateway.audit.chain import CheckpointSigner
from gateway.audit.store import AuditStore
from gateway.audit.verify import verify_store
from gateway.audit.writer import AuditWriter
from gateway.dev.natsserver import NatsServer
from gateway.errors import ConfigError
from gateway.natsjwt.nkeys import Prefix, SigningKeyPair
from tests.integration.tamper import INSTANCE, delete_checkpoints, record

pytestmark = pytest.mark.integration
STREAM = "AUDIT_ANCHOR"
SUBJECT = "nats-gateway.audit.checkpoints"


@pytest.fixture
def user() -> SigningKeyPair:
    return SigningKeyPair.generate(Prefix.USER)


@pytest.fixture
def server(tmp_path: Path, user: SigningKeyPair) -> Iterator[NatsServer]:
    config = f"""
listen: "127.0.0.1:-1"
jetstream {{ store_dir: "{tmp_path / 'js'}" }}
authorization {{ users: [ {{ nkey: {user.public_key} }} ] }}
"""
    with NatsServer(config, workdir=tmp_path / "nats") as running:
        yield running


@pytest.fixture
async def nc(server: NatsServer, user: SigningKeyPair) -> AsyncIterator[Client]:
    client = await nats.connect(server.url, nkeys_seed_str=user.seed)
    yield client
    await client.close()


def _anchor(server: NatsServer, user: SigningKeyPair, **options: object) -> JetStreamAnchor:
    async def connect() -> Client:  # as the gateway's own (gateway/runtime.py)
        return await nats.connect(server.url, nkeys_seed_str=user.seed, connect_timeout=2,
                                  max_reconnect_attempts=2, allow_reconnect=True)

    return JetStreamAnchor(connect, stream=STREAM, subject=SUBJECT, **options)  # type: ignore[arg-type]


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_checkpoints_reach_the_stream_and_verify_names_those_deleted(
        store: AuditStore, server: NatsServer, user: SigningKeyPair, nc: Client,
        tmp_path: Path) -> None:
    signer = CheckpointSigner.generate()
    anchor = _anchor(server, user)
    await anchor.open()
    publisher = AnchorPublisher([anchor, DirectoryAnchor(tmp_path / "anchors")])
    publisher.start()
    writer = AuditWriter(store, instance=INSTANCE, signer=signer, checkpoint_every=3,
                         on_checkpoint=publisher.submit)
    await asyncio.gather(*(writer.write(record(i, at=time.time())) for i in range(3)))
    await asyncio.gather(*(writer.write(record(i, at=time.time())) for i in range(3, 6)))
    await asyncio.to_thread(writer.close)
    await _until(lambda: publisher.written == 2 * writer.checkpoints)
    await publisher.close()

    info = await nc.jetstream().stream_info(STREAM)
    assert info.config.deny_delete and info.config.deny_purge
    anchored, bad, warnings = await read_stream(nc, STREAM)
    assert (len(anchored), bad, warnings) == (writer.checkpoints, 0, [])
    assert anchored[0].kind == "genesis" and anchored[-1].kind == "final"
    with pytest.raises(APIError):  # append-only for every client, the owner included
        await nc.jetstream().purge_stream(STREAM)
    with pytest.raises(APIError):
        await nc.jetstream().delete_msg(STREAM, 1)

    assert verify_store(store, [signer.public_key], anchored=anchored).ok
    delete_checkpoints(store)
    report = verify_store(store, [signer.public_key], anchored=anchored)
    missing = [p for p in report.problems if p.kind == "checkpoint_missing"]
    assert len(missing) == writer.checkpoints


async def test_an_existing_stream_that_allows_delete_is_refused(
        server: NatsServer, user: SigningKeyPair, nc: Client) -> None:
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))
    with pytest.raises(ConfigError, match="allows delete or purge"):
        await _anchor(server, user).open()
    with pytest.raises(ConfigError, match="does not exist"):
        await JetStreamAnchor(lambda: nats.connect(server.url, nkeys_seed_str=user.seed),
                              stream="OTHER", subject="x", create=False).open()


async def test_an_unreachable_anchor_never_holds_up_a_commit(
        store: AuditStore, server: NatsServer, user: SigningKeyPair, tmp_path: Path) -> None:
    """Anchor writes fail while the server is down; records still commit at once, the
    failures are counted, the backlog is kept and written once the server is back."""
    signer = CheckpointSigner.generate()
    anchor = _anchor(server, user)
    await anchor.open()
    await anchor.close()
    server.stop()
    clock_now = time.time()
    publisher = AnchorPublisher([anchor], stale_seconds=60.0, clock=lambda: clock_now)
    publisher.start()
    writer = AuditWriter(store, instance=INSTANCE, signer=signer, checkpoint_every=2,
                         on_checkpoint=publisher.submit)
    await asyncio.gather(*(writer.write(record(i, at=time.time())) for i in range(4)))
    assert publisher.written == 0  # every record committed while nothing was anchored
    await _until(lambda: publisher.failures >= 1)
    assert publisher.backlog >= 1 and publisher.written == 0
    server.restart()
    await _until(lambda: publisher.backlog == 0, timeout=20)
    await asyncio.to_thread(writer.close)
    await publisher.close()
    assert publisher.written == writer.checkpoints


async def test_cli_verify_against_the_stream(store: AuditStore, server: NatsServer,
                                             user: SigningKeyPair, tmp_path: Path) -> None:
    signer = CheckpointSigner.generate()
    anchor = _anchor(server, user)
    await anchor.open()
    publisher = AnchorPublisher([anchor])
    publisher.start()
    writer = AuditWriter(store, instance=INSTANCE, signer=signer,
                         on_checkpoint=publisher.submit)
    await asyncio.gather(*(writer.write(record(i, at=time.time())) for i in range(4)))
    await asyncio.to_thread(writer.close)
    await publisher.close()
    (tmp_path / "ckpt.key").write_text(signer.seed_hex)
    (tmp_path / "user.nk").write_text(user.seed)
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[nats]
url = "{server.url}"
user_seed_file = "user.nk"
[keys]
issuer_seed_file = "user.nk"
[audit]
url = "{store.url}"
checkpoint_key_file = "ckpt.key"
""")

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "audit", "verify",
                               "--config", str(config), "--anchors-stream", STREAM],
                              capture_output=True, text=True, timeout=60, check=False)

    clean = await asyncio.to_thread(verify)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "2 anchored" in clean.stdout
    delete_checkpoints(store)
    tampered = await asyncio.to_thread(verify)
    assert tampered.returncode == 1
    assert "checkpoint_missing:" in tampered.stdout and "final" in tampered.stdout
