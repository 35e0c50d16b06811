"""When the gateway refuses a worker: how long it waits, when it gives up, what it says.

nats-server reports a refused CONNECT to the client only as ``Authorization Violation``;
the reason is in the gateway's audit record, never on the wire (DESIGN section 6). A
callout that timed out (a reconnect storm) reads exactly the same, so a worker cannot
tell "no" from "too busy": it retries a few times, waiting longer each time, and then
stops with :class:`GatewayRefused`, which says where the reason is.

    GatewayRefused     the gateway refused this identity or scope, attempt after attempt
                       (raised by the first connect; after a successful connect it is
                       delivered to the error callback and the connection is closed)

Pure: no I/O, the random source is injectable.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from gateway.envelope import Scope

__all__ = ["GatewayRefused", "RefusalPolicy", "backoff_delay"]

# nats-server unreachable (restarting): come back soon once it is up again. Measured in
# the reconnect-storm benchmark (docs/benchmarks.md); refusals use RefusalPolicy's cap.
UNREACHABLE_CAP_SECONDS = 8.0
_MAX_DOUBLINGS = 16  # 2**16 * base is far past any cap; avoids huge floats


@dataclass(frozen=True)
class RefusalPolicy:
    """How many refusals a worker takes before it stops, and how long it waits.

    ``connect_attempts``: the first connect raises after this many refusals in a row
    (more than one, because a callout that timed out in a storm looks like a refusal).
    ``give_up_after``: once connected, the client closes after this many refusals since
    its last accepted (re)connect. ``backoff_cap_seconds``: the longest wait before a
    reconnect that follows a refusal (full jitter, doubling from ``reconnect_time_wait``).
    """

    connect_attempts: int = 3
    give_up_after: int = 10
    backoff_cap_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.connect_attempts < 1 or self.give_up_after < 1:
            raise ValueError("refusal limits must be at least 1")
        if not self.backoff_cap_seconds > 0:
            raise ValueError("the backoff cap must be positive")


def backoff_delay(attempt: int, base: float, cap: float,
                  uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Full jitter: a random wait in [0, min(cap, base * 2**attempt)]. Workers refused or
    cut off at the same instant (a restart, a revoked policy) spread their retries
    instead of all hitting the gateway together."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 0), _MAX_DOUBLINGS))
    return uniform(0, ceiling)


class GatewayRefused(Exception):
    """The gateway refused this worker's identity or requested scope ``refusals`` times
    in a row (or its callout timed out each time). The reason is in the audit log."""

    def __init__(self, scope: Scope, refusals: int, *, reconnecting: bool) -> None:
        super().__init__(scope, refusals, reconnecting)
        self.scope = scope
        self.refusals = refusals
        self.reconnecting = reconnecting

    def audit_query(self) -> str:
        """The audit API request that lists these denials (scope ids are validated by the
        envelope's rules; they are URL-encoded all the same)."""
        query = {"decision": "deny", "dag": self.scope.dag_id, "task": self.scope.task_id}
        return f"GET /v1/grants?{urlencode(query)}"

    def __str__(self) -> str:
        scope = f"dag `{self.scope.dag_id}` task `{self.scope.task_id}`"
        if self.scope.run_id:
            scope += f" run `{self.scope.run_id}`"
        if self.reconnecting:
            what = (f"the gateway refused to reconnect this worker as {scope} "
                    f"{self.refusals} times in a row and the client gave up: its rights were "
                    "revoked, its credential is no longer accepted, or the gateway kept "
                    "timing out")
        else:
            what = (f"the gateway refused to connect this worker as {scope} "
                    f"{self.refusals} times in a row: this identity may not act for this "
                    "scope, or its credential was rejected (a callout that timed out "
                    "looks the same)")
        return f"{what}; the reason is in the gateway's audit log: {self.audit_query()}"
