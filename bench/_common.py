"""What the benchmarks share: writing their section of docs/benchmarks.md, and a
gateway process behind a real nats-server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.dev.natsserver import NatsServer
from gateway.keyfiles import (
    CHECKPOINT_FILE,
    ISSUER_FILE,
    USER_FILE,
    XKEY_FILE,
    generate_keys,
)
from gateway.natsconf import CalloutServerConfig, render_callout_config

__all__ = ["gateway_process", "write_section"]


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


@contextmanager
def gateway_process(tmp: Path, extra_toml: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """nats-server with auth callout (xkey on) and `nats-gateway serve` (SQLite audit in
    ``tmp/audit.db``, policies from ``tmp/policies``); yields the NATS url and the
    gateway process."""
    keys = tmp / "keys"
    publics = generate_keys(keys)
    config = render_callout_config(CalloutServerConfig(
        issuer_account=publics.issuer_account, auth_user_nkey=publics.auth_user,
        xkey=publics.xkey, port=-1))
    with NatsServer(config) as server:
        gateway_toml = tmp / "gateway.toml"
        gateway_toml.write_text(f"""
[nats]
url = "{server.url}"
user_seed_file = "{keys / USER_FILE}"
[keys]
issuer_seed_file = "{keys / ISSUER_FILE}"
xkey_seed_file = "{keys / XKEY_FILE}"
[policy]
dir = "{tmp / 'policies'}"
[audit]
url = "sqlite:///{tmp / 'audit.db'}"
checkpoint_key_file = "{keys / CHECKPOINT_FILE}"
[api]
enabled = false
{extra_toml}
""")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "serve",
             "--config", str(gateway_toml)])
        try:
            time.sleep(2.0)
            yield server.url, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)
