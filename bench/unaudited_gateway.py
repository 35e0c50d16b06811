"""The gateway with its audit record left out: the bound that bench/audit_bound.py
measures the real gateway against.

It builds `nats-gateway serve`'s own Gateway from the same config file and changes one
thing: the callout handler's audit sink returns at once instead of committing a record.
Every other step (the request's signature and xkey checks, the envelope, identity,
policy, signing, metrics) is the production code, so the difference between this and
the gateway is what the durable record costs a connect.

    python bench/unaudited_gateway.py --config FILE

A measuring instrument, never a way to run the gateway: it decides without an audit
trail, which the product never does (there is no setting for it).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from gateway.audit.record import AuditRecord
from gateway.config import load_settings
from gateway.heap import settle_heap_for_serving
from gateway.runtime import Gateway


async def _record_nothing(record: AuditRecord, deadline: float | None) -> None:
    """The audit sink replaced: nothing is written, nothing is waited for."""


async def serve(config: Path) -> None:
    gateway = Gateway(load_settings(config))
    if (getattr(gateway.handler, "_audit", None) != gateway.writer.write
            or getattr(gateway.handler, "_audit_alone", None) != gateway.writer.write_alone):
        # A renamed attribute would leave the record in and make the bound meaningless.
        raise SystemExit("unaudited_gateway: CalloutHandler no longer keeps its audit sinks "
                         "in `_audit` and `_audit_alone`; update this instrument")
    # The one change (no public switch exists): both sinks, the shared and the alone one.
    gateway.handler._audit = gateway.handler._audit_alone = _record_nothing
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await gateway.start()
    settle_heap_for_serving()
    try:
        await stop.wait()
    finally:
        await gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--workers", type=int, choices=[1], default=1,
                        help="one process only (accepted for the bench's launcher)")
    args = parser.parse_args()
    asyncio.run(serve(args.config))


if __name__ == "__main__":
    main()
