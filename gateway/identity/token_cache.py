"""Tokens that already passed every OIDC check, kept until they expire.

A worker presents the same token on every (re)connect until it rotates it (Kubernetes
projected tokens live an hour), so after the first full verification the gateway keeps
the result under the token's SHA-256 (never the token). A hit is only a shortcut past
the expensive parts (parsing, the RSA/ECDSA signature); the verifier still re-checks,
on every use, what can change while a token is cached: the time checks (expiry,
not-before, lifetime, against the current clock) and that the signing key is still in
the issuer's current JWKS (a key the issuer removed, as on a compromise, no longer
vouches for its tokens). Failures are never cached. The size is bounded; expired
entries and then the least recently used are evicted first. Expired entries are swept
at most once per ``_SWEEP_SECONDS`` (a sweep reads every entry): a full cache of
workers that all keep reconnecting must not pay a scan of it per new token.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway.identity.model import Identity

__all__ = ["CachedToken", "TokenCache"]

_SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class CachedToken:
    identity: Identity
    kid: str | None
    jwk: dict[str, Any]


class TokenCache:
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, CachedToken] = OrderedDict()
        self._swept_at: float | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token_hash: str) -> CachedToken | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
            self._entries.move_to_end(token_hash)
        return entry

    def put(self, token_hash: str, entry: CachedToken, now: float) -> None:
        if self._max <= 0:
            return
        self._entries[token_hash] = entry
        self._entries.move_to_end(token_hash)
        if len(self._entries) > self._max:
            self._evict(now)

    def discard(self, token_hash: str) -> None:
        self._entries.pop(token_hash, None)

    def _evict(self, now: float) -> None:
        if self._swept_at is None or now - self._swept_at >= _SWEEP_SECONDS:
            self._swept_at = now
            expired = [key for key, entry in self._entries.items()
                       if entry.identity.expires < now]
            for key in expired:
                del self._entries[key]
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
