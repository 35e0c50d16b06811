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


def test_a_hit_keeps_an_entry_from_being_the_next_to_go() -> None:
    cache = TokenCache(2)
    cache.put("a", _entry(expires=1000), now=0)
    cache.put("b", _entry(expires=1000), now=0)
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", _entry(expires=1000), now=0)
    assert [cache.get(n) is not None for n in ("a", "b", "c")] == [True, False, True]


def test_expired_entries_are_swept_at_most_once_a_minute() -> None:
    # A full cache of reconnecting workers must not scan every entry per new token:
    # between sweeps the least recently used entry goes, expired or not.
    cache = TokenCache(2)
    cache.put("a", _entry(expires=1000), now=0)
    cache.put("b", _entry(expires=1000), now=0)
    cache.put("c", _entry(expires=1000), now=0)  # first eviction sweeps: nothing expired
    cache.put("d", _entry(expires=5000), now=1100)  # a minute on: sweeps every expired
    assert len(cache) == 1 and cache.get("d") is not None
    cache.put("e", _entry(expires=1110), now=1100)
    cache.put("f", _entry(expires=5000), now=1120)  # "e" expired, but no sweep yet
    assert [cache.get(n) is not None for n in ("d", "e", "f")] == [False, True, True]
    cache.put("g", _entry(expires=5000), now=1161)  # a minute on: "e" is swept
    assert [cache.get(n) is not None for n in ("e", "f", "g")] == [False, True, True]
