"""The policy file format, version 1 (docs/policies.md), as validated pydantic models.

Unknown fields are errors (a typo must not silently widen or drop a rule). Subject
templates are checked here: placeholders ``{dag_id}``, ``{task_id}``, ``{run_id}`` must
each be a whole subject token, so a rendered id can never join or split tokens, and
wildcards (``*``, ``>``) can come only from the policy text. The JSON Schema published by
``nats-gateway policy schema`` is generated from these models.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

__all__ = [
    "CONNECTION_TYPES",
    "PLACEHOLDERS",
    "AwsIamMatch",
    "Direction",
    "JetStreamPermissions",
    "Limits",
    "Match",
    "OidcMatch",
    "Policy",
    "PolicyFile",
    "PolicyPermissions",
    "Responses",
    "ScopeRule",
    "StreamConsume",
    "StreamPublish",
    "policy_json_schema",
]

PLACEHOLDERS = frozenset({"{dag_id}", "{task_id}", "{run_id}"})
# nats-io/jwt v2 connection type names (user_claims.go), as nats-server expects them.
CONNECTION_TYPES = ("STANDARD", "WEBSOCKET", "LEAFNODE", "LEAFNODE_WS", "MQTT", "MQTT_WS")
_LITERAL_TOKEN = re.compile(r"[A-Za-z0-9_\-$%:+~]+")
_ID = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,99}")
_ACCOUNT = re.compile(r"[0-9]{12}")
_ROLE_ARN_GLOB = re.compile(r"arn:aws[a-z\-]*:iam::[0-9*?\[\]]{1,12}:role/.+")
# Stream names and consumer name parts stay inside the id encoding's alphabet: never `.`,
# `*`, `>`, whitespace or path separators (nats-server refuses those), and never `~`,
# which the gateway reserves to join the parts of a derived consumer name.
_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def check_subject_template(template: str) -> str:
    parts = template.split(".")
    for index, part in enumerate(parts):
        if part in PLACEHOLDERS or part == "*":
            continue
        if part == ">":
            if index != len(parts) - 1:
                raise ValueError(f"`>` must be the last token in `{template}`")
            continue
        if "{" in part or "}" in part:
            raise ValueError(
                f"placeholder in `{template}` must be a whole token: `{{dag_id}}`, "
                "`{task_id}` or `{run_id}` between dots")
        if not _LITERAL_TOKEN.fullmatch(part):
            raise ValueError(f"subject `{template}` has an invalid token `{part}`")
    return template


def _check_pointer(pointer: str) -> str:
    if not pointer.startswith("/"):
        raise ValueError(f"`{pointer}` must be a JSON pointer like `/dag_id`")
    return pointer


def _check_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"`{value}` is not a network in CIDR form ({exc})") from None


_SUBJECT_PART = r"(\{dag_id\}|\{task_id\}|\{run_id\}|\*|[A-Za-z0-9_\-$%:+~]+)"
# The patterns only publish the rules in the JSON Schema; the validators enforce them with
# clearer messages.
SubjectTemplate = Annotated[
    str, AfterValidator(check_subject_template),
    Field(json_schema_extra={"pattern": rf"^({_SUBJECT_PART}\.)*({_SUBJECT_PART}|>)$"}),
]
JsonPointer = Annotated[
    str, AfterValidator(_check_pointer), Field(json_schema_extra={"pattern": "^/"})]
Network = Annotated[
    str, AfterValidator(_check_network), Field(json_schema_extra={"format": "cidr"})]
ConnectionType = Literal["STANDARD", "WEBSOCKET", "LEAFNODE", "LEAFNODE_WS", "MQTT", "MQTT_WS"]
ScopeField = Literal["dag_id", "task_id", "run_id"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OidcMatch(_Strict):
    issuer: str = Field(description="configured issuer name or exact issuer URL")
    subject: str = Field(default="*", description="glob over `sub`")
    audience: str | None = Field(default=None, description="the token's `aud` must hold it")
    claims: dict[JsonPointer, str | int | bool] = Field(
        default_factory=dict, description="JSON pointer -> exact value or glob (strings)")


class AwsIamMatch(_Strict):
    account: str = Field(description="the 12-digit AWS account id, exactly",
                         json_schema_extra={"pattern": "^[0-9]{12}$"})
    role: str = Field(
        default="*",
        description="glob over the role ARN `arn:aws:iam::ACCOUNT:role/NAME` (no path: STS "
                    "does not report it)")
    session: str = Field(default="*", description="glob over the role session name")

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        if not _ACCOUNT.fullmatch(value):
            raise ValueError(f"account `{value}` must be a 12-digit AWS account id")
        return value

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value != "*" and not _ROLE_ARN_GLOB.fullmatch(value):
            raise ValueError(
                f"role `{value}` must be `*` or a role ARN glob like "
                "`arn:aws:iam::123456789012:role/airflow-*`")
        return value


class Match(_Strict):
    oidc: OidcMatch | None = None
    aws_iam: AwsIamMatch | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Match:
        if (self.oidc is None) == (self.aws_iam is None):
            raise ValueError("give exactly one of `oidc` or `aws_iam`")
        return self


class ScopeRule(_Strict):
    dag: str = Field(description="glob over the requested dag_id")
    tasks: tuple[str, ...] = Field(default=("*",), min_length=1,
                                   description="globs over the requested task_id")
    bind: dict[ScopeField, JsonPointer] = Field(
        default_factory=dict,
        description="requested scope field -> JSON pointer into the identity's claims; the "
                    "claim must be a string equal to the requested value")


class Direction(_Strict):
    allow: tuple[SubjectTemplate, ...] = ()
    deny: tuple[SubjectTemplate, ...] = ()


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"`{value}` must be 1 to 64 letters, digits, `_` or `-`")
    return value


def _check_filter(value: str) -> str:
    if value == ">":
        # nats clients send an unfiltered create request for `>`, and the server then
        # takes the filter from the request body: the grant could no longer pin it.
        raise ValueError("filter `>` cannot be pinned in the create subject: name the "
                         "stream's subjects instead")
    return value


StreamName = Annotated[
    str, AfterValidator(_check_name), Field(json_schema_extra={"pattern": f"^{_NAME.pattern}$"})]
ConsumerFilter = Annotated[SubjectTemplate, AfterValidator(_check_filter)]


class StreamPublish(_Strict):
    """Publish into a stream: its subjects, with the PubAck on the task's private inbox."""

    stream: StreamName = Field(description="the stream's name")
    subjects: tuple[SubjectTemplate, ...] = Field(
        min_length=1, description="subject templates inside the stream's subjects")


class StreamConsume(_Strict):
    """Read through the task's own durable pull consumer. Its name is derived from the
    DAG and task (``<dag>~<task>``, ids encoded), never chosen by the policy text."""

    stream: StreamName = Field(description="the stream's name")
    filter: ConsumerFilter = Field(
        description="the consumer's filter subject (a subject template)")
    name: StreamName | None = Field(
        default=None, description="optional suffix telling apart several consumers of one "
                                  "task on one stream: the consumer is `<dag>~<task>~<name>`")
    create: bool = Field(
        default=False, description="the task may create its consumer (with exactly this "
                                   "filter); default: an operator creates it")


class JetStreamPermissions(_Strict):
    publish: tuple[StreamPublish, ...] = ()
    consume: tuple[StreamConsume, ...] = ()


class Responses(_Strict):
    """nats-server's allow_responses: reply once (or ``max`` times) to a received request."""

    max: int = Field(default=1, ge=1, le=1_000_000)
    ttl_seconds: float | None = Field(default=None, gt=0, le=86_400)


class Limits(_Strict):
    subscriptions: int | None = Field(default=None, ge=0)
    payload_bytes: int | None = Field(default=None, ge=0)
    data_bytes: int | None = Field(default=None, ge=0)


class PolicyPermissions(_Strict):
    publish: Direction = Direction()
    subscribe: Direction = Direction()
    responses: Responses | None = None
    limits: Limits = Limits()
    jetstream: JetStreamPermissions = JetStreamPermissions()
    inbox: Literal["none", "private"] = Field(
        default="none",
        description="`private`: the task may receive replies on its own inbox prefix "
                    "`_INBOX.<dag>.<task>` (implied by any `jetstream` grant)")
    connection_types: tuple[ConnectionType, ...] | None = Field(
        default=None, min_length=1,
        description="the client's connection must be one of these (default: any)")
    source_networks: tuple[Network, ...] | None = Field(
        default=None, min_length=1,
        description="the client's address must be inside one of these (default: any)")


class Policy(_Strict):
    id: str = Field(description="unique id, recorded in every audit record it decides")
    description: str = ""
    match: Match
    scopes: tuple[ScopeRule, ...] = Field(min_length=1)
    permissions: PolicyPermissions
    ttl_seconds: int = Field(default=900, gt=0, le=86_400)
    account: str | None = Field(
        default=None, description="target account (a name in the gateway's `nats.accounts`)"
                                  "; default: `nats.target_account`")

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError(f"policy id `{value}` must be lowercase letters, digits, `_.-`")
        return value


class PolicyFile(_Strict):
    version: Literal[1]
    policies: tuple[Policy, ...] = ()


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file (draft 2020-12), as `policy schema` prints it."""
    schema = PolicyFile.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:nats-gateway:policy:v1",
        **schema,
    }
