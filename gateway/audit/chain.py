"""Tamper evidence: a hash chain per gateway instance, and signed checkpoints.

Each record carries its position in its instance's chain (``chain_seq``), the previous
record's hash and its own hash over every stored field (canonical JSON). Editing a
record breaks its hash; deleting or inserting one breaks the sequence or the link. An
attacker with database access could recompute a whole chain, so the writer also signs
checkpoints (ed25519, in the spirit of CloudTrail digest files): a signed statement "the
chain of instance I had hash H at position N", which no rewrite can match without the
key. A purge is a signed checkpoint too: the chain restarts verifiably after it.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "GENESIS",
    "CheckpointSigner",
    "checkpoint_payload",
    "public_key_id",
    "record_hash",
    "verify_checkpoint_signature",
]

GENESIS = "sha256:" + "0" * 64
# Everything stored except the row id and the hash itself.
_UNHASHED = frozenset({"seq", "record_hash"})


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def record_hash(row: Mapping[str, Any]) -> str:
    """The hash of a stored row (its database form: permissions and ids as JSON text)."""
    hashed = {k: v for k, v in row.items() if k not in _UNHASHED}
    return "sha256:" + hashlib.sha256(_canonical(hashed)).hexdigest()


def checkpoint_payload(*, instance: str, kind: str, chain_seq: int, record_hash: str,
                       created_at: float, detail: str) -> bytes:
    return _canonical({"instance": instance, "kind": kind, "chain_seq": chain_seq,
                       "record_hash": record_hash, "created_at": created_at,
                       "detail": detail})


def public_key_id(verify_key: VerifyKey) -> str:
    return "ed25519:" + base64.b64encode(bytes(verify_key)).decode()


@dataclass(frozen=True, repr=False)
class CheckpointSigner:
    """An ed25519 key; the seed file holds 64 hex digits (``nats-gateway keys generate``)."""

    key: SigningKey

    @classmethod
    def from_seed_hex(cls, seed_hex: str) -> CheckpointSigner:
        try:
            seed = bytes.fromhex(seed_hex.strip())
        except ValueError:
            raise ValueError("checkpoint key must be 64 hex digits") from None
        if len(seed) != 32:
            raise ValueError("checkpoint key must be 64 hex digits")
        return cls(SigningKey(seed))

    @classmethod
    def generate(cls) -> CheckpointSigner:
        return cls(SigningKey.generate())

    @property
    def seed_hex(self) -> str:
        return bytes(self.key).hex()

    @property
    def public_key(self) -> str:
        return public_key_id(self.key.verify_key)

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self.key.sign(payload).signature).decode()

    def __repr__(self) -> str:
        return f"CheckpointSigner({self.public_key})"


def verify_checkpoint_signature(payload: bytes, signature: str, public_key: str) -> bool:
    if not public_key.startswith("ed25519:"):
        return False
    try:
        key = VerifyKey(base64.b64decode(public_key.removeprefix("ed25519:"), validate=True))
        key.verify(payload, base64.b64decode(signature, validate=True))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
