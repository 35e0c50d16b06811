"""TLS everywhere (issue 23), against real processes: nats-server with a `tls { }` block,
the gateway's HTTPS API, an OIDC issuer and an STS endpoint over HTTPS. Certificates come
from a CA made on the fly in the test's directory (gateway/dev/tlscerts.py); nothing is
committed. Each refusal is checked for its one-line message: the address and the cause.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from gateway.api.auth import token_digest
from gateway.client import OidcToken, Scope, TlsError
from gateway.client import connect as gateway_connect
from gateway.client.aws import aws_iam_proof
from gateway.config import GatewaySettings
from gateway.dev.environment import DevEnvironment
from gateway.dev.issuer import DevIssuer
from gateway.dev.natsserver import NatsServer
from gateway.dev.tlscerts import CertFiles, DevCa
from gateway.errors import AuditUnavailable, ConfigError, IdentityUnavailable
from gateway.identity.aws_sts import AwsIamSettings, StsVerifier
from gateway.identity.oidc import OidcVerifier
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.keyfiles import generate_keys
from gateway.natsconf import CalloutServerConfig, ServerTls, render_callout_config
from gateway.runtime import Gateway
from gateway.tls.http import HttpClients
from tests.integration.harness import AUDIENCE, WORKER, Stack, policy_yaml

ROOT = Path(__file__).resolve().parents[2]
SCOPE = Scope(dag_id="etl", task_id="load")


@dataclass
class Pki:
    ca: DevCa
    other: DevCa  # a CA nobody trusts
    server: CertFiles
    expired: CertFiles
    elsewhere: CertFiles  # made out to another host
    client: CertFiles  # the gateway's and the worker's client certificate

    def server_cert(self, case: str) -> CertFiles:
        return {"expired": self.expired, "wrong_host": self.elsewhere}.get(case, self.server)

    def trusted_ca(self, case: str) -> Path:
        return self.other.ca_file if case == "wrong_ca" else self.ca.ca_file


EXPECTED = {
    "wrong_ca": "the server's certificate is not signed by a ca in `{ca}`",
    "expired": "the server's certificate has expired",
    "wrong_host": "the server's certificate is not valid for host `127.0.0.1`",
}
CASES = sorted(EXPECTED)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = DevCa(tmp_path / "pki")
    return Pki(ca=ca, other=DevCa(tmp_path / "other", name="untrusted ca"),
               server=ca.issue("server"), expired=ca.issue("expired", expired=True),
               elsewhere=ca.issue("elsewhere", ("nats.elsewhere.example",)),
               client=ca.issue("client", client=True))


def _tls_stack(tmp: Path, pki: Pki, cert: CertFiles, *, verify: bool) -> Stack:
    """The harness's stack (issuer, policies, keys) with nats-server on TLS."""
    keys = tmp / "keys"
    publics = generate_keys(keys)
    issuer = DevIssuer().start()
    (tmp / "policies").mkdir()
    (tmp / "policies" / "etl.yaml").write_text(policy_yaml(issuer.issuer))
    tls = ServerTls(cert_file=str(cert.cert_file), key_file=str(cert.key_file),
                    ca_file=str(pki.ca.ca_file), verify=verify)
    server = NatsServer(render_callout_config(CalloutServerConfig(
        issuer_account=publics.issuer_account, auth_user_nkey=publics.auth_user,
        xkey=publics.xkey, port=-1, tls=tls)), workdir=tmp / "nats")
    server.start()
    return Stack(tmp, keys, issuer, server, True, "admin-token-for-tls-tests")


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.nats_server.close()
        stack.issuer.stop()


def _tls_url(stack: Stack) -> str:
    return stack.nats_url.replace("nats://", "tls://")


async def test_gateway_and_worker_over_mutual_tls_with_https_api_and_separate_metrics(
        tmp_path: Path, pki: Pki, stacks: list[Stack]) -> None:
    stack = _tls_stack(tmp_path, pki, pki.server, verify=True)
    stacks.append(stack)
    gateway = await stack.start_gateway(
        nats={"url": _tls_url(stack), "user_seed_file": str(stack.keys / "auth-user.nk"),
              "tls": {"ca_file": str(pki.ca.ca_file), "cert_file": str(pki.client.cert_file),
                      "key_file": str(pki.client.key_file)}},
        api={"host": "127.0.0.1", "port": 0, "metrics_port": 0,
             "admin_token_sha256": [token_digest(stack.admin_token)],
             "tls": {"cert_file": str(pki.server.cert_file),
                     "key_file": str(pki.server.key_file)}})
    try:
        nc = await gateway_connect(_tls_url(stack), OidcToken(stack.token()), scope=SCOPE,
                                   tls_ca_file=pki.ca.ca_file,
                                   tls_cert_file=pki.client.cert_file,
                                   tls_key_file=pki.client.key_file)
        sub = await nc.subscribe("airflow.etl.load.>")
        await nc.publish("airflow.etl.load.done", b"over tls")
        assert (await sub.next_msg(timeout=5)).data == b"over tls"
        await nc.close()

        api = gateway._api
        assert api is not None and gateway._metrics_api is not None
        metrics_port = gateway._metrics_api.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(verify=ssl.create_default_context(
                cafile=str(pki.ca.ca_file))) as http:
            base = f"https://localhost:{gateway.api_port}"
            assert (await http.get(f"{base}/healthz")).status_code == 200
            assert (await http.get(f"{base}/metrics")).status_code == 404
            grants = await http.get(f"{base}/v1/grants",
                                    headers={"Authorization": f"Bearer {stack.admin_token}"})
            assert grants.status_code == 200
        async with httpx.AsyncClient() as http:
            scraped = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert "nats_gateway_decisions_total" in scraped.text
            with pytest.raises(httpx.HTTPError):  # the API speaks only https
                await http.get(f"http://127.0.0.1:{gateway.api_port}/healthz")
    finally:
        await gateway.stop()


async def test_a_worker_without_a_client_certificate_is_refused_with_the_reason(
        tmp_path: Path, pki: Pki, stacks: list[Stack]) -> None:
    stack = _tls_stack(tmp_path, pki, pki.server, verify=True)
    stacks.append(stack)
    with pytest.raises(TlsError) as caught:
        await gateway_connect(_tls_url(stack), OidcToken("unused"), scope=SCOPE,
                              tls_ca_file=pki.ca.ca_file)
    assert caught.value.description == (
        f"tls to `127.0.0.1:{stack.nats_server.port}` failed: the server requires a "
        "client certificate (set cert_file and key_file)")


@pytest.mark.parametrize("case", CASES)
async def test_the_gateway_refuses_a_bad_nats_certificate_at_start(
        case: str, tmp_path: Path, pki: Pki, stacks: list[Stack]) -> None:
    stack = _tls_stack(tmp_path, pki, pki.server_cert(case), verify=False)
    stacks.append(stack)
    settings = stack.settings(nats={
        "url": _tls_url(stack), "user_seed_file": str(stack.keys / "auth-user.nk"),
        "tls": {"ca_file": str(pki.trusted_ca(case))}}, api={"enabled": False})
    gateway = Gateway(settings)
    try:
        with pytest.raises(TlsError) as caught:
            await asyncio.wait_for(gateway.start(), 30)  # bounded: it must not retry
    finally:
        await gateway.stop()
    cause = EXPECTED[case].format(ca=pki.trusted_ca(case))
    assert caught.value.description == (
        f"tls to `127.0.0.1:{stack.nats_server.port}` failed: {cause}")


@pytest.mark.parametrize("case", CASES)
async def test_a_worker_refuses_a_bad_nats_certificate(
        case: str, tmp_path: Path, pki: Pki, stacks: list[Stack]) -> None:
    stack = _tls_stack(tmp_path, pki, pki.server_cert(case), verify=False)
    stacks.append(stack)
    with pytest.raises(TlsError) as caught:
        await asyncio.wait_for(gateway_connect(
            _tls_url(stack), OidcToken("never sent"), scope=SCOPE,
            tls_ca_file=pki.trusted_ca(case)), 30)
    cause = EXPECTED[case].format(ca=pki.trusted_ca(case))
    assert str(caught.value) == (
        f"tls_failed: tls to `127.0.0.1:{stack.nats_server.port}` failed: {cause}")


async def test_a_worker_asking_for_tls_refuses_a_server_without_it(tmp_path: Path,
                                                                   pki: Pki) -> None:
    """nats-py would send CONNECT, and the token in it, in clear: a downgrade."""
    with (NatsServer('listen: "127.0.0.1:-1"\n', workdir=tmp_path / "plain") as server,
          pytest.raises(TlsError, match="the server does not require tls")):
        await gateway_connect(server.url.replace("nats://", "tls://"),
                              OidcToken("never sent"), scope=SCOPE, tls_ca_file=pki.ca.ca_file)


def test_serve_ends_with_one_line_naming_the_address_and_cause(
        tmp_path: Path, pki: Pki, stacks: list[Stack]) -> None:
    stack = _tls_stack(tmp_path, pki, pki.expired, verify=False)
    stacks.append(stack)
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[nats]
url = "{_tls_url(stack)}"
user_seed_file = "keys/auth-user.nk"
[nats.tls]
ca_file = "pki/ca.pem"
[keys]
issuer_seed_file = "keys/issuer.nk"
[policy]
dir = "policies"
[audit]
url = "sqlite:///audit.db"
[api]
enabled = false
""")
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config",
                           str(config)], capture_output=True, text=True, timeout=60,
                          check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"nats-gateway: error: tls to `127.0.0.1:{stack.nats_server.port}` failed: the "
        "server's certificate has expired")


# -- identity providers over https ---------------------------------------------------


def _https_issuer(pki: Pki, cert: CertFiles) -> DevIssuer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_file, cert.key_file)
    return DevIssuer(tls=context).start()


async def test_an_oidc_issuer_on_a_private_ca_verifies_tokens(pki: Pki) -> None:
    issuer = _https_issuer(pki, pki.server)
    clients = HttpClients()
    try:
        config = OidcIssuerConfig(issuer=issuer.issuer, audiences=[AUDIENCE],
                                  ca_file=pki.ca.ca_file)
        verifier = OidcVerifier([config], lambda c: clients.for_ca(c.ca_file))
        identity = await verifier.verify(issuer.mint(subject=WORKER, audience=AUDIENCE))
        assert identity.principal.endswith(WORKER)
    finally:
        await clients.aclose()
        issuer.stop()


@pytest.mark.parametrize("case", CASES)
async def test_an_oidc_issuer_with_a_bad_certificate_is_denied_with_the_reason(
        case: str, pki: Pki) -> None:
    cert = {"expired": pki.expired, "wrong_host": pki.elsewhere}.get(case, pki.server)
    issuer = _https_issuer(pki, cert)
    clients = HttpClients()
    try:
        ca = pki.trusted_ca(case)
        config = OidcIssuerConfig(issuer=issuer.issuer, audiences=[AUDIENCE], ca_file=ca)
        verifier = OidcVerifier([config], lambda c: clients.for_ca(c.ca_file))
        with pytest.raises(IdentityUnavailable) as caught:
            await verifier.verify(issuer.mint(subject=WORKER, audience=AUDIENCE))
    finally:
        await clients.aclose()
        issuer.stop()
    assert caught.value.code == "identity_provider_tls"
    cause = EXPECTED[case].format(ca=ca).replace("`127.0.0.1`", "`localhost`")
    discovery = f"{issuer.issuer}/.well-known/openid-configuration"
    assert caught.value.description == f"tls to `{discovery}` failed: {cause}"


@pytest.mark.parametrize("case", CASES)
async def test_an_sts_endpoint_with_a_bad_certificate_is_denied_with_the_reason(
        case: str, pki: Pki) -> None:
    cert = {"expired": pki.expired, "wrong_host": pki.elsewhere}.get(case, pki.server)
    endpoint = _https_issuer(pki, cert)  # any https server: the handshake fails first
    clients = HttpClients()
    sts_url = endpoint.issuer
    ca = pki.trusted_ca(case)
    settings = AwsIamSettings(enabled=True, sts_endpoint=sts_url, gateway_id="gw",
                              allowed_accounts=("123456789012",), ca_file=ca)
    session = boto3.Session(aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                            aws_secret_access_key="x" * 40, region_name="us-east-1")
    try:
        verifier = StsVerifier(settings, clients.for_ca(ca))
        with pytest.raises(IdentityUnavailable) as caught:
            await verifier.verify(aws_iam_proof(gateway_id="gw", region="us-east-1",
                                                sts_endpoint=sts_url, session=session))
    finally:
        await clients.aclose()
        endpoint.stop()
    assert caught.value.code == "identity_provider_tls"
    cause = EXPECTED[case].format(ca=ca).replace("`127.0.0.1`", "`localhost`")
    assert caught.value.description == f"tls to `{sts_url}` failed: {cause}"


# -- configuration ---------------------------------------------------------------------


def _nats_config(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    keys = tmp / "keys"
    generate_keys(keys)
    config = tmp / "gateway.toml"
    config.write_text(f'[nats]\nurl = "tls://127.0.0.1:4222"\nuser_seed_file = '
                      f'"{keys}/auth-user.nk"\n[keys]\nissuer_seed_file = "{keys}/issuer.nk"\n'
                      f'xkey_seed_file = "{keys}/xkey.nk"\n')
    return subprocess.run([sys.executable, "-m", "gateway.cli", "nats-config", "--config",
                           str(config), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_nats_config_emits_a_tls_block_that_nats_server_accepts(tmp_path: Path,
                                                                 pki: Pki) -> None:
    done = _nats_config(tmp_path, "--tls-cert", str(pki.server.cert_file), "--tls-key",
                        str(pki.server.key_file), "--tls-ca", str(pki.ca.ca_file),
                        "--tls-verify")
    assert done.returncode == 0, done.stderr
    assert "verify: true" in done.stdout and f'ca_file: "{pki.ca.ca_file}"' in done.stdout
    server = NatsServer(done.stdout, workdir=tmp_path / "check")
    server.check_config()  # nats-server -t


@pytest.mark.parametrize(("args", "message"), [
    ((), "the gateway connects with tls (nats.url or [nats.tls]): pass --tls-cert and "
         "--tls-key so that the server speaks it"),
    (("--tls-cert", "c.pem"), "--tls-cert and --tls-key go together"),
    (("--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-verify"),
     "tls verify needs a ca file to check client certificates: pass --tls-ca"),
])
def test_nats_config_refuses_an_incomplete_tls_setup(tmp_path: Path, args: tuple[str, ...],
                                                     message: str) -> None:
    done = _nats_config(tmp_path, *args)
    assert done.returncode == 2
    assert done.stderr.strip() == f"nats-gateway: error: {message}"


@pytest.mark.parametrize(("section", "message"), [
    ({"nats": {"tls": {"key_file": "k.pem"}}}, "`key_file` needs `cert_file`"),
    ({"api": {"tls": {"key_file": "k.pem"}}}, "`key_file` needs `cert_file`"),
    ({"oidc": {"issuers": [{"issuer": "http://idp.example", "audiences": ["a"]}]}},
     "must use https (http only on loopback)"),
])
def test_tls_settings_are_validated(section: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"nats": {"user_seed_file": "u.nk"},
                            "keys": {"issuer_seed_file": "i.nk"}}
    for key, value in section.items():
        base[key] = {**base.get(key, {}), **value}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        GatewaySettings.model_validate(base)


async def test_the_api_refuses_to_start_on_an_unusable_certificate(
        tmp_path: Path, pki: Pki, stacks: list[Stack]) -> None:
    stack = _tls_stack(tmp_path, pki, pki.server, verify=False)
    stacks.append(stack)
    gateway = Gateway(stack.settings(api={"port": 0, "tls": {
        "cert_file": str(pki.server.cert_file), "key_file": str(pki.client.key_file)}}))
    try:
        with pytest.raises(ConfigError) as caught:
            await gateway.start()
    finally:
        await gateway.stop()
    assert caught.value.description == (
        f"audit api cannot load its tls certificate `{pki.server.cert_file}` / "
        f"`{pki.client.key_file}`: the key does not match the certificate")


async def test_dev_with_tls_serves_nats_and_the_api_over_tls(tmp_path: Path) -> None:
    env = DevEnvironment(state_dir=tmp_path / "dev", policy_dir=ROOT / "policies", api_port=0,
                         tls=True)
    settings = env.start()
    gateway = Gateway(settings)
    try:
        assert settings.nats.url.startswith("tls://") and env.ca_file is not None
        await gateway.start()
        issuer = env.issuer
        assert issuer is not None
        token = issuer.mint(subject="airflow-worker", audience="nats-gateway")
        nc = await gateway_connect(env.nats_url, OidcToken(token), scope=SCOPE,
                                   tls_ca_file=env.ca_file)
        await nc.close()
        async with httpx.AsyncClient(verify=ssl.create_default_context(
                cafile=str(env.ca_file))) as http:
            health = await http.get(f"https://127.0.0.1:{gateway.api_port}/healthz")
            assert health.status_code == 200
    finally:
        await gateway.stop()
        env.stop()


# -- the production topology of docs/operations.md --------------------------------------

OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


def _topology() -> str:
    return OPERATIONS.split("## Production topology", 1)[1].split("\n## ", 1)[0]


def _block(fence: str, needle: str) -> str:
    for block in _topology().split(f"```{fence}\n")[1:]:
        body = block.split("```", 1)[0]
        if needle in body:
            return body
    raise AssertionError(f"no ```{fence} block with {needle!r} in docs/operations.md")


def _make_etc(tmp: Path) -> Path:
    """The files the documented configs name, under ``tmp`` instead of ``/``."""
    etc = tmp / "etc"
    DevCa(etc / "nats" / "tls").issue("nats", ("nats.internal",))  # ca.pem, nats.pem/.key
    gateway_dir = etc / "nats-gateway"
    generate_keys(gateway_dir / "keys")
    return etc


def test_the_documented_nats_server_config_passes_nats_server_check(tmp_path: Path) -> None:
    etc = _make_etc(tmp_path)
    (etc / "nats-gateway" / "gateway.toml").write_text(
        _block("toml", "[nats.tls]").replace("/etc/", f"{etc}/"))
    command = _block("bash", "nats-config").splitlines()[0]
    args = command.replace("/etc/", f"{etc}/").split(">")[0].split()[1:]
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    documented = _block("", "tls {\n  cert_file").replace("/etc/", f"{etc}/")
    assert documented.strip() in done.stdout
    NatsServer(done.stdout, workdir=tmp_path / "check").check_config()  # nats-server -t


def test_the_documented_gateway_config_is_valid_and_postgres_without_tls_is_refused(
        tmp_path: Path) -> None:
    from gateway.audit.store import AuditStore
    from gateway.config import load_settings

    etc = _make_etc(tmp_path)
    config = etc / "nats-gateway" / "gateway.toml"
    config.write_text(_block("toml", "[nats.tls]").replace("/etc/", f"{etc}/"))
    settings = load_settings(config)
    assert settings.nats.tls_enabled and settings.api.tls.cert_file is not None
    assert "sslmode=verify-full" in settings.audit.url
    proxied = tomllib.loads(_block("toml", "trusted_proxies"))
    assert GatewaySettings.model_validate({
        "nats": {"user_seed_file": "u.nk"}, "keys": {"issuer_seed_file": "i.nk"}, **proxied,
    }).api.trusted_proxies == ("127.0.0.1",)
    # The same sslmode against this machine's PostgreSQL, which has no TLS: refused.
    local = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres?sslmode=verify-full"
    store = AuditStore(local)
    try:
        with pytest.raises(AuditUnavailable) as caught:
            store.migrate()
    finally:
        store.close()
    assert "server does not support SSL" in str(caught.value.__cause__)
