"""xkey: the curve25519 encryption of auth callout requests and responses.

Wire format (nats-io/nkeys ``xkv1``): ``b"xkv1" || 24-byte nonce || NaCl box``, the box
made with the sender's curve private key and the recipient's public key. nats-server
seals each request to the gateway's xkey and names its own (per-process) curve key in
the ``Nats-Server-Xkey`` header; the response is sealed back to that key. No I/O.
"""

from __future__ import annotations

import functools

import nacl.exceptions
import nacl.public
import nacl.utils

from gateway.natsjwt.nkeys import CurveKeyPair, InvalidNkey, Prefix, decode_public

__all__ = ["VERSION_V1", "XKeyError", "open_sealed", "seal"]

VERSION_V1 = b"xkv1"
_NONCE_LEN = nacl.public.Box.NONCE_SIZE
_MAC_LEN = 16  # Poly1305 tag inside every NaCl box


class XKeyError(ValueError):
    """A sealed message cannot be opened, or a recipient key is not a curve key."""


def _box(ours: CurveKeyPair, their_public: str) -> nacl.public.Box:
    return _shared_box(ours.private, their_public)


@functools.lru_cache(maxsize=64)
def _shared_box(private: nacl.public.PrivateKey, their_public: str) -> nacl.public.Box:
    # A Box holds the precomputed shared key; nats-server uses one xkey per process, so
    # caching saves a curve25519 scalar multiplication on every request and response.
    try:
        raw = decode_public(their_public, Prefix.CURVE)
    except InvalidNkey as exc:
        raise XKeyError("peer xkey is not a curve public key") from exc
    return nacl.public.Box(private, nacl.public.PublicKey(raw))


def seal(plaintext: bytes, ours: CurveKeyPair, their_public: str) -> bytes:
    nonce = nacl.utils.random(_NONCE_LEN)
    return VERSION_V1 + bytes(_box(ours, their_public).encrypt(plaintext, nonce))


def open_sealed(sealed: bytes, ours: CurveKeyPair, their_public: str) -> bytes:
    if not sealed.startswith(VERSION_V1):
        raise XKeyError("sealed message lacks the xkv1 version tag")
    body = sealed[len(VERSION_V1) :]
    if len(body) < _NONCE_LEN + _MAC_LEN:
        raise XKeyError("sealed message is too short")
    try:
        return _box(ours, their_public).decrypt(body[_NONCE_LEN:], body[:_NONCE_LEN])
    except nacl.exceptions.CryptoError as exc:
        raise XKeyError("sealed message does not open with this key pair") from exc
