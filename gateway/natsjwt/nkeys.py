"""NATS nkeys: the text encoding of ed25519 and curve25519 keys.

An nkey is base32 (RFC 4648, no padding) of ``prefix byte(s) || raw key || crc16``,
where the CRC is CRC-16/XMODEM little-endian. Public keys carry one prefix byte
(``N`` server, ``A`` account, ``U`` user, ``O`` operator, ``X`` curve); seeds carry
two (``S`` then the public type), so an account seed reads ``SA...``.

The PyPI ``nkeys`` package has no curve keys and no key generation, so the codec
lives here and is cross-checked against that package and the real nats-server in
tests. No I/O.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import re
from dataclasses import dataclass

import nacl.exceptions
import nacl.public
import nacl.signing

__all__ = [
    "CurveKeyPair",
    "InvalidNkey",
    "Prefix",
    "SigningKeyPair",
    "decode_public",
    "encode_public",
    "is_valid_public",
    "verify_signature",
]

_SEED_PREFIX = 18 << 3  # base32-encodes to 'S'
_BASE32 = re.compile("[A-Z2-7]+")
# RFC 4648 base32 digits to the digits int(..., 32) reads (0-9, A-V), value for value.
_TO_BASE32HEX = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                              "0123456789ABCDEFGHIJKLMNOPQRSTUV")


class Prefix(enum.IntEnum):
    """The public-key type byte; its base32 rendering is the key's first letter."""

    SERVER = 13 << 3  # N
    ACCOUNT = 0  # A
    USER = 20 << 3  # U
    OPERATOR = 14 << 3  # O
    CURVE = 23 << 3  # X


class InvalidNkey(ValueError):
    """A string is not a well-formed nkey of the expected type."""


def _crc16(data: bytes) -> int:
    # CRC-16/XMODEM is binascii's CRC-CCITT with a zero start: C speed, on every request.
    return binascii.crc_hqx(data, 0)


def _b32encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _b32decode(text: str) -> bytes:
    if not text or not text.isascii() or not text.isalnum() or text != text.upper():
        raise InvalidNkey("not base32 text")
    bits = len(text) * 5
    if bits % 8 == 0 and _BASE32.fullmatch(text):
        # No padding, no spare bits (a public key: 56 characters, 35 bytes): the same
        # bytes as base64.b32decode, through int() in C instead of a Python loop.
        return int(text.translate(_TO_BASE32HEX), 32).to_bytes(bits // 8, "big")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as exc:
        raise InvalidNkey("not base32 text") from exc


def _with_crc(body: bytes) -> bytes:
    return body + _crc16(body).to_bytes(2, "little")


def _strip_crc(raw: bytes) -> bytes:
    if len(raw) < 3:
        raise InvalidNkey("too short")
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if _crc16(body) != crc:
        raise InvalidNkey("checksum mismatch")
    return body


def encode_public(prefix: Prefix, raw: bytes) -> str:
    if len(raw) != 32:
        raise InvalidNkey("a public key is 32 bytes")
    return _b32encode(_with_crc(bytes([prefix]) + raw))


@functools.lru_cache(maxsize=256)
def decode_public(text: str, expected: Prefix) -> bytes:
    """Return the raw 32-byte key of ``text`` if it is a public nkey of type ``expected``.
    Cached: the server's key is decoded twice for every auth request it signs."""
    body = _strip_crc(_b32decode(text))
    if len(body) != 33 or body[0] != expected:
        raise InvalidNkey(f"not a {expected.name.lower()} public key")
    return body[1:]


def is_valid_public(text: str, expected: Prefix) -> bool:
    try:
        decode_public(text, expected)
    except InvalidNkey:
        return False
    return True


def _encode_seed(prefix: Prefix, raw: bytes) -> str:
    b1 = _SEED_PREFIX | (prefix >> 5)
    b2 = (prefix & 31) << 3
    return _b32encode(_with_crc(bytes([b1, b2]) + raw))


def _decode_seed(text: str, expected: Prefix) -> bytes:
    body = _strip_crc(_b32decode(text))
    if len(body) != 34:
        raise InvalidNkey("a seed is 32 bytes")
    if body[0] & 0xF8 != _SEED_PREFIX:
        raise InvalidNkey("not a seed")
    prefix = ((body[0] & 0x07) << 5) | ((body[1] & 0xF8) >> 3)
    if prefix != expected:
        raise InvalidNkey(f"not a {expected.name.lower()} seed")
    return body[2:]


def verify_signature(public_key: str, prefix: Prefix, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s ed25519 signature over ``data``."""
    try:
        _verify_key(public_key, prefix).verify(data, signature)
    except (InvalidNkey, nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=256)
def _verify_key(public_key: str, prefix: Prefix) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(decode_public(public_key, prefix))


@dataclass(frozen=True, repr=False)
class SigningKeyPair:
    """An ed25519 nkey pair (account, user, operator or server). ``repr`` hides the seed."""

    prefix: Prefix
    _key: nacl.signing.SigningKey

    @classmethod
    def generate(cls, prefix: Prefix) -> SigningKeyPair:
        if prefix is Prefix.CURVE:
            raise InvalidNkey("curve keys do not sign")
        return cls(prefix, nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: str, prefix: Prefix) -> SigningKeyPair:
        raw = _decode_seed(seed.strip(), prefix)
        return cls(prefix, nacl.signing.SigningKey(raw))

    @functools.cached_property
    def public_key(self) -> str:  # cached: it goes into every JWT this key signs
        return encode_public(self.prefix, bytes(self._key.verify_key))

    @property
    def seed(self) -> str:
        return _encode_seed(self.prefix, bytes(self._key))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data).signature

    def __repr__(self) -> str:
        return f"SigningKeyPair({self.public_key})"


@dataclass(frozen=True, repr=False)
class CurveKeyPair:
    """A curve25519 nkey pair (``X...``) used for xkey encryption. ``repr`` hides the seed."""

    _key: nacl.public.PrivateKey

    @classmethod
    def generate(cls) -> CurveKeyPair:
        return cls(nacl.public.PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: str) -> CurveKeyPair:
        return cls(nacl.public.PrivateKey(_decode_seed(seed.strip(), Prefix.CURVE)))

    @functools.cached_property
    def public_key(self) -> str:
        return encode_public(Prefix.CURVE, bytes(self._key.public_key))

    @property
    def seed(self) -> str:
        return _encode_seed(Prefix.CURVE, bytes(self._key))

    @property
    def private(self) -> nacl.public.PrivateKey:
        return self._key

    def __repr__(self) -> str:
        return f"CurveKeyPair({self.public_key})"
