"""What the benchmarks share: writing their section of docs/benchmarks.md, and a callout
responder (the gateway, or the no-op floor) behind a real nats-server."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.audit.record import AuditRecord
from gateway.dev.natsserver import NatsServer, find_nats_server
from gateway.keyfiles import (
    CHECKPOINT_FILE,
    ISSUER_FILE,
    USER_FILE,
    XKEY_FILE,
    generate_keys,
)
from gateway.natsconf import CalloutServerConfig, ServerTls, render_callout_config

__all__ = ["BENCH_DIR", "GATEWAY_SERVE", "Stack", "callout_stack", "cpu_seconds", "gateway_toml",
           "grant_record", "machine", "rss_mb", "write_section"]

BENCH_DIR = Path(__file__).resolve().parent
GATEWAY_SERVE = (sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "serve")


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the ``<!-- name:start -->``...``<!-- name:end -->`` block (or append it),
    so each benchmark rewrites only its own results."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def machine() -> str:
    """The machine line of a results section: platform, cores, Python, nats-server."""
    version = subprocess.run([find_nats_server(), "--version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return (f"{platform.platform()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {version}")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process (``VmHWM`` for its peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def grant_record(instance: str, task_id: str = "load") -> AuditRecord:
    """A typical grant record, for the benchmarks that write audit records directly."""
    return AuditRecord(
        decision_id=uuid.uuid4().hex, decided_at=time.time(), decision="grant",
        reason_code="granted", reason="granted", gateway_instance=instance, latency_ms=1.0,
        method="oidc", principal="https://idp#worker", dag_id="etl", task_id=task_id,
        permissions={"pub": {"allow": [f"airflow.etl.{task_id}.>"]}}, policy_ids=("etl",),
        policy_set_hash="sha256:00")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Stack:
    url: str
    server: NatsServer
    process: subprocess.Popen[bytes]
    keys: Path

    log: Path | None = None  # the responder's stderr

    def unrecorded_decisions(self) -> int:
        """Decisions answered whose record never reached the store, as the gateway logs
        them (`deny … could not be audited`, a `reply_failed` record not written)."""
        if self.log is None or not self.log.exists():
            return 0
        text = self.log.read_text(errors="replace")
        return text.count("could not be audited") + text.count("could not be written")

    def responder_pids(self) -> list[int]:
        """The processes answering callouts: the responder, or its `--workers` children."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        return pids or [self.process.pid]


def gateway_toml(tmp: Path, url: str, keys: Path, audit_url: str, extra_toml: str) -> Path:
    """`nats-gateway serve` config: xkey on, policies from ``tmp/policies``, API off."""
    path = tmp / "gateway.toml"
    path.write_text(f"""
[nats]
url = "{url}"
user_seed_file = "{keys / USER_FILE}"
[keys]
issuer_seed_file = "{keys / ISSUER_FILE}"
xkey_seed_file = "{keys / XKEY_FILE}"
[policy]
dir = "{tmp / 'policies'}"
[audit]
url = "{audit_url}"
checkpoint_key_file = "{keys / CHECKPOINT_FILE}"
[api]
enabled = false
{extra_toml}
""")
    return path


@contextmanager
def callout_stack(tmp: Path, responder: list[str] | None = None, *, extra_toml: str = "",
                  audit_url: str | None = None, workers: int = 1,
                  serve: Sequence[str] = GATEWAY_SERVE,
                  tls: ServerTls | None = None) -> Iterator[Stack]:
    """nats-server with auth callout (xkey on) and a responder process: ``responder`` (a
    command; ``{url}`` and ``{keys}`` are filled in) or else ``serve`` (a command that takes
    the gateway's ``--config`` and ``--workers``, `nats-gateway serve` by default). With
    ``tls`` the client port speaks TLS and the URL is ``tls://`` (the caller's
    ``extra_toml`` gives the gateway its `[nats.tls]`). The caller waits for readiness
    (by connecting), so no fixed sleep is needed."""
    keys = tmp / "keys"
    publics = generate_keys(keys)
    config = render_callout_config(CalloutServerConfig(
        issuer_account=publics.issuer_account, auth_user_nkey=publics.auth_user,
        xkey=publics.xkey, port=-1, tls=tls))
    with NatsServer(config) as server:
        url = server.url.replace("nats://", "tls://") if tls else server.url
        if responder is not None:
            command = [part.format(url=url, keys=keys) for part in responder]
        else:
            toml = gateway_toml(tmp, url, keys,
                                audit_url or f"sqlite:///{tmp / 'audit.db'}", extra_toml)
            command = [*serve, "--config", str(toml), "--workers", str(workers)]
        log = tmp / "responder.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(command, stderr=stderr)
            try:
                yield Stack(url, server, proc, keys, log)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
