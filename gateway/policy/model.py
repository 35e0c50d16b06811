"""The policy file format, version 1 (docs/policies.md), as validated pydantic models.

Unknown fields are errors (a typo must not silently widen or drop a rule). Subject
templates are checked here: placeholders ``{dag_id}``, ``{task_id}``, ``{run_id}`` must
each be a whole subject token, so a rendered id can never join or split tokens, and
wildcards (``*``, ``>``) can come only from the policy text.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "PLACEHOLDERS",
    "Direction",
    "OidcMatch",
    "Policy",
    "PolicyFile",
    "PolicyPermissions",
    "ScopeRule",
]

PLACEHOLDERS = frozenset({"{dag_id}", "{task_id}", "{run_id}"})
_LITERAL_TOKEN = re.compile(r"[A-Za-z0-9_\-$%:+~]+")
_ID = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,99}")


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OidcMatch(_Strict):
    issuer: str = Field(description="configured issuer name or exact issuer URL")
    subject: str = Field(default="*", description="glob over `sub`")
    audience: str | None = Field(default=None, description="the token's `aud` must hold it")
    claims: dict[str, str | int | bool] = Field(
        default_factory=dict, description="JSON pointer -> exact value or glob (strings)")

    @field_validator("claims")
    @classmethod
    def _pointers(cls, value: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for pointer in value:
            if not pointer.startswith("/"):
                raise ValueError(f"claim key `{pointer}` must be a JSON pointer like `/ns`")
        return value


class Match(_Strict):
    oidc: OidcMatch | None = None


class ScopeRule(_Strict):
    dag: str = Field(description="glob over the requested dag_id")
    tasks: tuple[str, ...] = Field(default=("*",), min_length=1,
                                   description="globs over the requested task_id")


SubjectTemplate = Annotated[str, AfterValidator(check_subject_template)]


class Direction(_Strict):
    allow: tuple[SubjectTemplate, ...] = ()
    deny: tuple[SubjectTemplate, ...] = ()


class PolicyPermissions(_Strict):
    publish: Direction = Direction()
    subscribe: Direction = Direction()


class Policy(_Strict):
    id: str = Field(description="unique id, recorded in every audit record it decides")
    description: str = ""
    match: Match
    scopes: tuple[ScopeRule, ...] = Field(min_length=1)
    permissions: PolicyPermissions
    ttl_seconds: int = Field(default=900, gt=0, le=86_400)

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError(f"policy id `{value}` must be lowercase letters, digits, `_.-`")
        return value


class PolicyFile(_Strict):
    version: Literal[1]
    policies: tuple[Policy, ...] = ()
