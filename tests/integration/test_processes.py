"""The shipped commands as users run them: `serve` replicas and `dev`, as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from gateway.audit.store import AuditStore, DecisionQuery
from gateway.client import oidc_envelope
from tests.integration.harness import Stack, build_stack, connect, settings_dict

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "gateway.cli"]
REPO = Path(__file__).resolve().parents[2]


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            seen.append(line)
            if re.search(pattern, line):
                return line
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    raise AssertionError(f"`{pattern}` not printed; output so far:\n{''.join(seen)}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


@pytest.fixture
def plain_stack(tmp_path: Path) -> Iterator[Stack]:
    built = build_stack(tmp_path, xkey=True)
    try:
        yield built
    finally:
        built.nats_server.close()
        built.issuer.stop()


def _start_replica(stack: Stack, name: str, *,
                   reload_interval: float | None = None) -> subprocess.Popen[str]:
    data = settings_dict(stack.tmp, stack.keys, stack.nats_url, stack.issuer.issuer, xkey=True,
                         audit_db=stack.tmp / f"{name}.db", admin_token=stack.admin_token,
                         instance=name)
    data["api"]["enabled"] = False
    if reload_interval is not None:
        data["policy"]["reload_interval_seconds"] = reload_interval
    config = stack.tmp / f"{name}.toml"
    config.write_text(_toml(data))
    proc = subprocess.Popen([*CLI, "--log-level", "INFO", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    _wait_for_line(proc, "gateway started")
    return proc


async def _connect_once(stack: Stack) -> None:
    """Connect as etl/load through the gateway and leave; raises if refused."""
    nc = await connect(stack.nats_url,
                       oidc_envelope(stack.token(), dag_id="etl", task_id="load"))
    await nc.close()


def _toml(data: dict[str, object], prefix: str = "") -> str:
    """Just enough TOML for the settings dict (tables, arrays of tables, scalars, lists)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, object]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif key == "issuers":
            continue
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    out = "\n".join(lines) + "\n"
    for key, table in tables:
        out += f"[{prefix}{key}]\n" + _toml(table, f"{prefix}{key}.")
        for issuer in table.get("issuers", []):  # type: ignore[attr-defined]
            out += f"[[{prefix}{key}.issuers]]\n" + _toml(issuer)
    return out


async def test_sighup_reloads_policies_in_a_serve_process(plain_stack: Stack) -> None:
    """Polling off: only the signal can make the edit take effect."""
    proc = _start_replica(plain_stack, "hup", reload_interval=0)
    try:
        envelope = oidc_envelope(plain_stack.token(), dag_id="etl", task_id="compact")
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            await connect(plain_stack.nats_url, envelope)
        policy = plain_stack.tmp / "policies" / "etl.yaml"
        policy.write_text(policy.read_text().replace("[load, extract]", "[load, compact]"))
        await asyncio.sleep(0.3)
        with pytest.raises(Exception, match=r"[Aa]uthorization"):  # no signal, no change
            await connect(plain_stack.nats_url, envelope)
        proc.send_signal(signal.SIGHUP)
        _wait_for_line(proc, r"policy reload \(SIGHUP\): 1 policies")
        nc = await connect(plain_stack.nats_url, envelope)
        await nc.close()

        policy.write_text("version: 1\npolicies: [oops")
        proc.send_signal(signal.SIGHUP)
        _wait_for_line(proc, r"policy reload \(SIGHUP\) failed, keeping sha256:")
        nc = await connect(plain_stack.nats_url, envelope)  # the last good set still holds
        await nc.close()
        assert proc.poll() is None
    finally:
        _stop(proc)


async def test_serve_workers_run_in_the_queue_group_and_stop_together(
        plain_stack: Stack) -> None:
    data = settings_dict(plain_stack.tmp, plain_stack.keys, plain_stack.nats_url,
                         plain_stack.issuer.issuer, xkey=True,
                         audit_db=plain_stack.tmp / "workers.db",
                         admin_token=plain_stack.admin_token)
    config = plain_stack.tmp / "workers.toml"
    config.write_text(_toml(data))
    proc = subprocess.Popen([*CLI, "--log-level", "INFO", "serve", "--config", str(config),
                             "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        _wait_for_line(proc, "gateway started")
        _wait_for_line(proc, "gateway started")
        await asyncio.gather(*(_connect_once(plain_stack) for _ in range(40)))
    finally:
        _stop(proc)
    assert proc.returncode == 0
    store = AuditStore(f"sqlite:///{plain_stack.tmp / 'workers.db'}")
    records = store.query(DecisionQuery(limit=1000))
    store.close()
    assert sum(r.decision == "grant" for r in records) == 40
    assert len({r.gateway_instance for r in records}) == 2  # both workers served


async def test_a_replica_killed_mid_storm_loses_nothing_it_granted(plain_stack: Stack) -> None:
    """Kill -9 one of two replicas while connects are in flight: the survivor keeps
    serving, requests the dead one held are denied by nats-server's timeout, and every
    connection that got in has a grant record (a record may exceed the connections: a
    grant committed just before the kill never reached its client)."""
    replicas = {name: _start_replica(plain_stack, name) for name in ("keep", "kill")}
    connected = 0
    refused = 0

    async def one() -> None:
        nonlocal connected, refused
        try:
            await _connect_once(plain_stack)
        except Exception:
            refused += 1
            return
        connected += 1

    try:
        storm = [asyncio.create_task(one()) for _ in range(80)]
        # Kill once the first is through, so the others are queued or being decided.
        await asyncio.wait(storm, return_when=asyncio.FIRST_COMPLETED)
        replicas["kill"].kill()
        await asyncio.gather(*storm)
        after = [asyncio.create_task(one()) for _ in range(20)]
        before_after = connected
        await asyncio.gather(*after)
        assert connected - before_after == 20, "the surviving replica must serve everyone"
    finally:
        _stop(replicas["keep"])
        replicas["kill"].wait()
        if replicas["kill"].stdout:
            replicas["kill"].stdout.close()
    grants = 0
    for name in replicas:
        store = AuditStore(f"sqlite:///{plain_stack.tmp / f'{name}.db'}")
        grants += store.count("grant")
        store.close()
    assert connected + refused == 100
    assert grants >= connected, (grants, connected, refused)


async def test_two_serve_processes_share_the_queue_group(plain_stack: Stack) -> None:
    replicas = [_start_replica(plain_stack, name) for name in ("replica-a", "replica-b")]
    try:
        await asyncio.gather(*(_connect_once(plain_stack) for _ in range(40)))
    finally:
        for proc in replicas:
            _stop(proc)
    per_replica = {}
    for name in ("replica-a", "replica-b"):
        store = AuditStore(f"sqlite:///{plain_stack.tmp / f'{name}.db'}")
        records = store.query(DecisionQuery(limit=1000))
        store.close()
        assert {r.gateway_instance for r in records} <= {name}
        per_replica[name] = sum(r.decision == "grant" for r in records)
    assert sum(per_replica.values()) == 40
    assert all(count > 0 for count in per_replica.values()), per_replica


def _start_dev(cwd: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`dev` as README runs it (the default, relative state dir under the working
    directory); the process, its audit API URL and admin token once it is up."""
    proc = subprocess.Popen(
        [*CLI, "dev", "--api-port", "0", "--policy-dir", str(REPO / "policies")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    try:
        api_url = _wait_for_line(proc, r"audit API").split()[-1]
        admin = _wait_for_line(proc, r"admin token").split()[-1]
    except BaseException:
        _stop(proc)
        raise
    return proc, api_url, admin


async def _connect_as_dev_worker(cwd: Path, state: Path) -> None:
    """What the banner tells a user to do: `dev token`, then connect with it."""
    printed = subprocess.run(
        [*CLI, "dev", "token", "--dag", "etl", "--task", "load"],
        capture_output=True, text=True, cwd=cwd, timeout=30, check=True)
    envelope = printed.stdout.strip()
    assert json.loads(envelope)["scope"] == {"dag_id": "etl", "task_id": "load"}
    nats_url = json.loads((state / "dev.json").read_text())["nats_url"]
    nc = await connect(nats_url, envelope)
    await nc.close()


async def test_dev_command_runs_the_whole_stack(tmp_path: Path) -> None:
    """What README's first command starts: dev issuer, nats-server, gateway, API."""
    state = tmp_path / ".nats-gateway" / "dev"
    proc, api_url, admin = _start_dev(tmp_path)
    try:
        await _connect_as_dev_worker(tmp_path, state)
        async with httpx.AsyncClient() as http:
            listed = await http.get(api_url, headers={"Authorization": f"Bearer {admin}"})
        [grant] = listed.json()["items"]
        assert grant["decision"] == "grant"
        assert grant["policy_ids"] == ["dev-airflow-workers"]
        assert grant["permissions"]["pub"]["allow"] == ["airflow.etl.load.>"]
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert not (state / "dev.json").exists()


async def test_a_second_dev_on_the_same_state_dir_is_refused_and_the_first_keeps_working(
        tmp_path: Path) -> None:
    state = tmp_path / ".nats-gateway" / "dev"
    first, _, _ = _start_dev(tmp_path)
    try:
        before = {name: (state / name).read_bytes() for name in ("dev.json", "gateway.toml")}
        pid = json.loads(before["dev.json"])["pid"]
        second = subprocess.run(
            [*CLI, "dev", "--api-port", "0", "--policy-dir", str(REPO / "policies")],
            capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
        assert f"a dev environment is already running in `{state}` (pid {pid}, nats at " \
            in _one_line_error(second)
        assert {name: (state / name).read_bytes() for name in before} == before
        await _connect_as_dev_worker(tmp_path, state)
    finally:
        _stop(first)
    assert first.returncode == 0


def test_keys_generate_and_nats_config_make_a_config_nats_server_accepts(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    made = subprocess.run([*CLI, "keys", "generate", "--out", str(keys)],
                          capture_output=True, text=True, timeout=30, check=True)
    assert "issuer account" in made.stdout
    assert all((keys / name).stat().st_mode & 0o077 == 0
               for name in ("issuer.nk", "auth-user.nk", "xkey.nk", "audit-checkpoint.key"))
    assert "audit checkpoint key (audit.checkpoint_key_file): ed25519:" in made.stdout
    again = subprocess.run([*CLI, "keys", "generate", "--out", str(keys)],
                           capture_output=True, text=True, timeout=30, check=False)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    seed = (keys / "issuer.nk").read_text().strip()
    for secret in ("issuer.nk", "audit-checkpoint.key"):
        assert (keys / secret).read_text().strip() not in made.stdout

    config = tmp_path / "gateway.toml"
    config.write_text('[nats]\nuser_seed_file = "keys/auth-user.nk"\n'
                      '[keys]\nissuer_seed_file = "keys/issuer.nk"\n'
                      'xkey_seed_file = "keys/xkey.nk"\n')
    printed = subprocess.run([*CLI, "nats-config", "--config", str(config),
                              "--listen", "127.0.0.1:14222"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert "auth_callout" in printed and "max_control_line: 32768" in printed
    assert seed not in printed
    from gateway.dev.natsserver import NatsServer

    NatsServer(printed, workdir=tmp_path / "check").check_config()


def test_serve_refuses_a_bad_config_clearly(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[nats]\nuser_seed_file = "x"\nbogus = 1\n')
    result = subprocess.run([*CLI, "serve", "--config", str(config)], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "`nats.bogus`" in result.stderr and "`keys`" in result.stderr


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused start (no traceback, no usage text)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nats-gateway: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(("options", "environment", "expected"), [
    (["--log-level", "FOO"], {}, "log level `FOO` is not one of debug, info"),
    ([], {"NATS_GATEWAY_LOG_LEVEL": "FOO"}, "log level `FOO`"),
    ([], {"NATS_GATEWAY_LOG_FORMAT": "yaml"}, "log format `yaml`"),
    ([], {"NATS_GATEWAY_AUDT__URL": "sqlite:///elsewhere.db"},
     "environment variable `NATS_GATEWAY_AUDT__URL` is not a setting "
     "(did you mean `NATS_GATEWAY_AUDIT__URL`?)"),
], ids=["log-level-option", "log-level-variable", "log-format-variable", "section-typo"])
def test_configuration_mistakes_are_one_line_errors(
        options: list[str], environment: dict[str, str], expected: str,
        tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[nats]\nuser_seed_file = "x"\n[keys]\nissuer_seed_file = "y"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_GATEWAY_")}
    result = subprocess.run([*CLI, *options, "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=30, check=False,
                            env={**env, **environment})
    assert expected in _one_line_error(result)


def _free_port() -> int:
    """A port nothing listens on (a nats-server that is not there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _write_config(stack: Stack, name: str, **sections: dict[str, object]) -> Path:
    data = settings_dict(stack.tmp, stack.keys, stack.nats_url, stack.issuer.issuer,
                         xkey=True, audit_db=stack.tmp / f"{name}.db",
                         admin_token=stack.admin_token, instance=name)
    for section, values in sections.items():
        data[section].update(values)  # type: ignore[attr-defined]
    config = stack.tmp / f"{name}.toml"
    config.write_text(_toml(data))
    return config


async def _get_until(url: str, status: int) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            response = await http.get(url)
            if response.status_code == status:
                return response
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered {status}: {response.text}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_stops_serve_while_nats_server_is_unreachable(
        plain_stack: Stack, signum: signal.Signals) -> None:
    """The API answers during the wait, /readyz says what it waits for, and the wait ends
    at the signal (it used to take SIGKILL)."""
    config = _write_config(plain_stack, "waiting",
                           nats={"url": f"nats://127.0.0.1:{_free_port()}"})
    proc = subprocess.Popen([*CLI, "--log-level", "INFO", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    try:
        listening = _wait_for_line(proc, r"audit api listening on http://127\.0\.0\.1:\d+")
        _wait_for_line(proc, r"waiting for nats at nats://127\.0\.0\.1:\d+")
        api = listening.split()[-1]
        assert (await _get_until(f"{api}/healthz", 200)).json() == {"status": "ok"}
        ready = (await _get_until(f"{api}/readyz", 503)).json()
        assert ready["reason"] == "waiting for nats"
        assert ready["checks"]["nats_connected"] is False
        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 0
    finally:
        _stop(proc)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_a_taken_api_port_before_joining_the_queue_group(
        plain_stack: Stack, workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _write_config(plain_stack, "clash", api={"port": port})
        result = subprocess.run([*CLI, "--log-level", "INFO", "serve", "--config", str(config),
                                 "--workers", str(workers)],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"nats-gateway: error: audit api cannot listen on `127.0.0.1:{port}`: "
        "address already in use")
    # the callout service never started: no connection, no subscription to auth requests
    assert "connected to nats" not in result.stderr and "subscribed" not in result.stderr


async def _connected(stack: Stack, name: str) -> bool:
    nc = Client()
    try:
        await nc.connect(stack.nats_url, name=name, allow_reconnect=False,
                         max_reconnect_attempts=0, connect_timeout=5,
                         token=oidc_envelope(stack.token(), dag_id="etl", task_id="load"))
        # nats-py returns from connect() without an error when the server closes the
        # socket instead of answering: only a round trip proves the connection is up.
        await nc.flush(timeout=2)
    except Exception:
        return False
    finally:
        await nc.close()
    return True


async def test_sigterm_answers_what_it_decided_before_closing(plain_stack: Stack) -> None:
    """Connects in flight at SIGTERM: every client that connected has its grant record,
    and every grant recorded is a client that connected (or is followed by its
    reply_failed record), never a grant for a refused connection."""
    proc = _start_replica(plain_stack, "term")
    names = [f"worker-{i}" for i in range(200)]
    try:
        attempts = [asyncio.create_task(_connected(plain_stack, name)) for name in names]
        # Signal once the first is through, so the others are queued or being decided.
        await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
        proc.send_signal(signal.SIGTERM)
        outcomes = await asyncio.gather(*attempts)
        assert proc.wait(timeout=15) == 0
    finally:
        _stop(proc)
    store = AuditStore(f"sqlite:///{plain_stack.tmp / 'term.db'}")
    try:
        records = store.query(DecisionQuery(limit=1000))
    finally:
        store.close()
    connected = {name for name, ok in zip(names, outcomes, strict=True) if ok}
    failed = {r.client_name for r in records if r.reason_code == "reply_failed"}
    granted = {r.client_name for r in records if r.decision == "grant"} - failed
    assert connected, "no client connected before the signal"
    assert granted == connected, (f"connected without a grant record: {connected - granted}, "
                                  f"grant recorded but not connected: {granted - connected}")
