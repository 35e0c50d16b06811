"""Gateway settings: one TOML file, validated once at start, passed down (docs/configuration.md).

Secrets are never in the file itself: seeds come from seed files (mode 0600 expected),
admin API tokens are stored as SHA-256 hashes. Relative paths are resolved against the
directory of the config file, so a config and its keys can move together.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.errors import ConfigError
from gateway.identity.aws_sts import AwsIamSettings
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.tls import TlsFiles

__all__ = ["ApiConsoleSettings", "ApiOidcSettings", "ApiSettings", "ApiTlsSettings",
           "GatewaySettings", "NatsTlsSettings", "TrustedKeySettings", "check_environment",
           "load_settings"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetAccount(_Section):
    """An account granted users may be placed in (``account:`` in a policy)."""

    public_key: str | None = Field(
        default=None, description="operator mode: the account's public key (A...); default: "
                                  "the signing key's own public key")
    signing_key_file: Path | None = Field(
        default=None, description="operator mode: seed of the account key or one of its "
                                  "signing keys; user JWTs are signed with it")


class NatsTlsSettings(_Section):
    """TLS to nats-server: on when `nats.url` is `tls://` or any of these is set."""

    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) that signs nats-server's certificate; "
                                  "default: the system's CA store")
    cert_file: Path | None = Field(
        default=None, description="client certificate (PEM) for servers that verify "
                                  "clients (`tls { verify: true }`)")
    key_file: Path | None = Field(
        default=None, description="the client certificate's key (mode 0600); default: "
                                  "in cert_file")
    server_name: str | None = Field(
        default=None, description="host name nats-server's certificate must name; "
                                  "default: the URL's host")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> NatsTlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("`key_file` needs `cert_file`")
        return self

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.ca_file, self.cert_file, self.key_file,
                                           self.server_name))

    def files(self) -> TlsFiles:
        return TlsFiles(self.ca_file, self.cert_file, self.key_file, self.server_name)


class NatsSettings(_Section):
    url: str = "nats://127.0.0.1:4222"
    tls: NatsTlsSettings = NatsTlsSettings()
    mode: Literal["config", "operator"] = Field(
        default="config", description="config: accounts in nats-server.conf; operator: "
                                      "decentralized JWT accounts")
    user_seed_file: Path = Field(description="the gateway's own NATS user nkey seed (U...)")
    user_jwt_file: Path | None = Field(
        default=None, description="operator mode: the gateway user's JWT (from nats-config)")
    queue_group: str = "nats-gateway"
    target_account: str = "APP"
    auth_account: str = "AUTH"
    accounts: dict[str, TargetAccount] = Field(
        default_factory=dict, description="target accounts by name; `target_account` is the "
                                          "default, policies may name others")
    auth_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    max_in_flight: int = Field(default=256, gt=0)

    @model_validator(mode="after")
    def _operator_mode_needs_keys(self) -> NatsSettings:
        if self.mode != "operator":
            return self
        if self.user_jwt_file is None:
            raise ValueError("operator mode needs `user_jwt_file` (`nats-gateway nats-config "
                             "--out DIR` writes it)")
        if self.target_account not in self.accounts:
            raise ValueError(f"operator mode needs `accounts.{self.target_account}` with its "
                             "signing_key_file")
        for name, account in self.accounts.items():
            if account.signing_key_file is None:
                raise ValueError(f"`accounts.{name}.signing_key_file` is required in "
                                 "operator mode")
        return self

    @property
    def account_names(self) -> frozenset[str]:
        return frozenset({self.target_account, *self.accounts})

    @property
    def tls_enabled(self) -> bool:
        """TLS on every connection to nats-server: a `tls://` URL or a `[nats.tls]` setting
        (then a `nats://` URL is held to TLS too: a server not requiring it is refused)."""
        return self.tls.configured or any(
            part.strip().startswith("tls://") for part in self.url.split(","))

    def tls_options(self) -> dict[str, Any]:
        """nats-py connect options for TLS (none when TLS is off)."""
        if not self.tls_enabled:
            return {}
        options: dict[str, Any] = {"tls": self.tls.files().context()}
        if self.tls.server_name:
            options["tls_hostname"] = self.tls.server_name
        return options


class KeySettings(_Section):
    issuer_seed_file: Path = Field(description="account nkey seed (SA...) that signs grants")
    xkey_seed_file: Path | None = Field(default=None, description="curve seed (SX...)")


class PolicySettings(_Section):
    dir: Path = Path("policies")
    reload_interval_seconds: float = Field(
        default=2.0, ge=0, le=3600,
        description="how often to look for changed policy files; 0 turns polling off "
                    "(SIGHUP still reloads)")
    decision_cache_size: int = Field(
        default=10_000, ge=0,
        description="decisions kept by identity, scope and client for the current policy "
                    "set; 0 turns it off")


class TrustedKeySettings(_Section):
    """A checkpoint public key verify accepts, for checkpoints signed inside its window."""

    key: str = Field(description="`ed25519:...` public key (`nats-gateway keys generate`)")
    not_before: datetime | None = Field(default=None, description="ISO 8601, with zone")
    not_after: datetime | None = Field(default=None, description="ISO 8601, with zone")

    @field_validator("key")
    @classmethod
    def _ed25519(cls, value: str) -> str:
        if not value.startswith("ed25519:"):
            raise ValueError("a trusted checkpoint key starts with `ed25519:`")
        return value


# JetStream stream names: no `.`, `*`, `>`, whitespace or path separators.
_STREAM_NAME = re.compile(r"[^.*>\s/\\]{1,255}")


class AuditSettings(_Section):
    url: str = "sqlite:///audit.db"
    migrate_on_start: bool = Field(default=True, description="run Alembic migrations at start")
    checkpoint_key_file: Path | None = Field(
        default=None, description="ed25519 seed (64 hex digits) that signs chain checkpoints")
    trusted_checkpoint_keys: tuple[str | TrustedKeySettings, ...] = Field(
        default=(), description="more public keys verify accepts (old keys): `ed25519:...` "
                                "or {key, not_before, not_after}")
    checkpoint_every: int = Field(default=1000, gt=0)
    checkpoint_interval_seconds: float = Field(
        default=60.0, gt=0, description="heartbeat: a signed checkpoint at least this often")
    verify_grace_seconds: float = Field(
        default=30.0, ge=0, description="verify: slack on top of the interval before a "
                                        "record without a checkpoint is reported")
    anchor_dir: Path | None = Field(
        default=None, description="append-only directory that gets every signed checkpoint")
    anchor_stream: str | None = Field(
        default=None, description="JetStream stream (deny_delete, deny_purge) that gets "
                                  "every signed checkpoint")
    anchor_subject: str = Field(default="nats-gateway.audit.checkpoints",
                                description="subject the checkpoints are published on")
    anchor_stream_create: bool = Field(default=True,
                                       description="create the stream if it is missing")
    anchor_stream_replicas: int = Field(default=1, ge=1, le=5)
    group_commit_max: int = Field(default=256, gt=0,
                                  description="records per transaction at most; 1 disables "
                                              "group commit")
    retention_days: int = Field(default=0, ge=0, description="0 keeps records forever")
    stream_subject: str | None = Field(
        default=None, description="publish each committed record as JSON on this subject")

    @field_validator("anchor_stream")
    @classmethod
    def _stream_name(cls, value: str | None) -> str | None:
        if value is not None and not _STREAM_NAME.fullmatch(value):
            raise ValueError("a stream name may not contain `.`, `*`, `>`, whitespace or "
                             "path separators")
        return value


class ApiOidcSettings(_Section):
    """Bearer tokens from an IdP for the audit API: a role comes from a claim's values."""

    issuer: OidcIssuerConfig
    roles_claim: str = Field(default="/groups", description="JSON pointer to the role claim")
    auditor_values: tuple[str, ...] = Field(default=("nats-gateway-auditor",))
    admin_values: tuple[str, ...] = Field(default=("nats-gateway-admin",))


class ApiConsoleSettings(_Section):
    """The audit console (``/console``): server-side sessions, ended when idle or old."""

    enabled: bool = True
    session_idle_minutes: float = Field(
        default=30, gt=0, le=24 * 60, description="a session unused this long ends")
    session_max_hours: float = Field(
        default=8, gt=0, le=7 * 24, description="a session ends this long after sign-in")
    max_sessions: int = Field(
        default=1000, ge=1, le=100_000,
        description="sessions held at once; the oldest ends when a sign-in needs room")


class ApiTlsSettings(_Section):
    """HTTPS for the audit API: on when cert_file is set."""

    cert_file: Path | None = Field(default=None, description="server certificate (PEM), "
                                                             "with its chain")
    key_file: Path | None = Field(default=None, description="its key (mode 0600); default: "
                                                            "in cert_file")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> ApiTlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("`key_file` needs `cert_file`")
        return self


class ApiSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tls: ApiTlsSettings = ApiTlsSettings()
    trusted_proxies: tuple[str, ...] = Field(
        default=(), description="addresses (or CIDRs) of reverse proxies whose "
                                "X-Forwarded-For and X-Forwarded-Proto are believed; none "
                                "by default")
    metrics_host: str = Field(default="127.0.0.1",
                              description="address of the separate /metrics listener")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="serve /metrics on its own plain-HTTP listener (and not on the API)")
    admin_token_sha256: tuple[str, ...] = Field(
        default=(), description="hex SHA-256 of each admin bearer token")
    auditor_token_sha256: tuple[str, ...] = Field(
        default=(), description="hex SHA-256 of each auditor (read-only) bearer token")
    admin_token_file: Path | None = Field(
        default=None, description="a file holding one admin token (mode 0600), hashed at start")
    oidc: ApiOidcSettings | None = None
    console: ApiConsoleSettings = ApiConsoleSettings()

    @field_validator("admin_token_sha256", "auditor_token_sha256")
    @classmethod
    def _hex_digests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for digest in value:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("admin_token_sha256 entries must be 64 lowercase hex digits")
        return value


class OidcSettings(_Section):
    issuers: tuple[OidcIssuerConfig, ...] = ()
    ca_file: Path | None = Field(
        default=None, description="CA bundle for every issuer without its own ca_file; "
                                  "default: the public CAs (certifi)")
    identity_timeout_seconds: float = Field(default=1.0, gt=0, le=10)
    token_cache_size: int = Field(
        default=10_000, ge=0,
        description="verified tokens kept (by hash) until they expire; 0 turns it off")


ENV_PREFIX = "NATS_GATEWAY_"
# Variables with the prefix that are not settings: the CLI's logging options, the sample
# issuer's secret (compose) and the test suite's PostgreSQL.
OTHER_VARIABLES = frozenset({"NATS_GATEWAY_LOG_LEVEL", "NATS_GATEWAY_LOG_FORMAT",
                             "NATS_GATEWAY_SAMPLE_CLIENT_SECRET", "NATS_GATEWAY_TEST_PG"})


class GatewaySettings(BaseSettings):
    """The file's values, overridden by ``NATS_GATEWAY_<SECTION>__<KEY>`` variables
    (lists and objects as JSON, e.g. ``NATS_GATEWAY_API__ADMIN_TOKEN_SHA256='["..."]'``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True,
        case_sensitive=False)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (passed in as init values); no .env files.
        return env_settings, init_settings

    nats: NatsSettings
    keys: KeySettings
    policy: PolicySettings = PolicySettings()
    audit: AuditSettings = AuditSettings()
    api: ApiSettings = ApiSettings()
    oidc: OidcSettings = OidcSettings()
    aws: AwsIamSettings = AwsIamSettings()
    instance: str = Field(default="", description="name in audit records; default host+pid")

    def resolved(self, base: Path) -> GatewaySettings:
        """Paths made absolute against ``base`` (the config file's directory)."""
        def fix(path: Path) -> Path:
            return path if path.is_absolute() else (base / path).resolve()

        def fix_optional(path: Path | None) -> Path | None:
            return None if path is None else fix(path)

        def fix_issuer(issuer: OidcIssuerConfig) -> OidcIssuerConfig:
            if issuer.ca_file is None:
                return issuer
            return issuer.model_copy(update={"ca_file": fix(issuer.ca_file)})

        audit_url = self.audit.url
        prefix = "sqlite:///"
        if audit_url.startswith(prefix) and not audit_url.startswith(prefix + "/"):
            audit_url = prefix + str(fix(Path(audit_url[len(prefix):])))
        xkey = self.keys.xkey_seed_file
        checkpoint_key = self.audit.checkpoint_key_file
        anchor_dir = self.audit.anchor_dir
        return self.model_copy(update={
            "nats": self.nats.model_copy(update={
                "tls": self.nats.tls.model_copy(update={
                    "ca_file": fix_optional(self.nats.tls.ca_file),
                    "cert_file": fix_optional(self.nats.tls.cert_file),
                    "key_file": fix_optional(self.nats.tls.key_file)}),
                "user_seed_file": fix(self.nats.user_seed_file),
                "user_jwt_file": fix(self.nats.user_jwt_file) if self.nats.user_jwt_file
                else None,
                "accounts": {name: account.model_copy(update={
                    "signing_key_file": fix(account.signing_key_file)
                    if account.signing_key_file else None})
                    for name, account in self.nats.accounts.items()}}),
            "keys": self.keys.model_copy(update={
                "issuer_seed_file": fix(self.keys.issuer_seed_file),
                "xkey_seed_file": fix(xkey) if xkey else None}),
            "policy": self.policy.model_copy(update={"dir": fix(self.policy.dir)}),
            "api": self.api.model_copy(update={
                "admin_token_file": fix_optional(self.api.admin_token_file),
                "tls": self.api.tls.model_copy(update={
                    "cert_file": fix_optional(self.api.tls.cert_file),
                    "key_file": fix_optional(self.api.tls.key_file)}),
                "oidc": self.api.oidc.model_copy(update={
                    "issuer": fix_issuer(self.api.oidc.issuer)}) if self.api.oidc else None}),
            "oidc": self.oidc.model_copy(update={
                "ca_file": fix_optional(self.oidc.ca_file),
                "issuers": tuple(fix_issuer(i) for i in self.oidc.issuers)}),
            "aws": self.aws.model_copy(update={"ca_file": fix_optional(self.aws.ca_file)}),
            "audit": self.audit.model_copy(update={
                "url": audit_url,
                "checkpoint_key_file": fix(checkpoint_key) if checkpoint_key else None,
                "anchor_dir": fix(anchor_dir) if anchor_dir else None}),
        })


def _section(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (``X``, ``X | None``), if it holds one."""
    candidates = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) \
        else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_setting(parts: list[str], model: type[BaseModel]) -> bool:
    """Whether ``parts`` (a variable's name split at ``__``) leads to a field of ``model``:
    a whole section (as JSON), a key in it, or anything below a table of named entries."""
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    rest = parts[1:]
    if not rest or get_origin(field.annotation) is dict:
        return True
    section = _section(field.annotation)
    return section is not None and _is_setting(rest, section)


def _setting_variables(model: type[BaseModel], prefix: str = ENV_PREFIX) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        names.append(prefix + name.upper())
        section = _section(field.annotation)
        if section is not None:
            names += _setting_variables(section, f"{prefix}{name.upper()}__")
    return names


def _suggest(name: str) -> str | None:
    # Compared without the prefix every candidate shares, which would make anything "close".
    known = {v[len(ENV_PREFIX):]: v for v in (*_setting_variables(GatewaySettings),
                                              *OTHER_VARIABLES)}
    close = difflib.get_close_matches(name[len(ENV_PREFIX):], known, n=1, cutoff=0.75)
    return known[close[0]] if close else None


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a ``NATS_GATEWAY_*`` variable that sets nothing: pydantic-settings ignores
    one whose section is misspelt (``NATS_GATEWAY_AUDT__URL``), and the gateway would run
    on the file's value while the operator believes it overridden."""
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_VARIABLES:
            continue
        if _is_setting(upper[len(ENV_PREFIX):].lower().split("__"), GatewaySettings):
            continue
        hint = _suggest(upper)
        hint = f" (did you mean `{hint}`?)" if hint else ""
        problems.append(f"environment variable `{name}` is not a setting{hint}")
    if problems:
        raise ConfigError("; ".join(problems))


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"`{'.'.join(str(p) for p in err['loc'])}`: {err['msg']}" for err in exc.errors())


def load_settings(path: Path) -> GatewaySettings:
    """Read and validate a config file; ConfigError names every bad setting."""
    check_environment(os.environ)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config `{path}`: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config `{path}` is not valid toml: {exc}") from exc
    try:
        settings = GatewaySettings(**data)
    except ValidationError as exc:
        raise ConfigError(f"config `{path}` (and {ENV_PREFIX}* variables): "
                          f"{_describe(exc)}") from exc
    return settings.resolved(path.parent.resolve())


def read_seed(path: Path, what: str) -> str:
    try:
        seed = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} seed file `{path}`: {exc.strerror}") from exc
    if not seed:
        raise ConfigError(f"{what} seed file `{path}` is empty")
    return seed
