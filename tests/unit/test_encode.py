from __future__ import annotations

import itertools

import pytest

from gateway.policy.encode import decode_token, encode_token


@pytest.mark.parametrize("value,expected", [
    ("etl", "etl"), ("load_2-b", "load_2-b"), ("grp.load", "grp%2Eload"), ("a%b", "a%25b"),
    ("é", "%C3%A9"), ("*", "%2A"), (">", "%3E"), (" ", "%20"),
])
def test_known_encodings(value: str, expected: str) -> None:
    assert encode_token(value) == expected
    assert decode_token(expected) == value


def test_injective_and_single_token_over_a_dense_alphabet() -> None:
    """Every string up to length 3 over an alphabet with the dangerous characters."""
    alphabet = "a.%2E*>_-"
    seen: dict[str, str] = {}
    for length in range(1, 4):
        for chars in itertools.product(alphabet, repeat=length):
            value = "".join(chars)
            token = encode_token(value)
            assert not set(token) & set(".*> \t")
            assert token not in seen, (value, seen.get(token))
            seen[token] = value
            assert decode_token(token) == value


def test_empty_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_token("")
