"""The garbage collector settings of a process that serves auth callouts."""

from __future__ import annotations

import gc

__all__ = ["GC_YOUNG_THRESHOLD", "settle_heap_for_serving"]

# CPython's default is 700. A decision allocates a few hundred container objects that
# reference counting frees at once; at 700 the collector still ran about 50 times a second
# in a connect storm, each time re-scanning every request in flight.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap_for_serving() -> None:
    """Call once the gateway is started: keep what startup allocated (modules, keys,
    policies, clients) out of the cyclic collector's scans, and collect the young
    generation less often.

    Measured in a 5,000-connect storm (docs/benchmarks.md): the collector took 41 us per
    decision and one full collection stopped the event loop for 132 ms; after this,
    under 2 us per decision and no full collection. Objects created later are collected
    as before; cyclic garbage only waits for a larger young generation. Process-wide, so
    it is the serving process's entry point that calls it, never a library user."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
