"""Every documented setting is read from the TOML file and from the environment
(``NATS_GATEWAY_<SECTION>__<KEY>``), the environment winning; and the documentation
lists exactly the settings the code has."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gateway.config import GatewaySettings, check_environment, load_settings
from gateway.errors import ConfigError
from gateway.identity.oidc_config import OidcIssuerConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()
HEX_A, HEX_B = "a" * 64, "b" * 64
ISSUER_A = {"issuer": "https://a.example", "audiences": ["x"]}
ISSUER_B = {"issuer": "https://b.example", "audiences": ["y"]}

# setting -> (value in the file, value in the environment)
SAMPLES: dict[str, tuple[Any, Any]] = {
    "instance": ("gw-file", "gw-env"),
    "nats.url": ("nats://file:4222", "nats://env:4222"),
    "nats.mode": ("config", "config"),
    "nats.user_jwt_file": ("gw-f.jwt", "gw-e.jwt"),
    "nats.accounts": ({"OPS": {}}, {"BATCH": {}}),
    "nats.user_seed_file": ("file.nk", "env.nk"),
    "nats.queue_group": ("qf", "qe"),
    "nats.target_account": ("APPF", "APPE"),
    "nats.auth_account": ("AUTHF", "AUTHE"),
    "nats.auth_timeout_seconds": (3.0, 4.0),
    "nats.max_in_flight": (10, 20),
    "keys.issuer_seed_file": ("issuer-f.nk", "issuer-e.nk"),
    "keys.xkey_seed_file": ("xkey-f.nk", "xkey-e.nk"),
    "policy.dir": ("pf", "pe"),
    "policy.reload_interval_seconds": (5.0, 0.0),
    "policy.decision_cache_size": (0, 100),
    "audit.url": ("sqlite:////tmp/f.db", "postgresql+psycopg://u@h/e"),
    "audit.migrate_on_start": (False, True),
    "audit.checkpoint_key_file": ("ck-f.key", "ck-e.key"),
    "audit.trusted_checkpoint_keys": (["ed25519:f"], ["ed25519:e"]),
    "audit.checkpoint_every": (10, 20),
    "audit.checkpoint_interval_seconds": (5.0, 7.0),
    "audit.group_commit_max": (1, 64),
    "audit.retention_days": (30, 90),
    "audit.stream_subject": ("audit.f", "audit.e"),
    "audit.verify_grace_seconds": (10.0, 20.0),
    "audit.anchor_dir": ("anchors-f", "anchors-e"),
    "audit.anchor_stream": ("AUDIT_F", "AUDIT_E"),
    "audit.anchor_subject": ("anchor.f", "anchor.e"),
    "audit.anchor_stream_create": (False, True),
    "audit.anchor_stream_replicas": (3, 1),
    "api.enabled": (False, True),
    "api.host": ("127.0.0.3", "127.0.0.2"),
    "api.port": (9000, 9001),
    "api.admin_token_sha256": ([HEX_A], [HEX_B]),
    "api.auditor_token_sha256": ([HEX_B], [HEX_A]),
    "api.admin_token_file": ("admin-f.token", "admin-e.token"),
    "api.oidc.issuer": (ISSUER_A, ISSUER_B),
    "api.oidc.roles_claim": ("/groups", "/roles"),
    "api.oidc.auditor_values": (["a1"], ["a2"]),
    "api.oidc.admin_values": (["b1"], ["b2"]),
    "api.console.enabled": (False, True),
    "api.console.session_idle_minutes": (15.0, 45.0),
    "api.console.session_max_hours": (4.0, 12.0),
    "api.console.max_sessions": (50, 500),
    "aws.enabled": (True, False),
    "aws.sts_endpoint": ("https://sts.eu-west-1.amazonaws.com", "https://sts.amazonaws.com"),
    "aws.region": ("eu-west-1", "us-east-1"),
    "aws.gateway_id": ("gw-f", "gw-e"),
    "aws.allowed_accounts": (["111111111111"], ["222222222222"]),
    "aws.timeout_seconds": (0.5, 0.7),
    "aws.max_identity_seconds": (600, 1200),
    "aws.replay_cache_size": (10, 20),
    "aws.max_clock_skew_seconds": (30, 45),
    "oidc.identity_timeout_seconds": (0.9, 1.5),
    "oidc.token_cache_size": (0, 50),
    "oidc.issuers[].name": ("f", "e"),
    "oidc.issuers[].issuer": ("https://f.example", "https://e.example"),
    "oidc.issuers[].audiences": (["af"], ["ae"]),
    "oidc.issuers[].algorithms": (["ES256"], ["PS256"]),
    "oidc.issuers[].jwks_uri": ("https://f.example/jwks", "https://e.example/jwks"),
    "oidc.issuers[].leeway_seconds": (5, 10),
    "oidc.issuers[].max_lifetime_seconds": (600, 1200),
    "oidc.issuers[].jwks_refresh_seconds": (60, 120),
    "oidc.issuers[].jwks_refetch_cooldown_seconds": (5, 10),
    "oidc.issuers[].http_timeout_seconds": (0.5, 2.0),
    "oidc.issuers[].allow_plain_http": (True, False),
    "oidc.issuers[].ca_file": ("idp-f.pem", "idp-e.pem"),
    "nats.tls.ca_file": ("ca-f.pem", "ca-e.pem"),
    "nats.tls.cert_file": ("gw-f.pem", "gw-e.pem"),
    "nats.tls.key_file": ("gw-f.key", "gw-e.key"),
    "nats.tls.server_name": ("nats-f.example", "nats-e.example"),
    "api.tls.cert_file": ("api-f.pem", "api-e.pem"),
    "api.tls.key_file": ("api-f.key", "api-e.key"),
    "api.metrics_host": ("127.0.0.4", "127.0.0.5"),
    "api.trusted_proxies": (["10.0.0.5"], ["10.0.0.0/24"]),
    "api.metrics_port": (9100, 9101),
    "oidc.ca_file": ("oidc-f.pem", "oidc-e.pem"),
    "aws.ca_file": ("sts-f.pem", "sts-e.pem"),
}
PATHS = {"nats.user_jwt_file", "nats.user_seed_file", "keys.issuer_seed_file",
         "keys.xkey_seed_file", "policy.dir", "audit.checkpoint_key_file",
         "audit.anchor_dir", "api.admin_token_file", "oidc.issuers[].ca_file",
         "nats.tls.ca_file", "nats.tls.cert_file", "nats.tls.key_file", "api.tls.cert_file",
         "api.tls.key_file", "oidc.ca_file", "aws.ca_file"}


def _documented() -> set[str]:
    keys: set[str] = set()
    for first_cell in re.findall(r"^\| (`[^|]+`(?: / `[^|]+`)*) \|", DOC, flags=re.M):
        keys.update(re.findall(r"`([^`]+)`", first_cell))
    return keys - {"setting"}


def _model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        nested = [a for a in (annotation, *args) if isinstance(a, type)
                  and issubclass(a, BaseModel)]
        if getattr(annotation, "__origin__", None) is dict:
            keys.add(path)  # a table of named entries, documented as one setting
        elif nested and nested[0] is OidcIssuerConfig and "[]" not in path and "issuers" in path:
            keys |= _model_keys(OidcIssuerConfig, f"{path}[].")
        elif nested and nested[0] is not OidcIssuerConfig:
            keys |= _model_keys(nested[0], f"{path}.")
        else:
            keys.add(path)
    return keys


def test_the_documentation_lists_exactly_the_settings() -> None:
    assert _documented() == _model_keys(GatewaySettings)
    assert set(SAMPLES) == _documented()


BASE: dict[str, Any] = {
    "nats": {"user_seed_file": "seed.nk"}, "keys": {"issuer_seed_file": "issuer.nk"},
    "aws": {"gateway_id": "gw", "allowed_accounts": ["111111111111"]},
}


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _toml(data: dict[str, Any]) -> str:
    top = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(top) + "\n"
    for section, values in data.items():
        if not isinstance(values, dict):
            continue
        scalars = {k: v for k, v in values.items() if k != "issuers"}
        out += f"[{section}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in scalars.items())
        for issuer in values.get("issuers", []):
            out += f"[[{section}.issuers]]\n" + "".join(
                f"{k} = {_toml_value(v)}\n" for k, v in issuer.items())
    return out


def _place(data: dict[str, Any], key: str, value: Any) -> None:
    if key.startswith("oidc.issuers[]."):
        field = key.rsplit(".", 1)[1]
        issuer = {"issuer": "https://base.example", "audiences": ["b"], field: value}
        data.setdefault("oidc", {})["issuers"] = [issuer]
        return
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    if key.endswith(".tls.key_file"):
        node.setdefault("cert_file", "sibling.pem")  # a key without its certificate is refused
    if key.startswith("api.oidc.") and key != "api.oidc.issuer":
        data["api"]["oidc"].setdefault("issuer", ISSUER_A)


def _env(key: str, value: Any) -> tuple[str, str]:
    if key.startswith("oidc.issuers[]."):
        field = key.rsplit(".", 1)[1]
        issuer = {"issuer": "https://base.example", "audiences": ["b"], field: value}
        return "NATS_GATEWAY_OIDC__ISSUERS", json.dumps([issuer])
    name = "NATS_GATEWAY_" + key.upper().replace(".", "__")
    if isinstance(value, (list, dict)):
        return name, json.dumps(value)
    return name, str(value).lower() if isinstance(value, bool) else str(value)


def _read(settings: GatewaySettings, key: str) -> Any:
    node: Any = settings
    if key.startswith("oidc.issuers[]."):
        node = settings.oidc.issuers[0]
        key = key.rsplit(".", 1)[1]
    for part in key.split("."):
        node = getattr(node, part)
    if isinstance(node, BaseModel):
        return json.loads(node.model_dump_json(exclude_unset=True))
    if isinstance(node, dict):
        return {k: v.model_dump(exclude_none=True) for k, v in node.items()}
    return list(node) if isinstance(node, tuple) else node


def _expected(key: str, value: Any, base: Path) -> Any:
    return (base / value).resolve() if key in PATHS else value


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_each_setting_from_the_file_and_from_the_environment(
        key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_value, env_value = SAMPLES[key]
    data = json.loads(json.dumps(BASE))
    _place(data, key, file_value)
    if key.startswith("api.oidc.") and key != "api.oidc.issuer":
        data["api"]["oidc"]["issuer"] = ISSUER_A
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(data))
    from_file = load_settings(config)
    assert _read(from_file, key) == _expected(key, file_value, tmp_path)

    name, text = _env(key, env_value)
    monkeypatch.setenv(name, text)
    from_env = load_settings(config)
    if isinstance(env_value, dict) and key != "api.oidc.issuer":
        env_value = {**file_value, **env_value}  # a table: entries merge with the file's
    assert _read(from_env, key) == _expected(key, env_value, tmp_path), (name, text)


def test_a_bad_environment_value_is_a_clear_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(json.loads(json.dumps(BASE))))
    monkeypatch.setenv("NATS_GATEWAY_NATS__MAX_IN_FLIGHT", "many")
    with pytest.raises(ConfigError, match=r"`nats.max_in_flight`.*NATS_GATEWAY_|NATS_GATEWAY_.*"
                                          r"`nats.max_in_flight`"):
        load_settings(config)


@pytest.mark.parametrize(("name", "suggestion"), [
    ("NATS_GATEWAY_AUDT__URL", "NATS_GATEWAY_AUDIT__URL"),
    ("NATS_GATEWAY_API__PORTT", "NATS_GATEWAY_API__PORT"),
    ("NATS_GATEWAY_NATS__URL__HOST", "NATS_GATEWAY_NATS__URL"),
    ("NATS_GATEWAY_LOGLEVEL", "NATS_GATEWAY_LOG_LEVEL"),
    ("NATS_GATEWAY_WHATEVER", None),
])
def test_a_variable_that_sets_nothing_is_a_configuration_error(
        name: str, suggestion: str | None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt section would otherwise be ignored and the file's value used."""
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(json.loads(json.dumps(BASE))))
    monkeypatch.setenv(name, "x")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = caught.value.description
    assert f"environment variable `{name}` is not a setting" in message
    assert (f"did you mean `{suggestion}`" in message) if suggestion else "did you" not in message


@pytest.mark.parametrize("name", [
    "NATS_GATEWAY_LOG_LEVEL", "NATS_GATEWAY_AUDIT", "NATS_GATEWAY_OIDC__ISSUERS",
    "NATS_GATEWAY_NATS__ACCOUNTS__OPS__SIGNING_KEY_FILE", "NATS_GATEWAY_API__OIDC__ISSUER__NAME",
    "nats_gateway_audit__url",
])
def test_variables_that_name_a_setting_or_the_cli_are_accepted(name: str) -> None:
    check_environment({name: "x"})


def test_the_default_sts_endpoint_is_the_one_the_client_signs_for() -> None:
    """Both defaults together must work: the client presigns for the region's endpoint
    (gateway/client/aws.py), and the gateway must replay there."""
    from gateway.identity.aws_proof import regional_sts_endpoint
    from gateway.identity.aws_sts import AwsIamSettings

    settings = AwsIamSettings(enabled=True, region="eu-west-1", gateway_id="gw",
                              allowed_accounts=("111111111111",))
    assert settings.sts_endpoint == regional_sts_endpoint("eu-west-1")
    assert settings.host == "sts.eu-west-1.amazonaws.com"
    assert AwsIamSettings(sts_endpoint="https://sts.amazonaws.com").host == "sts.amazonaws.com"
