"""NATS subject matching as nats-server applies a user's permissions to one subject.

nats-server keeps each permission list in a sublist (``server/sublist.go``) and checks a
publish or a subscription against it (``client.go``: ``pubAllowedFullCheck``,
``canSubscribe``): the subject is allowed when some *allow* pattern matches it and no
*deny* pattern does (deny wins). A pattern is dot-separated tokens where ``*`` stands for
exactly one token and ``>``, only as the last token, for one or more; any other token,
``a*b`` included, is literal. A pattern sublist refuses to insert (no empty token, ``>``
only last, no whitespace) never matches anything.

One difference is deliberate: an *empty* allow list means "everything" to nats-server,
but the gateway never issues one (``claims.user_claims`` turns it into ``deny: [">"]``),
so an empty allow list here allows nothing, which is what was granted.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["InvalidSubject", "allowed", "literal_subject", "pattern_matches",
           "valid_pattern"]

_WHITESPACE = frozenset(" \t\r\n\f\v")


class InvalidSubject(ValueError):
    """A subject asked about is not one literal NATS subject."""


def _tokens_valid(tokens: Sequence[str]) -> bool:
    return all(token and not (_WHITESPACE & set(token)) for token in tokens)


def valid_pattern(pattern: str) -> bool:
    """Would nats-server's sublist accept ``pattern``? (It ignores one it does not.)"""
    tokens = pattern.split(".")
    return _tokens_valid(tokens) and ">" not in tokens[:-1]


def literal_subject(subject: str) -> tuple[str, ...]:
    """The tokens of a subject a message can be published on: no wildcard token."""
    tokens = tuple(subject.split("."))
    if not subject or not _tokens_valid(tokens):
        raise InvalidSubject("not a valid subject: an empty token or whitespace")
    if "*" in tokens or ">" in tokens:
        raise InvalidSubject("a wildcard: ask about one literal subject")
    return tokens


def pattern_matches(pattern: str, subject: tuple[str, ...]) -> bool:
    """Does the permission ``pattern`` match the literal ``subject`` (its tokens)?"""
    if not valid_pattern(pattern):
        return False
    parts = pattern.split(".")
    for index, part in enumerate(parts):
        if part == ">":
            return len(subject) > index  # one or more tokens left
        if index >= len(subject) or part not in ("*", subject[index]):
            return False
    return len(parts) == len(subject)


def allowed(allow: Sequence[str], deny: Sequence[str], subject: tuple[str, ...]) -> bool:
    """Allow minus deny, as nats-server checks one subject against one direction."""
    return (any(pattern_matches(p, subject) for p in allow)
            and not any(pattern_matches(p, subject) for p in deny))
