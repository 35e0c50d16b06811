"""Client load for the connect benchmarks: one client at a time, and storms spread over
several client processes (one Python process cannot open connections as fast as
nats-server and a callout service can take them).

A :class:`Credential` is plain data so it can cross into client processes; each connect
asks it for fresh connect options (an IAM proof is single use, so one is signed per
connect, in the client, as a worker would).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nats

__all__ = ["Credential", "SequentialResult", "StormResult", "add_load_arguments", "percentile",
           "sequential", "storm", "wait_ready"]


@dataclass(frozen=True)
class Credential:
    kind: str  # "password", "token", "tokens" or "aws_iam"
    user: str = ""
    password: str = ""
    token: str = ""
    # "tokens": one per connect, in turn, starting again after the last: many distinct
    # workers from one client process
    tokens: tuple[str, ...] = ()
    # aws_iam: (sts_url, region, gateway_id, access key, secret, session token)
    aws: tuple[str, str, str, str, str, str] | None = None
    ca_file: str = ""  # connect over TLS, trusting this CA (one context per process)

    def share(self, index: int, of: int) -> Credential:
        """What client process ``index`` of ``of`` presents: for "tokens", every
        ``of``-th worker from its own first, so the processes together cycle over all
        of them instead of each over the same first few; else the same credential."""
        if self.kind != "tokens":
            return self
        return replace(self, tokens=self.tokens[index::of])

    def options(self) -> Callable[[], dict[str, Any]]:
        plain = self._plain_options()
        if not self.ca_file:
            return plain
        import ssl

        context = ssl.create_default_context(cafile=self.ca_file)
        return lambda: {**plain(), "tls": context}

    def _plain_options(self) -> Callable[[], dict[str, Any]]:
        if self.kind == "password":
            return lambda: {"user": self.user, "password": self.password}
        if self.kind == "token":
            return lambda: {"token": self.token}
        if self.kind == "tokens":
            in_turn = itertools.cycle(self.tokens)
            return lambda: {"token": next(in_turn)}
        return self._aws_options()

    def _aws_options(self) -> Callable[[], dict[str, Any]]:
        import boto3

        from gateway.client import aws_iam_envelope

        assert self.aws is not None
        sts_url, region, gateway_id, key, secret, session_token = self.aws
        session = boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                aws_session_token=session_token, region_name=region)

        def proof() -> str:  # called by nats-py at connect: fresh and single use
            return aws_iam_envelope(dag_id="etl", task_id="load", gateway_id=gateway_id,
                                    region=region, sts_endpoint=sts_url, session=session)

        return lambda: {"token": proof}


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _connect_once(url: str, options: dict[str, Any], timeout: float) -> float:
    started = time.perf_counter()
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                            connect_timeout=timeout, **options)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed * 1000


def wait_ready(url: str, credential: Credential, timeout: float = 60.0) -> None:
    """Return after one connect succeeds (the responder is subscribed): one grant, which
    callers that count audit records must add."""
    options = credential.options()

    async def attempt() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await _connect_once(url, options(), timeout=2)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no callout responder answered within {timeout}s: "
                                       f"{exc}") from exc
                await asyncio.sleep(0.2)

    asyncio.run(attempt())


@dataclass
class SequentialResult:
    latencies: list[float] = field(default_factory=list)  # ms, the successful connects'
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


async def _sequential(url: str, credential: Credential, connects: int,
                      warmup: int) -> SequentialResult:
    options = credential.options()
    result = SequentialResult()
    for index in range(warmup + connects):
        try:
            elapsed = await _connect_once(url, options(), timeout=5)
        except Exception as exc:  # counted: one failed connect must not end a long run
            result.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
            continue
        if index >= warmup:
            result.latencies.append(elapsed)
    return result


def sequential(url: str, credential: Credential, connects: int,
               warmup: int) -> SequentialResult:
    """Connect latencies in ms, one connect at a time; a failed connect (warm-up or not)
    is counted in ``failures`` and leaves no sample."""
    result = asyncio.run(_sequential(url, credential, connects, warmup))
    for failure, count in result.failures.most_common(3):
        print(f"  one-at-a-time failure x{count}: {failure}", flush=True)
    return result


@dataclass
class StormResult:
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0

    @property
    def connects_per_second(self) -> float:
        return len(self.latencies) / max(self.finished - self.started, 1e-9)


async def _storm_part(url: str, credential: Credential, total: int, in_flight: int,
                      start_at: float) -> StormResult:
    options = credential.options()
    result = StormResult()
    remaining = iter(range(total))

    async def worker() -> None:
        for _ in remaining:
            try:
                result.latencies.append(await _connect_once(url, options(), timeout=10))
            except Exception as exc:
                result.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1

    await asyncio.sleep(max(0.0, start_at - time.time()))
    result.started = time.time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    result.finished = time.time()
    return result


def _storm_process(args: tuple[str, Credential, int, int, float]) -> StormResult:
    return asyncio.run(_storm_part(*args))


def storm(url: str, credential: Credential, total: int, in_flight: int,
          processes: int) -> StormResult:
    """``total`` connects with ``in_flight`` outstanding at once, over ``processes``
    client processes that start together; connects/s is over the whole storm."""
    start_at = time.time() + 2.0  # every process is up and waiting before the first connect
    parts = [(url, credential.share(i, processes), total // processes + (i < total % processes),
              in_flight // processes + (i < in_flight % processes), start_at)
             for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_storm_process, parts)
    merged = StormResult(started=min(r.started for r in results),
                         finished=max(r.finished for r in results))
    for part in results:
        merged.latencies.extend(part.latencies)
        merged.failures.update(part.failures)
    return merged


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The load every connect benchmark applies, with the same defaults everywhere, so
    figures from different scripts stay comparable."""
    parser.add_argument("--connects", type=int, default=1000,
                        help="connects one at a time (after --warmup)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--storm", type=int, default=5000, help="connects in a storm")
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--client-processes", type=int, default=2)
