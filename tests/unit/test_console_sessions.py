"""Console sessions (gateway/console/sessions.py): idle and absolute expiry, the
credential's own expiry, the bound on how many are held, and what is kept."""

from __future__ import annotations

from gateway.api.auth import Caller
from gateway.console.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def store(clock: Clock, capacity: int = 10) -> SessionStore:
    return SessionStore(idle=30 * 60, max_age=8 * 3600, capacity=capacity, clock=clock)


def test_a_session_ends_when_idle() -> None:
    clock = Clock()
    sessions = store(clock)
    session_id, _ = sessions.open(Caller("api-token:abc", "auditor"))
    clock.now += 29 * 60
    assert sessions.get(session_id) is not None  # used: the idle clock starts again
    clock.now += 29 * 60
    assert sessions.get(session_id) is not None
    clock.now += 30 * 60
    assert sessions.get(session_id) is None
    assert len(sessions) == 0


def test_a_session_in_use_still_ends_at_its_maximum_age() -> None:
    clock = Clock()
    sessions = store(clock)
    session_id, _ = sessions.open(Caller("api-token:abc", "admin"))
    for _ in range(8 * 4 - 1):
        clock.now += 15 * 60
        assert sessions.get(session_id) is not None
    clock.now += 15 * 60
    assert sessions.get(session_id) is None


def test_a_session_never_outlives_the_oidc_token_it_came_from() -> None:
    clock = Clock()
    sessions = store(clock)
    session_id, _ = sessions.open(Caller("idp#alice", "auditor", expires=clock.now + 300))
    clock.now += 299
    assert sessions.get(session_id) is not None
    clock.now += 1
    assert sessions.get(session_id) is None


def test_sign_out_ends_it_and_unknown_ids_are_nobody() -> None:
    clock = Clock()
    sessions = store(clock)
    session_id, _ = sessions.open(Caller("api-token:abc", "auditor"))
    sessions.close(session_id)
    assert sessions.get(session_id) is None
    assert sessions.get("guessed") is None


def test_a_full_table_ends_the_oldest_session() -> None:
    clock = Clock()
    sessions = store(clock, capacity=2)
    first, _ = sessions.open(Caller("a", "auditor"))
    clock.now += 1
    second, _ = sessions.open(Caller("b", "auditor"))
    clock.now += 1
    third, _ = sessions.open(Caller("c", "auditor"))
    assert sessions.get(first) is None
    assert sessions.get(second) is not None and sessions.get(third) is not None


def test_ids_and_csrf_tokens_are_random_and_the_id_is_not_kept() -> None:
    clock = Clock()
    sessions = store(clock)
    opened = [sessions.open(Caller("a", "auditor")) for _ in range(3)]
    assert len({sid for sid, _ in opened}) == 3 and len({s.csrf for _, s in opened}) == 3
    assert all(len(sid) >= 40 for sid, _ in opened)
    held = repr(sessions.__dict__)
    assert not any(sid in held for sid, _ in opened)  # keyed by its digest only
