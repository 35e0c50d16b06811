"""Load a policy directory in a child process, so that a reload never stalls the event loop.

Reading, parsing and validating 1,000 policies is about 0.25 s of CPU, much of it inside
single C calls (libyaml's composer, pydantic-core's validator) that keep the GIL for tens
of milliseconds: in a worker thread of the gateway's own process that stalled every live
decision by as long (docs/benchmarks.md). The child does all of that work. The parent
receives each policy pickled on its own and unpickles them one at a time: short steps,
between which the event loop's thread takes the GIL back.

The child is a fresh interpreter, not a multiprocessing child: those re-run the parent's
main script, which an embedding program may not guard. It sees the parent's ``sys.path``,
lowers its own priority (on a busy host the scheduler, not only the GIL, decides how late
the loop runs) and writes one pickled message to stdout.

What comes back is what :func:`gateway.policy.load.load_policy_dir` returns or raises: the
same set, or PolicyLoadError with the same ``file:line`` problems. A child that crashes,
cannot start or runs past its time limit is a failed load too, so the caller keeps its
last good set: never an empty or partial one.
"""

from __future__ import annotations

import os
import pickle  # only ever our own child's output, read from its stdout pipe
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.policy.load import PolicyLoadError, PolicySet, SubjectKey, load_policy_dir
from gateway.policy.model import Policy

__all__ = ["LOAD_TIMEOUT_SECONDS", "load_policy_dir_isolated"]

LOAD_TIMEOUT_SECONDS = 120.0
_NICENESS = 10
_CHUNK = 32  # policies unpickled between two offers of the GIL (~0.5 ms of work)
# Imported by name, so what is pickled names `gateway.policy.offload._Loaded`, which the
# parent finds (``python -m`` would make it `__main__._Loaded`).
_CHILD = ("import os, sys; os.nice(int(sys.argv[1])); "
          "from gateway.policy.offload import _child_main; _child_main(sys.argv[2:])")


@dataclass(frozen=True)
class _Loaded:
    policies: tuple[bytes, ...]
    """each policy pickled alone, so the parent unpickles in small steps"""
    fingerprints: tuple[str, ...]
    content_hash: str
    files: tuple[str, ...]
    sources: Mapping[str, str]
    subject_sources: Mapping[SubjectKey, str]


@dataclass(frozen=True)
class _Problems:
    problems: tuple[str, ...]


def _load(directory: Path) -> _Loaded | _Problems:
    try:
        loaded = load_policy_dir(directory)
    except PolicyLoadError as exc:
        return _Problems(tuple(exc.problems))
    return _Loaded(tuple(pickle.dumps(policy) for policy in loaded.policies),
                   loaded.index.fingerprints, loaded.content_hash, loaded.files,
                   dict(loaded.sources), dict(loaded.subject_sources))


def _child_main(argv: Sequence[str]) -> None:
    """The child's whole life: load, write one message, exit."""
    directory = argv[0]
    try:
        message: _Loaded | _Problems = _load(Path(directory))
    except Exception as exc:  # reported as a problem: the parent keeps its last good set
        message = _Problems((f"{directory}: the policy loader failed: {exc}",))
    sys.stdout.buffer.write(pickle.dumps(message))
    sys.stdout.buffer.flush()


def _assemble(message: _Loaded) -> PolicySet:
    policies: list[Policy] = []
    for start in range(0, len(message.policies), _CHUNK):
        policies.extend(pickle.loads(blob)  # noqa: S301 - our child, our pipe
                        for blob in message.policies[start:start + _CHUNK])
        # Hand the GIL over now rather than when the interpreter's 5 ms switch interval
        # forces it: the event loop's thread, if it is waiting, runs at once.
        time.sleep(0)
    return PolicySet(tuple(policies), message.content_hash, message.files, message.sources,
                     message.subject_sources, fingerprints=message.fingerprints)


def _run_child(directory: Path, timeout_seconds: float) -> _Loaded | _Problems:
    # The parent's import path, so the child imports this very gateway package.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        done = subprocess.run(  # noqa: S603 - our interpreter, fixed code, no shell
            [sys.executable, "-c", _CHILD, str(_NICENESS), str(directory)],
            capture_output=True, timeout=timeout_seconds, env=env, check=False)
    except subprocess.TimeoutExpired:  # killed by run(): a FIFO named like a policy file
        return _Problems((f"{directory}: loading the policies took longer than "
                          f"{timeout_seconds:g} s",))
    except OSError as exc:
        return _Problems((f"{directory}: cannot start the policy loader: {exc}",))
    try:
        message = pickle.loads(done.stdout)  # noqa: S301 - our child, our pipe
    except Exception:  # crashed, killed, or wrote something else
        return _Problems((f"{directory}: the policy loader ended without a result (exit "
                          f"status {done.returncode})",))
    if not isinstance(message, _Loaded | _Problems):
        return _Problems((f"{directory}: the policy loader sent an unexpected result",))
    return message


def load_policy_dir_isolated(directory: Path, *,
                             timeout_seconds: float = LOAD_TIMEOUT_SECONDS) -> PolicySet:
    """:func:`load_policy_dir` run in a child process; blocks the calling thread (never
    call it on the event loop). Raises PolicyLoadError on any failure."""
    message = _run_child(directory, timeout_seconds)
    if isinstance(message, _Problems):
        raise PolicyLoadError(message.problems)
    return _assemble(message)


