"""The collector settings a serving process applies once started (process-wide, so each
case runs in a fresh interpreter, never in the test process)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
from gateway.heap import GC_YOUNG_THRESHOLD, settle_heap_for_serving

before = gc.get_threshold()
settle_heap_for_serving()
frozen = gc.get_freeze_count()

class Node:
    pass

# A reference cycle made after startup: only the cyclic collector can free it.
a, b = Node(), Node()
a.other, b.other = b, a
del a, b
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen,
                  "young": GC_YOUNG_THRESHOLD, "collected": gc.collect()}))
"""


def _run() -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=60)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_startup_objects_are_frozen_and_young_collections_are_rarer() -> None:
    result = _run()
    before, after = result["before"], result["after"]
    assert isinstance(before, list) and isinstance(after, list)
    assert after == [result["young"], *before[1:]]
    assert after[0] > before[0]
    assert isinstance(result["frozen"], int) and result["frozen"] > 1000


def test_garbage_made_after_startup_is_still_collected() -> None:
    collected = _run()["collected"]
    assert isinstance(collected, int) and collected >= 2
