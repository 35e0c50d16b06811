"""The injective encoding of DAG/task/run ids into NATS subject tokens.

Airflow ids may contain `.` (task groups: `group.task`), which in a subject would create
a new token and let `a.b`/`c` overlap `a`/`b.c`. Every character outside
``[A-Za-z0-9_-]`` is therefore written as ``%XX`` (uppercase hex of each UTF-8 byte),
and `%` itself is one of those characters, so the mapping is injective and its output
never holds `.`, `*`, `>` or whitespace. Plain ids render unchanged: ``etl`` -> ``etl``,
``group.load`` -> ``group%2Eload``. The client module uses the same function
(docs/policies.md). No I/O.
"""

from __future__ import annotations

import re

from gateway.envelope import Scope

__all__ = ["RunIdRequired", "decode_token", "encode_token", "render_template"]

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def encode_token(value: str) -> str:
    """Encode one id as exactly one subject token; an empty id is refused."""
    if not value:
        raise ValueError("an empty id cannot be a subject token")
    out: list[str] = []
    for char in value:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
    return "".join(out)


def decode_token(token: str) -> str:
    """Inverse of encode_token (used by tests and by tools that read subjects back)."""
    raw = bytearray()
    index = 0
    while index < len(token):
        match = _ESCAPE.match(token, index)
        if match:
            raw.append(int(match.group(1), 16))
            index = match.end()
        elif token[index] in _SAFE:
            raw.extend(token[index].encode())
            index += 1
        else:
            raise ValueError(f"`{token}` is not an encoded subject token")
    return raw.decode()


class RunIdRequired(ValueError):
    """A template names ``{run_id}`` and the scope has none."""


def render_template(template: str, scope: Scope) -> str:
    """Fill the whole-token placeholders ``{dag_id}``, ``{task_id}``, ``{run_id}`` with the
    encoded ids. The one renderer of policies (grants) and of the client (subjects), so
    both sides agree by construction. The template is assumed checked
    (``check_subject_template``)."""
    values = {"{dag_id}": scope.dag_id, "{task_id}": scope.task_id, "{run_id}": scope.run_id}
    tokens = []
    for token in template.split("."):
        if token in values:
            value = values[token]
            if value is None:
                raise RunIdRequired(f"`{template}` needs a run_id")
            token = encode_token(value)
        tokens.append(token)
    return ".".join(tokens)
