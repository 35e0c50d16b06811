"""Console sessions, held by the server: the browser holds only a random session id.

A sign-in posts the credential once; what is kept is who signed in (the API's caller
name: an API token's digest prefix, or the OIDC principal), the role, and a CSRF token,
keyed by the SHA-256 of the session id, so the table holds nothing a browser could
present. A session ends when idle for ``idle`` seconds, ``max_age`` after sign-in, or
when the credential it came from expires (an OIDC token's ``exp``), whichever is first.
The table is bounded: a sign-in that finds it full ends the oldest session.
In memory and per process: a restart signs everyone out (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.api.auth import Caller

__all__ = ["Session", "SessionStore"]


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class Session:
    caller: Caller
    csrf: str
    created: float
    last_seen: float
    ends: float

    def csrf_matches(self, given: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), given.encode())


class SessionStore:
    """Thread-safe: pages run both on the event loop and in worker threads."""

    def __init__(self, *, idle: float, max_age: float, capacity: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._idle, self._max_age, self._capacity = idle, max_age, capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def open(self, caller: Caller) -> tuple[str, Session]:
        """A new session for ``caller``: its id (for the cookie only) and the session."""
        now = self._clock()
        ends = now + self._max_age
        if caller.expires is not None:
            ends = min(ends, caller.expires)
        session = Session(caller, secrets.token_urlsafe(32), now, now, ends)
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sweep(now)
            while len(self._sessions) >= self._capacity:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].created)
                del self._sessions[oldest]
            self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of ``session_id`` (now marked used), or None: unknown, idle
        too long, too old, or its credential expired."""
        now = self._clock()
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if not self._alive(session, now):
                del self._sessions[key]
                return None
            session.last_seen = now
            return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _alive(self, session: Session, now: float) -> bool:
        return now - session.last_seen < self._idle and now < session.ends

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if not self._alive(s, now)]:
            del self._sessions[key]
