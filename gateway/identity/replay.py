"""A bounded, single-use memory of proof fingerprints for the signing window.

A signed STS request stays valid at STS for 15 minutes; anyone who captures one (a log,
a proxy, a core dump) could present it again. Vault accepts that; this gateway does not:
each proof is accepted once per gateway process. Entries expire with the window. When
the cache is full of live entries, new proofs are refused (fail closed) rather than an
old entry forgotten, which would reopen the replay. Several replicas do not share the
cache: a captured proof could be used once per replica within its window
(docs/security.md). Thread-safe; time is passed in.

A proof takes its slot when its verification starts, so a second copy presented while
the first is still at STS is refused, and keeps it only once verified: the caller
releases the slot of a proof that STS refused (or that timed out or failed), which used
nothing up. Otherwise anyone could fill the cache with forged proofs (the gateway id is
public) and lock every worker out with ``replay_cache_full`` (issue 18).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from gateway.errors import CredentialError, IdentityUnavailable

__all__ = ["ReplayCache"]


class ReplayCache:
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def _forget_expired(self, now: float) -> None:
        # Insertion order is close to expiry order (same window); stop at the first live one.
        while self._expiry:
            key, expires = next(iter(self._expiry.items()))
            if expires > now:
                return
            del self._expiry[key]

    def use(self, fingerprint: str, *, expires: float, now: float) -> None:
        """Take the slot of a first use; CredentialError on a second use within the window
        (or while the first is in flight); IdentityUnavailable when the cache is full."""
        with self._lock:
            self._forget_expired(now)
            if fingerprint in self._expiry:
                raise CredentialError("aws proof was already used", code="replayed_aws_proof")
            if len(self._expiry) >= self._max:
                raise IdentityUnavailable("replay cache is full; refusing new proofs",
                                          code="replay_cache_full")
            self._expiry[fingerprint] = expires

    def release(self, fingerprint: str) -> None:
        """Give back the slot of a proof that was not accepted: it may be presented again."""
        with self._lock:
            self._expiry.pop(fingerprint, None)
