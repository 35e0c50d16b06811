"""The live policy set: loaded at start, reloaded on file change and on request (SIGHUP).

An invalid set never replaces the last good one: the failure is logged, counted and kept
in :meth:`PolicyHolder.status` (shown on ``/readyz`` and ``GET /v1/policies``) until a
good set loads. Change detection polls a cheap stat signature of the directory (names,
sizes, mtimes, inodes; symlinks followed, so Kubernetes ConfigMap swaps are seen) and only
then reads the files; a set whose content hash is unchanged is not swapped.

A reload loads in a child process (offload.py) by default: parsing and validation hold
the GIL in long C calls, which from a thread of this process would stall the event loop.
The first load, before the gateway serves, runs in this process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.policy.load import PolicyLoadError, PolicySet, load_policy_dir
from gateway.policy.offload import load_policy_dir_isolated

__all__ = ["PolicyHolder", "watch_policies"]

log = logging.getLogger(__name__)

_Signature = tuple[tuple[str, int, int, int], ...]


def _signature(directory: Path) -> _Signature:
    entries = []
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"})
    except OSError:
        return ()
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            entries.append((path.name, -1, -1, -1))
            continue
        entries.append((path.name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(entries)


@dataclass(frozen=True)
class ReloadFailure:
    problems: tuple[str, ...]
    at: float
    trigger: str


class PolicyHolder:
    """Holds the current good PolicySet; thread-safe (reloads run off the event loop)."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time,
                 loader: Callable[[Path], PolicySet] = load_policy_dir_isolated) -> None:
        self._directory = directory
        self._clock = clock
        self._loader = loader
        self._lock = threading.Lock()
        self._signature = _signature(directory)
        self._current = load_policy_dir(directory)  # a broken set at start is fatal
        self._loaded_at = clock()
        self._failure: ReloadFailure | None = None
        self._reloads = 0
        self._failures = 0

    def current(self) -> PolicySet:
        return self._current

    def reload(self, trigger: str) -> bool:
        """Load the directory now; True if a new set took effect."""
        with self._lock:
            self._signature = _signature(self._directory)
            try:
                loaded = self._loader(self._directory)
            except PolicyLoadError as exc:
                self._failures += 1
                self._failure = ReloadFailure(tuple(exc.problems), self._clock(), trigger)
                log.error("policy reload (%s) failed, keeping %s: %s", trigger,
                          self._current.content_hash[:19], "; ".join(exc.problems))
                return False
            self._failure = None
            if loaded.content_hash == self._current.content_hash:
                return False
            previous, self._current = self._current, loaded
            self._loaded_at = self._clock()
            self._reloads += 1
        log.info("policy reload (%s): %d policies, %s replaces %s", trigger,
                 len(loaded.policies), loaded.content_hash[:19], previous.content_hash[:19])
        return True

    def poll(self) -> bool:
        """Reload if the directory's stat signature changed since the last look."""
        if _signature(self._directory) == self._signature:
            return False
        return self.reload("file change")

    @property
    def healthy(self) -> bool:
        return self._failure is None

    def status(self) -> dict[str, Any]:
        current, failure = self._current, self._failure
        return {
            "status": "ok" if failure is None else "stale",
            "directory": str(self._directory),
            "content_hash": current.content_hash,
            "policies": [
                {"id": p.id, "source": current.sources.get(p.id, "")} for p in current.policies
            ],
            "files": list(current.files),
            "loaded_at": self._loaded_at,
            "reloads": self._reloads,
            "reload_failures": self._failures,
            "last_error": None if failure is None else {
                "problems": list(failure.problems), "at": failure.at,
                "trigger": failure.trigger,
            },
        }


async def watch_policies(holder: PolicyHolder, interval_seconds: float) -> None:
    """Poll for changes until cancelled; file reads and parsing run in a worker thread."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await asyncio.to_thread(holder.poll)
        except Exception:  # a watcher that dies silently would freeze the policies
            log.exception("policy watcher error; retrying")
