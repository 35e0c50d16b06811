"""The ``nats`` asset URI scheme: ``nats://<subject>``, e.g. ``nats://events.etl_producer.>``.

Airflow normalises an unknown scheme's empty path to ``/`` (``nats://a.b/``); this handler
keeps the URI as written and refuses what is not a subject: a path, a port, user info,
or an empty or malformed subject."""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult

__all__ = ["check_subject", "create_asset", "sanitize_uri"]


def check_subject(subject: str) -> None:
    """Refuse what is not a NATS subject or wildcard pattern (``*`` and a final ``>``
    as whole tokens): the asset URI's and the queue URI's rule."""
    tokens = subject.split(".")
    if not subject or any(not token for token in tokens):
        raise ValueError(f"`nats://{subject}` does not name a subject")
    if any(">" in t and t != ">" for t in tokens) or ">" in tokens[:-1]:
        raise ValueError(f"`{subject}`: `>` may only be the last whole token")
    if any("*" in t and t != "*" for t in tokens):
        raise ValueError(f"`{subject}`: `*` must be a whole token")


def sanitize_uri(uri: SplitResult) -> SplitResult:
    if uri.path not in ("", "/") or uri.query or uri.port is not None or "@" in uri.netloc:
        raise ValueError("a nats asset URI is `nats://<subject>`, without path, port, "
                         "query or user")
    check_subject(uri.netloc)
    return uri._replace(path="")


def create_asset(uri: str, *, name: str | None = None, group: str = "asset",
                 extra: dict[str, Any] | None = None) -> Any:
    from airflow.sdk import Asset

    return Asset(uri=uri, name=name or uri, group=group, extra=extra or {})
