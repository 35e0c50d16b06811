"""The verified-token cache is bounded: expired entries go first, then the oldest."""

from __future__ import annotations

from gateway.identity.model import Identity
from gateway.identity.token_cache import CachedToken, TokenCache


def _entry(expires: int) -> CachedToken:
    identity = Identity(method="oidc", issuer="https://i", subject="s", expires=expires,
                        fingerprint="sha256:x")
    return CachedToken(identity, "kid", {"kty": "RSA"})


def test_full_cache_drops_expired_entries_before_live_ones() -> None:
    cache = TokenCache(2)
    cache.put("expired", _entry(expires=100), now=50)
    cache.put("live", _entry(expires=1000), now=50)
    cache.put("new", _entry(expires=1000), now=500)
    assert (cache.get("expired"), len(cache)) == (None, 2)
    assert cache.get("live") is not None and cache.get("new") is not None


def test_full_cache_of_live_entries_drops_the_oldest() -> None:
    cache = TokenCache(2)
    for name in ("a", "b", "c"):
        cache.put(name, _entry(expires=1000), now=0)
    assert [cache.get(n) is not None for n in ("a", "b", "c")] == [False, True, True]


def test_size_zero_keeps_nothing() -> None:
    cache = TokenCache(0)
    cache.put("a", _entry(expires=1000), now=0)
    assert (len(cache), cache.get("a")) == (0, None)
