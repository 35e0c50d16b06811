"""Untrusted text made safe once, at the edge: bounded, valid, printable, one line.

Anything a client controls (CONNECT ``name``/``lang``/``version``/``user``, envelope keys,
unsigned token headers and claims, AWS header names) and every error description that
quotes it goes through :func:`safe_text` before it reaches an audit record, a log line, an
error description or a response. Without it, one hostile client could:

- make a record unhashable with a lone surrogate (strict UTF-8 cannot encode ``\\ud800``),
  failing the whole group-commit batch and with it other workers' grants;
- make PostgreSQL refuse a row (``NUL`` in text, a value longer than its column);
- fill the audit store with a 30 KB CONNECT ``name`` in every deny record;
- forge lines in a text log with a newline inside a token's ``iss``.

The text is escaped, not dropped, so the record still shows what was sent: a backslash
becomes ``\\\\``, and every character that is not printable (controls, ``NUL``, line and
paragraph separators, lone surrogates, unassigned code points) becomes ``\\xNN``,
``\\uNNNN`` or ``\\UNNNNNNNN``. The escape is injective: two different inputs never give the
same output, unless they are cut by the bound, which says how much was cut. Pure.
"""

from __future__ import annotations

__all__ = ["safe_line", "safe_text"]

_CUT = "…[+{} chars]"


def _piece(char: str, *, backslash: bool = True) -> str:
    if char == "\\":
        return "\\\\" if backslash else char
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(value: object, limit: int, *, backslash: bool = True) -> str:
    """``value`` as printable, valid text of at most ``limit`` characters (``limit`` of
    at least 24, so the cut marker fits).

    Non-strings (a JSON number or object where a string was expected) are shown by their
    ``repr``. Plain short ASCII, the common case, is returned as it is, without copying.
    ``backslash=False`` leaves backslashes alone, for text that may quote values already
    made safe (an error description): escaping them again would double their escapes."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit and text.isascii() and text.isprintable() and (
            not backslash or "\\" not in text):
        return text
    # Escaping only lengthens, so no more than limit + 1 characters can matter: a 30 KB
    # value costs no more than its bound.
    pieces = [_piece(char, backslash=backslash) for char in text[: limit + 1]]
    if len(text) <= limit and sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    # Cut between escapes, never inside one; the marker counts the input characters
    # left out, so a reader never mistakes a cut value for the whole.
    room = max(0, limit - len(_CUT.format(len(text))))
    kept = size = 0
    for piece in pieces:
        if size + len(piece) > room:
            break
        size += len(piece)
        kept += 1
    return "".join(pieces[:kept]) + _CUT.format(len(text) - kept)


def safe_line(text: str) -> str:
    """One log line: controls and lone surrogates escaped, backslashes left alone (the
    parts that came from a client were already made safe by :func:`safe_text`; a second
    pass must not double their escapes). No bound: messages are our own format strings."""
    if text.isprintable():
        return text
    return "".join(_piece(char, backslash=False) for char in text)
