"""Target 5 of bench/run.py, "policies scale", measured with bench/policy_decide.py's own
functions: uncached decide p50 at 1,006 and 10,006 policies, the event-loop stall while
1,006 policies reload as the gateway reloads them, and whether the decision cache keeps
what a reload cannot change.

It runs in a child process: the stall probe settles the heap as a serving gateway does
(``gc.freeze()`` and a higher threshold), which must not carry over into the process
that times client connects, and the decisions are timed away from the run's clients."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from policy_decide import cache_survival, measure, stalls  # bench/ is on sys.path

__all__ = ["DECIDE_LIMITS_US", "RELOAD_STALL_LIMIT_MS", "PolicyTargets", "policy_targets"]

# Team policies (the shipped examples add 6) -> the uncached decide p50 each may take.
DECIDE_LIMITS_US = {1000: 100.0, 10_000: 300.0}
RELOAD_STALL_LIMIT_MS = 20.0


@dataclass
class PolicyTargets:
    decide_p50_us: dict[int, float]  # policies in the set -> uncached decide p50
    decide_limit_us: dict[int, float]  # policies in the set -> its limit
    reload_stalls_ms: list[float]  # worst loop lateness per reload of 1,006 policies
    idle_stalls_ms: list[float]  # the same probe with nothing reloading: the noise
    cache_entries: int
    cache_kept: int  # answered from the cache after the reload
    cache_edited: int  # entries of the edited team: the only ones a reload may change

    @property
    def decide_met(self) -> bool:
        return all(self.decide_p50_us[n] <= limit for n, limit in self.decide_limit_us.items())

    @property
    def reload_met(self) -> bool:
        return max(self.reload_stalls_ms) <= RELOAD_STALL_LIMIT_MS

    @property
    def cache_met(self) -> bool:
        return self.cache_kept == self.cache_entries - self.cache_edited

    @property
    def met(self) -> bool:
        return self.decide_met and self.reload_met and self.cache_met


def _measured_here(decisions: int, reloads: int) -> PolicyTargets:
    p50s, limits = {}, {}
    for teams, limit in DECIDE_LIMITS_US.items():
        row = measure(teams, decisions, loads=1)  # one load each: the loads are not judged
        p50s[int(row["policies"])] = row["p50_us"]
        limits[int(row["policies"])] = limit
    stall = stalls(reloads)
    cache = cache_survival()
    return PolicyTargets(p50s, limits, stall["isolated"], stall["idle"],
                         int(cache["entries"]), int(cache["kept"]),
                         int(cache["edited_entries"]))


def policy_targets(decisions: int, reloads: int) -> PolicyTargets:
    """``decisions`` uncached decisions per size, ``reloads`` reloads, in a child process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(_measured_here, decisions, reloads).result()
