"""Create the example's stream and the watcher's durable consumer, as an operator does
once (tasks are never granted to create streams, and the example policy does not let
the watcher create its consumer).

    python examples/jetstream/etl_events.py nats://admin:PASSWORD@127.0.0.1:4222

The same with the nats CLI:

    nats stream add ETL_EVENTS --subjects 'events.>' --storage file --retention limits \\
        --max-age 7d --dupe-window 2m --deny-delete --deny-purge --defaults
    nats consumer add ETL_EVENTS 'etl_consumer~etl_complete_watcher' --pull \\
        --filter 'events.etl_producer.>' --ack explicit --wait 60s --max-pending 1000 \\
        --deliver all --replay instant --defaults
"""

from __future__ import annotations

import asyncio
import sys

import nats
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

STREAM = "ETL_EVENTS"
WATCHER_CONSUMER = "etl_consumer~etl_complete_watcher"  # consumer_name(Scope(dag, task))

STREAM_CONFIG = StreamConfig(
    name=STREAM, subjects=["events.>"], storage=StorageType.FILE,
    retention=RetentionPolicy.LIMITS,  # kept for max_age, whoever has read it
    max_age=7 * 24 * 3600.0,
    # A producer's retry within this window is dropped by its Nats-Msg-Id.
    duplicate_window=120.0,
    deny_delete=True, deny_purge=True)  # append-only for clients

CONSUMER_CONFIG = ConsumerConfig(
    durable_name=WATCHER_CONSUMER, filter_subject="events.etl_producer.>",
    ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
    # Longer than the triggerer takes to store an event and ack it (a second or two):
    # a shorter wait redelivers messages that are still being stored.
    ack_wait=60.0, max_ack_pending=1000)


async def create(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(STREAM_CONFIG)
        await js.add_consumer(STREAM, CONSUMER_CONFIG)
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(create(sys.argv[1]))
