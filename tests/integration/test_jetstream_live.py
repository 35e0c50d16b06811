"""JetStream scoped per DAG and task, against a real nats-server with JetStream and the
real gateway: a task publishes into its stream and reads the PubAck on its private
inbox, creates, reads and acks its own durable consumer, and nats-server refuses it
everything else: another task's consumer (read, info, ack, delete, re-create), the
stream's delete and purge, other tasks' inboxes."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from gateway.client import oidc_envelope
from gateway.client.subjects import consumer_name, inbox_prefix
from gateway.dev.issuer import DevIssuer
from gateway.dev.natsserver import NatsServer
from gateway.envelope import Scope
from gateway.keyfiles import generate_keys
from gateway.natsconf import CalloutServerConfig, render_callout_config
from tests.integration.harness import Stack, Violations

pytestmark = pytest.mark.integration

STREAM = "EVENTS"
LOAD, EXTRACT = Scope("etl", "load"), Scope("etl", "extract")


def _policy(issuer: str) -> str:
    return textwrap.dedent(f"""\
        version: 1
        policies:
          - id: etl-jetstream
            match: {{oidc: {{issuer: {issuer}, subject: "system:serviceaccount:airflow:*"}}}}
            scopes: [{{dag: etl, tasks: [load, extract]}}]
            permissions:
              jetstream:
                publish:
                  - stream: {STREAM}
                    subjects: ["events.{{dag_id}}.{{task_id}}.>"]
                consume:
                  - stream: {STREAM}
                    filter: "events.{{dag_id}}.>"
                    create: true
            ttl_seconds: 600
        """)


def _with_jetstream(config: str, store: Path, admin_password: str) -> str:
    """The gateway's generated config, plus JetStream for APP and a static admin user
    that bypasses the callout (it sets the stream up, as an operator would). The
    generator itself is left alone: this is test setup, not product config."""
    assert "  APP { }\n" in config and "auth_users: [ " in config
    config = config.replace("  APP { }\n", "  APP { jetstream: enabled, users: [ { user: "
                            f'admin, password: "{admin_password}" }} ] }}\n')
    config = config.replace("auth_users: [ ", 'auth_users: [ "admin", ')
    return f'jetstream {{ store_dir: "{store}" }}\n' + config


@pytest.fixture
async def js_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, str]]:
    keys = tmp_path / "keys"
    publics = generate_keys(keys)
    issuer = DevIssuer().start()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "etl.yaml").write_text(_policy(issuer.issuer))
    password = secrets.token_urlsafe(16)
    server = NatsServer(_with_jetstream(render_callout_config(CalloutServerConfig(
        issuer_account=publics.issuer_account, auth_user_nkey=publics.auth_user,
        xkey=publics.xkey, port=-1)), tmp_path / "js", password), workdir=tmp_path / "nats")
    server.start()
    stack = Stack(tmp_path, keys, issuer, server, True, secrets.token_urlsafe(24))
    try:
        await stack.start_gateway()
        admin = await nats.connect(stack.nats_url, user="admin", password=password)
        try:
            await admin.jetstream().add_stream(name=STREAM, subjects=["events.>"],
                                               deny_delete=True, deny_purge=True)
            yield stack, password
        finally:
            await admin.close()
            assert stack.gateway is not None
            await stack.gateway.stop()
    finally:
        server.close()
        issuer.stop()


async def _admin(stack: Stack, password: str) -> Client:
    return await nats.connect(stack.nats_url, user="admin", password=password)


async def _task(stack: Stack, scope: Scope, errors: Violations, *,
                private_inbox: bool = True) -> Client:
    """A worker connected through the gateway; with ``private_inbox`` it sets the inbox
    prefix the policy grants (what gateway.client.connect() must pass to nats-py)."""
    options = {"inbox_prefix": inbox_prefix(scope)} if private_inbox else {}
    nc = Client()
    await nc.connect(stack.nats_url, token=oidc_envelope(stack.token(), dag_id=scope.dag_id,
                                                         task_id=scope.task_id),
                     allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5,
                     error_cb=errors.record, **options)
    return nc


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(250):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _refused(nc: Client, errors: Violations, subject: str, *,
                   kind: str = "publish") -> None:
    """Publish to (or subscribe on) ``subject`` and wait for nats-server's permissions
    violation naming it."""
    if kind == "publish":
        await nc.publish(subject, b"{}", reply=nc.new_inbox())
    else:
        await nc.subscribe(subject)
    await nc.flush()
    # nats-py lowercases the server's error text.
    action = "publish" if kind == "publish" else "subscription"
    expected = f'permissions violation for {action} to "{subject}"'.lower()

    async def reported() -> bool:
        return any(expected in e.lower() for e in errors.errors)

    await _eventually(reported, f"a {kind} violation on {subject}")


async def test_a_task_publishes_into_its_stream_and_reads_the_puback(
        js_stack: tuple[Stack, str]) -> None:
    stack, _ = js_stack
    errors = Violations()
    nc = await _task(stack, LOAD, errors)
    try:
        ack = await nc.jetstream().publish("events.etl.load.done", b"1", stream=STREAM)
        assert (ack.stream, ack.seq) == (STREAM, 1)
        assert not errors.errors
        await _refused(nc, errors, "events.etl.extract.done")  # another task's subjects
    finally:
        await nc.close()


async def test_without_the_private_inbox_prefix_replies_are_refused(
        js_stack: tuple[Stack, str]) -> None:
    """The default `_INBOX.<nuid>` is not the task's: nats-server refuses the reply
    subscription, so the client must set the prefix (gateway.client.subjects.inbox_prefix)."""
    stack, _ = js_stack
    errors = Violations()
    nc = await _task(stack, LOAD, errors, private_inbox=False)
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
            await nc.jetstream(timeout=0.5).publish("events.etl.load.done", b"1")

        async def refused() -> bool:
            return any("permissions violation for subscription to \"_inbox." in e.lower()
                       for e in errors.errors)

        await _eventually(refused, "the default inbox subscription to be refused")
    finally:
        await nc.close()


async def test_a_task_creates_reads_and_acks_its_own_durable_consumer(
        js_stack: tuple[Stack, str]) -> None:
    stack, password = js_stack
    errors = Violations()
    nc = await _task(stack, LOAD, errors)
    admin = await _admin(stack, password)
    try:
        own = consumer_name(LOAD)
        subscription = await nc.jetstream().pull_subscribe(
            "events.etl.>", durable=own, stream=STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
        await admin.jetstream().publish("events.etl.extract.done", b"event", stream=STREAM)
        [message] = await subscription.fetch(1, timeout=5)
        assert message.data == b"event"
        assert re.fullmatch(rf"\$JS\.ACK\.{STREAM}\.{re.escape(own)}\.[0-9.]+", message.reply)
        await message.ack_sync(timeout=5)
        info = await admin.jetstream().consumer_info(STREAM, own)
        assert (info.num_ack_pending, info.config.filter_subject) == (0, "events.etl.>")
        assert not errors.errors

        # Re-creating its own consumer with a wider filter: the permitted create subject
        # pins the filter, and nats-server refuses a body that differs from it.
        request = {"stream_name": STREAM, "config": {
            "name": own, "durable_name": own, "filter_subject": "events.>",
            "ack_policy": "explicit"}}
        reply = await nc.request(f"$JS.API.CONSUMER.CREATE.{STREAM}.{own}.events.etl.>",
                                 json.dumps(request).encode(), timeout=5)
        assert json.loads(reply.data)["error"]["err_code"] == 10131
        info = await admin.jetstream().consumer_info(STREAM, own)
        assert info.config.filter_subject == "events.etl.>"
    finally:
        await nc.close()
        await admin.close()


async def test_a_task_cannot_read_ack_delete_or_recreate_another_tasks_consumer(
        js_stack: tuple[Stack, str]) -> None:
    stack, password = js_stack
    admin = await _admin(stack, password)
    other = consumer_name(EXTRACT)
    await admin.jetstream().add_consumer(STREAM, ConsumerConfig(
        name=other, durable_name=other, filter_subject="events.etl.>",
        ack_policy=AckPolicy.EXPLICIT))
    await admin.jetstream().publish("events.etl.extract.done", b"theirs", stream=STREAM)
    # The other task's delivery, held un-acked, so an intruder's ack would show.
    pull = await admin.jetstream().pull_subscribe_bind(other, stream=STREAM)
    [theirs] = await pull.fetch(1, timeout=5)
    errors = Violations()
    nc = await _task(stack, LOAD, errors)
    try:
        api = f"$JS.API.CONSUMER.%s.{STREAM}.{other}"
        for subject in [api % "MSG.NEXT", api % "INFO", theirs.reply, api % "DELETE",
                        f"{api % 'CREATE'}.events.etl.>", api % "CREATE",
                        f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{other}",
                        f"$JS.API.CONSUMER.DELETE.{STREAM}.{consumer_name(LOAD)}",
                        f"$JS.API.CONSUMER.LIST.{STREAM}", f"$JS.API.CONSUMER.NAMES.{STREAM}"]:
            await _refused(nc, errors, subject)
        info = await admin.jetstream().consumer_info(STREAM, other)
        assert (info.num_ack_pending, info.config.filter_subject) == (1, "events.etl.>")
    finally:
        await nc.close()
        await admin.close()


async def test_a_task_cannot_delete_or_purge_the_stream(js_stack: tuple[Stack, str]) -> None:
    stack, password = js_stack
    admin = await _admin(stack, password)
    await admin.jetstream().publish("events.etl.load.done", b"kept", stream=STREAM)
    errors = Violations()
    nc = await _task(stack, LOAD, errors)
    try:
        for action in ["DELETE", "PURGE", "MSG.DELETE", "UPDATE", "INFO", "CREATE"]:
            await _refused(nc, errors, f"$JS.API.STREAM.{action}.{STREAM}")
        for subject in ["$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.INFO"]:
            await _refused(nc, errors, subject)
        info = await admin.jetstream().stream_info(STREAM)
        assert info.state.messages == 1
        # And the stream itself is append-only, for anyone allowed its API at all.
        assert info.config.deny_delete and info.config.deny_purge
        with pytest.raises(nats.js.errors.APIError):
            await admin.jetstream().purge_stream(STREAM)
        with pytest.raises(nats.js.errors.APIError):
            await admin.jetstream().delete_msg(STREAM, 1)
    finally:
        await nc.close()
        await admin.close()


async def test_a_task_cannot_read_another_tasks_inbox_replies(
        js_stack: tuple[Stack, str]) -> None:
    stack, _ = js_stack
    load_errors, extract_errors = Violations(), Violations()
    load = await _task(stack, LOAD, load_errors)
    extract = await _task(stack, EXTRACT, extract_errors)
    try:
        for subject in [f"{inbox_prefix(EXTRACT)}.>", "_INBOX.>", "_INBOX.etl.>",
                        "_INBOX.*.extract.>"]:
            await _refused(load, load_errors, subject, kind="subscribe")
        ack = await extract.jetstream().publish("events.etl.extract.done", b"2", stream=STREAM)
        assert ack.stream == STREAM and not extract_errors.errors
    finally:
        await load.close()
        await extract.close()

