"""`serve --workers N`: N gateway processes in the queue group, to use every core.

Each worker is a full `nats-gateway serve` process with its own NATS connection, audit
writer and hash chain (its instance name includes its pid, or, with a configured
`instance`, its worker index: `NAME/w0`, `NAME/w1`, ...); nats-server spreads auth
requests across the queue group. Worker 0 serves the HTTP API (audit, readiness,
metrics for itself); the others run with the API off. Signals are forwarded: SIGTERM or
SIGINT stop every worker gracefully, SIGHUP reloads every worker's policies. A worker
that dies is restarted after a short pause.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

__all__ = ["WORKER_ENV", "supervise"]

log = logging.getLogger(__name__)
_RESTART_PAUSE = 1.0
# Tells a worker its index, so a configured instance name becomes one chain per worker.
WORKER_ENV = "GATEWAY_WORKER_INDEX"


def _worker_command(config: Path, log_level: str, log_format: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "--log-level", log_level, "--log-format",
            log_format, "serve", "--config", str(config)]


def _spawn(index: int, command: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env[WORKER_ENV] = str(index)
    if index > 0:
        env["NATS_GATEWAY_API__ENABLED"] = "false"  # one API port: worker 0's
    return subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter and CLI


def supervise(config: Path, workers: int, *, log_level: str, log_format: str) -> int:
    command = _worker_command(config, log_level, log_format)
    children = [_spawn(i, command) for i in range(workers)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    log.info("supervising %d gateway workers: %s", workers, [c.pid for c in children])
    while not stopping:
        for index, child in enumerate(children):
            if child.poll() is not None and not stopping:
                log.error("worker %d (pid %d) exited with %s; restarting", index, child.pid,
                          child.returncode)
                time.sleep(_RESTART_PAUSE)
                children[index] = _spawn(index, command)
        time.sleep(0.2)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0
