"""How long the event loop spends refusing a hostile ``aws_iam`` proof (issue 18).

    .venv/bin/python bench/hostile_proof.py

Each shape fills what an envelope carries (16 KiB, a 12 KiB proof): as many distinct
header keys as fit, as many distinct top-level keys, and nesting as deep as fits. The
time is the envelope parse plus
the proof check, i.e. what one connect costs the loop before any STS call; a valid
proof is measured alongside for scale. Prints one line per shape (median of the runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import boto3

from gateway.client.aws import aws_iam_proof
from gateway.envelope import (
    MAX_ENVELOPE_BYTES,
    MAX_PROOF_BYTES,
    Scope,
    build_envelope,
    parse_envelope,
)
from gateway.errors import CredentialError
from gateway.identity.aws_proof import check_proof

HOST = "127.0.0.1:5999"
_ENVELOPE_OVERHEAD = 100  # version, method, scope


def _escaped(text: str) -> int:
    return len(json.dumps(text)) - 2


def _fill(item: Callable[[int], str], opening: str, closing: str) -> str:
    """The longest ``opening item(0),item(1),... closing`` that still fits an envelope
    (the proof is a JSON string there: its quotes are escaped)."""
    items: list[str] = []
    size = _escaped(opening) + _escaped(closing) + _ENVELOPE_OVERHEAD
    raw = len(opening) + len(closing)
    while True:
        nxt = item(len(items))
        if (size + _escaped(nxt) + 1 > MAX_ENVELOPE_BYTES
                or raw + len(nxt) + 1 > MAX_PROOF_BYTES):
            return opening + ",".join(items) + closing
        items.append(nxt)
        size += _escaped(nxt) + 1
        raw += len(nxt) + 1


def _valid() -> str:
    # Dummy credentials: the proof is signed, checked for shape, never sent.
    session = boto3.Session(aws_access_key_id="ASIAEXAMPLEEXAMPLE12",
                            aws_secret_access_key="s",  # noqa: S106 - dummy, see above
                            aws_session_token="token",  # noqa: S106 - dummy, see above
                            region_name="us-east-1")
    return aws_iam_proof(gateway_id="gw", region="us-east-1", sts_endpoint=f"http://{HOST}",
                         session=session)


def shapes() -> dict[str, str]:
    return {
        "valid": _valid(),
        "many-header-keys": _fill(lambda n: f'"{n:x}":0', '{"body":"","headers":{', "}}"),
        "many-top-keys": _fill(lambda n: f'"{n:x}":0', "{", "}"),
        "deep-nesting": '{"headers":' + "[" * 6_000 + "]" * 6_000 + "}",
    }


def _once(envelope: str) -> float:
    started = time.perf_counter()
    with contextlib.suppress(CredentialError):  # a refusal is the expected outcome
        check_proof(parse_envelope(envelope).proof, gateway_id="gw", host=HOST,
                    now=datetime.now(UTC))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for name, proof in shapes().items():
        envelope = build_envelope("aws_iam", proof, Scope("etl", "load"))
        keys = proof.count(":")
        median = statistics.median(_once(envelope) for _ in range(args.runs))
        print(f"{name:18} {len(envelope):6d} B envelope {keys:5d} keys  "
              f"{median * 1000:8.3f} ms")


if __name__ == "__main__":
    main()
