"""safe_text: whatever a client sends comes out bounded, printable, encodable and
distinguishable from anything else it could have sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import MAX_DESCRIPTION, CredentialError
from gateway.logs import TextFormatter
from gateway.untrusted import safe_line, safe_text

# Every code point, lone surrogates included: json.loads turns `\ud800` into one.
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF))


@given(ANY_TEXT, st.integers(min_value=24, max_value=400))
def test_the_result_is_bounded_printable_and_encodable(text: str, limit: int) -> None:
    safe = safe_text(text, limit)
    assert len(safe) <= limit
    assert safe.isprintable()
    safe.encode("utf-8")  # strict: raises on a lone surrogate


@given(ANY_TEXT, ANY_TEXT)
def test_escaping_is_injective_within_the_bound(a: str, b: str) -> None:
    limit = 10_000  # no cut: the escape alone must keep inputs apart
    if a != b:
        assert safe_text(a, limit) != safe_text(b, limit)


@pytest.mark.parametrize(("raw", "shown"), [
    ("worker-1", "worker-1"),
    ("a\x00b", "a\\x00b"),
    ("line\nforged", "line\\x0aforged"),
    ("\ud800", "\\ud800"),
    ("back\\slash", "back\\\\slash"),
    ("sep\u2028arator", "sep\\u2028arator"),
    ("naïve café", "naïve café"),  # printable non-ASCII stays as it is
    (42, "42"),
    ({"iss": 1}, "{'iss': 1}"),
], ids=["plain", "nul", "newline", "surrogate", "backslash", "line-separator", "unicode",
        "number", "object"])
def test_what_a_reader_sees(raw: object, shown: str) -> None:
    assert safe_text(raw, 64) == shown


def test_a_cut_says_how_much_is_missing() -> None:
    safe = safe_text("n" * 30_000, 256)
    assert len(safe) == 256 and safe.startswith("n" * 200)
    kept = safe.index("…")
    assert safe.endswith(f"…[+{30_000 - kept} chars]")


def test_a_cut_never_splits_an_escape() -> None:
    safe = safe_text("\x00" * 100, 32)
    assert safe.split("…")[0] == "\\x00" * (len(safe.split("…")[0]) // 4)


def test_every_error_description_is_made_safe() -> None:
    error = CredentialError("envelope repeats field `\ud800\n" + "x" * 5000 + "`")
    assert error.description.isprintable() and len(error.description) <= MAX_DESCRIPTION
    error.description.encode("utf-8")


def test_a_text_log_line_stays_one_line() -> None:
    import logging

    record = logging.LogRecord("gateway", logging.INFO, __file__, 1, "deny %s %s", (
        "d1", "issuer `x\n2026-11-28 INFO grant forged`"), None)
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert "\n" not in line and "forged" in line
    assert safe_line("already\\x0asafe") == "already\\x0asafe"  # no second escape
