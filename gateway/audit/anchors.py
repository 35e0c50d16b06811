"""Checkpoints leave the database: anchor sinks the database's owner cannot rewrite.

A signed checkpoint in the same database as the records can be deleted with them. Each
one is therefore also written to at least one independent sink, in the spirit of
CloudTrail's digest files:

- :class:`DirectoryAnchor`: an append-only directory, one JSON-lines file per instance
  and UTC day, each line fsync'd (``O_APPEND``), meant for a WORM / object-lock bucket
  mount or a directory on another host;
- :class:`JetStreamAnchor`: a JetStream stream with ``deny_delete`` and ``deny_purge``
  (created by the gateway when missing; refused at start if it exists without them),
  so a NATS shop keeps its evidence in NATS, replicated.

:class:`AnchorPublisher` runs the sinks on the event loop, off the commit path: the
database commit alone gates a decision. A failed write stays in that sink's backlog (in
order, retried every second, deduplicated by the stream's ``Nats-Msg-Id``), is logged
and counted, and shows on ``/readyz`` once it is older than the stale age. Each
checkpoint covers every record before it (the hash chain), so the next one that lands
also anchors what a lost one covered. The readers (``read_directory``,
``read_stream``) feed ``audit verify --anchors DIR | --anchors-stream NAME``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from gateway.audit.store import CheckpointRow
from gateway.errors import ConfigError

__all__ = ["AnchorPublisher", "AnchorSink", "DirectoryAnchor", "JetStreamAnchor",
           "checkpoint_from_json", "checkpoint_json", "read_directory", "read_stream"]

log = logging.getLogger(__name__)
_WRITE_TIMEOUT = 5.0
_RETRY_SECONDS = 1.0
_FIELDS = ("gateway_instance", "kind", "chain_seq", "record_hash", "created_at", "detail",
           "public_key", "signature")


def checkpoint_json(checkpoint: CheckpointRow) -> bytes:
    return json.dumps(checkpoint.as_row(), sort_keys=True, separators=(",", ":")).encode()


def checkpoint_from_json(raw: bytes | str) -> CheckpointRow:
    """One anchored checkpoint; ValueError for anything else."""
    data: Any = json.loads(raw)
    if not isinstance(data, dict) or set(data) != set(_FIELDS):
        raise ValueError("not a checkpoint")
    return CheckpointRow(str(data["gateway_instance"]), str(data["kind"]),
                         int(data["chain_seq"]), str(data["record_hash"]),
                         float(data["created_at"]), str(data["detail"]),
                         str(data["public_key"]), str(data["signature"]))


class AnchorSink(Protocol):
    name: str

    async def write(self, checkpoint: CheckpointRow) -> None: ...

    async def close(self) -> None: ...


class DirectoryAnchor:
    """Append-only files ``<instance>.<YYYY-MM-DD>.jsonl`` (instance percent-encoded)."""

    name = "directory"

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, checkpoint: CheckpointRow) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        day = datetime.fromtimestamp(checkpoint.created_at, UTC).strftime("%Y-%m-%d")
        target = self.path / f"{quote(checkpoint.gateway_instance, safe='')}.{day}.jsonl"
        created = not target.exists()
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, checkpoint_json(checkpoint) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new file's name must survive a crash too
            dir_fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    async def write(self, checkpoint: CheckpointRow) -> None:
        await asyncio.to_thread(self.append, checkpoint)

    async def close(self) -> None:
        return None


def read_directory(path: Path) -> tuple[list[CheckpointRow], int]:
    """Every checkpoint under ``path``, and how many lines were not checkpoints."""
    if not path.is_dir():
        raise ConfigError(f"anchor directory `{path}` does not exist")
    rows: list[CheckpointRow] = []
    bad = 0
    for file in sorted(path.glob("*.jsonl")):
        for line in file.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rows.append(checkpoint_from_json(line))
            except (ValueError, TypeError, KeyError):
                bad += 1
    return rows, bad


def _msg_id(checkpoint: CheckpointRow) -> str:
    digest = hashlib.sha256(checkpoint.signature.encode()).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


class JetStreamAnchor:
    """Publishes each checkpoint to an append-only stream, on its own connection."""

    name = "jetstream"

    def __init__(self, connect: Callable[[], Awaitable[Client]], *, stream: str,
                 subject: str, create: bool = True, replicas: int = 1) -> None:
        self._connect = connect
        self.stream = stream
        self.subject = subject
        self._create = create
        self._replicas = replicas
        self._nc: Client | None = None

    async def open(self) -> None:
        """Connect and make sure the stream exists, append-only (ConfigError if not)."""
        if self._nc is None:
            self._nc = await self._connect()
        try:
            await self._ensure_stream(self._nc)
        except BaseException:
            await self.close()
            raise

    async def _ensure_stream(self, nc: Client) -> None:
        js = nc.jetstream()
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            if not self._create:
                raise ConfigError(f"anchor stream `{self.stream}` does not exist") from None
            await js.add_stream(StreamConfig(
                name=self.stream, subjects=[self.subject], deny_delete=True, deny_purge=True,
                storage=StorageType.FILE, num_replicas=self._replicas))
            log.info("created the audit anchor stream %s (deny_delete, deny_purge)",
                     self.stream)
            return
        config = info.config
        if not (config.deny_delete and config.deny_purge):
            raise ConfigError(f"anchor stream `{self.stream}` allows delete or purge: set "
                              "deny_delete and deny_purge")
        if self.subject not in (config.subjects or []):
            raise ConfigError(f"anchor stream `{self.stream}` does not take subject "
                              f"`{self.subject}`")

    async def write(self, checkpoint: CheckpointRow) -> None:
        if self._nc is None or self._nc.is_closed:
            self._nc = None
            await self.open()
        assert self._nc is not None
        await self._nc.jetstream().publish(
            self.subject, checkpoint_json(checkpoint), timeout=_WRITE_TIMEOUT,
            headers={"Nats-Msg-Id": _msg_id(checkpoint)})

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is None or nc.is_closed:
            return
        try:
            # nats-py's close can wait on a reconnect in progress: bounded, so a
            # shutdown while nats-server is away still ends.
            await asyncio.wait_for(nc.close(), _WRITE_TIMEOUT)
        except (TimeoutError, OSError):
            log.warning("audit anchor connection did not close cleanly")


async def read_stream(nc: Client, stream: str,
                      batch: int = 1000) -> tuple[list[CheckpointRow], int, list[str]]:
    """Every checkpoint in ``stream``; the count of messages that were not checkpoints;
    and warnings about the stream itself (it must refuse delete and purge)."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        raise ConfigError(f"anchor stream `{stream}` does not exist") from None
    warnings = []
    if not (info.config.deny_delete and info.config.deny_purge):
        warnings.append(f"anchor stream {stream} allows delete or purge: it is not "
                        "append-only")
    if info.state.first_seq > 1:
        warnings.append(f"anchor stream {stream} starts at message {info.state.first_seq}: "
                        "older checkpoints aged out (max_age / limits)")
    last = info.state.last_seq
    rows: list[CheckpointRow] = []
    bad = 0
    if info.state.messages == 0:
        return rows, bad, warnings
    # An ephemeral consumer over every subject of the stream, no acks: reading leaves
    # nothing behind (it lapses after inactive_threshold seconds).
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                            filter_subjects=list(info.config.subjects or []),
                            inactive_threshold=30.0)
    sub = await js.pull_subscribe(">", stream=stream, config=config)
    try:
        seen = 0
        while seen < last:
            try:
                messages = await sub.fetch(batch, timeout=5)
            except NatsTimeoutError:
                break
            for message in messages:
                seen = message.metadata.sequence.stream
                try:
                    rows.append(checkpoint_from_json(message.data))
                except (ValueError, TypeError, KeyError):
                    bad += 1
    finally:
        await sub.unsubscribe()
    return rows, bad, warnings


class AnchorPublisher:
    """Hands signed checkpoints to every sink without ever blocking the writer.

    ``submit`` is called from the writer thread; the sinks run as one task on the
    gateway's event loop. Each sink keeps its own ordered backlog."""

    def __init__(self, sinks: Sequence[AnchorSink], *, stale_seconds: float = 120.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.sinks = list(sinks)
        self._backlog: dict[str, deque[CheckpointRow]] = {s.name: deque() for s in sinks}
        self._oldest: dict[str, float | None] = {s.name: None for s in sinks}
        self._stale = stale_seconds
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failures = 0

    def submit(self, checkpoint: CheckpointRow) -> None:
        """Thread-safe; before ``start`` the checkpoint waits in the backlog."""
        loop = self._loop
        if loop is None:
            self._enqueue(checkpoint)
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, checkpoint)
        except RuntimeError:  # loop closed: shutting down; verify will show the lag
            log.warning("audit anchor: loop closed, checkpoint not anchored")

    def _enqueue(self, checkpoint: CheckpointRow) -> None:
        now = self._clock()
        for name, backlog in self._backlog.items():
            backlog.append(checkpoint)
            if self._oldest[name] is None:
                self._oldest[name] = now
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._wake.set()  # what was submitted before start
        self._task = asyncio.create_task(self._pump())

    @property
    def backlog(self) -> int:
        return max((len(b) for b in self._backlog.values()), default=0)

    @property
    def current(self) -> bool:
        """False once a checkpoint waited longer than the stale age in some sink."""
        now = self._clock()
        return all(t is None or now - t < self._stale for t in self._oldest.values())

    async def _pump(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _RETRY_SECONDS)
            self._wake.clear()
            for sink in self.sinks:
                await self._drain(sink)

    async def _drain(self, sink: AnchorSink) -> bool:
        backlog = self._backlog[sink.name]
        while backlog:
            try:
                await asyncio.wait_for(sink.write(backlog[0]), _WRITE_TIMEOUT)
            except Exception as exc:  # any sink error: keep it, retry, never raise
                self.failures += 1
                log.error("audit anchor %s write failed (%d waiting): %s", sink.name,
                          len(backlog), type(exc).__name__)
                return False
            backlog.popleft()
            self.written += 1
        self._oldest[sink.name] = None
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Try once more to anchor what is waiting (the final checkpoint), then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout)
        for sink in self.sinks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(sink), timeout)
            if self._backlog[sink.name]:
                log.error("audit anchor %s: %d checkpoint(s) not anchored at shutdown",
                          sink.name, len(self._backlog[sink.name]))
            await sink.close()
