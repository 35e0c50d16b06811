"""The client helper comes back by itself when the server expires its grant.

The grant TTL is 2 s, so nats-server disconnects the worker every 2 s ("authentication
expired"); `gateway.client.connect` reconnects with a freshly built credential (here a
token file that is rotated in place, as the kubelet does) and the subscription keeps
receiving messages.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client

from gateway.client import (
    GatewayRefused,
    OidcToken,
    OidcTokenFile,
    RefusalPolicy,
    Scope,
    connect,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


async def test_expired_grant_reconnects_with_a_fresh_credential(stack: Stack) -> None:
    policy = stack.tmp / "policies" / "etl.yaml"
    policy.write_text(policy.read_text().replace("ttl_seconds: 600", "ttl_seconds: 2"))
    await stack.start_gateway()
    token_file = Path(stack.tmp / "token")
    token_file.write_text(stack.token())
    reconnects, disconnects = [], []

    async def on_reconnect() -> None:
        reconnects.append(asyncio.get_running_loop().time())

    async def on_disconnect() -> None:
        disconnects.append(asyncio.get_running_loop().time())

    async def on_error(exc: Exception) -> None:
        pass  # "authorization violation"/"authentication expired" are expected here

    nc = await connect(stack.nats_url, OidcTokenFile(token_file), scope=Scope("etl", "load"),
                       reconnected_cb=on_reconnect, disconnected_cb=on_disconnect,
                       error_cb=on_error, reconnect_time_wait=0.1)
    received: list[tuple[float, bytes]] = []

    async def on_message(msg: object) -> None:
        received.append((asyncio.get_running_loop().time(), msg.data))  # type: ignore[attr-defined]

    try:
        await nc.subscribe("airflow.etl.load.events", cb=on_message)
        rotated = False
        for index in range(35):  # 7 s: at least two expiries
            if index == 5 and not rotated:
                token_file.write_text(stack.token())  # the kubelet rotates the token
                rotated = True
            if nc.is_connected:
                await nc.publish("airflow.etl.load.events", str(index).encode())
            await asyncio.sleep(0.2)
        assert len(disconnects) >= 2 and len(reconnects) >= 2, (disconnects, reconnects)
        after_last_reconnect = [data for at, data in received if at > reconnects[-1]]
        assert after_last_reconnect, "no message after the last reconnect"
        # The loop may end during an expiry; the client must be back within a moment.
        for _ in range(60):
            if nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert nc.is_connected
    finally:
        await nc.close()

    async with stack.api() as api:
        grants = (await api.get("/v1/grants", params={"decision": "grant"})).json()["items"]
    assert len(grants) >= 3
    fingerprints = {g["identity_fingerprint"] for g in grants}
    assert len(fingerprints) >= 2, "the rotated token file was not re-read"
    assert stack.gateway is not None
    await stack.gateway.stop()


# nats-py 2.16 drops the StreamWriter of an abandoned reconnect attempt after closing its
# transport: Python warns when the writer is collected, but the socket is already closing.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_worker_refused_while_reconnecting_keeps_trying_until_allowed(
        stack: Stack) -> None:
    """A refusal while reconnecting (or a callout timeout in a reconnect storm, which the
    client cannot tell apart) must not close the worker for good: it retries, each
    attempt is audited as a deny, and it is back as soon as the policy allows it. The
    2 s grant TTL makes nats-server disconnect the worker, as a restart would."""
    policy = stack.tmp / "policies" / "etl.yaml"
    allowed = policy.read_text().replace("ttl_seconds: 600", "ttl_seconds: 2")
    policy.write_text(allowed)
    gateway = await stack.start_gateway(policy={"dir": str(stack.tmp / "policies"),
                                                "reload_interval_seconds": 0})
    closed: list[bool] = []

    async def on_closed() -> None:
        closed.append(True)

    async def on_error(exc: Exception) -> None:
        pass  # the refusals are expected here

    # A high give-up bound: this test is about retrying, not about giving up.
    nc = await connect(stack.nats_url, OidcToken(stack.token()), scope=Scope("etl", "load"),
                       reconnect_time_wait=0.2, closed_cb=on_closed, error_cb=on_error,
                       refusals=RefusalPolicy(give_up_after=50, backoff_cap_seconds=1.0))
    try:
        policy.write_text(allowed.replace("tasks: [load, extract]", "tasks: [extract]"))
        assert gateway.policies.reload("test")
        for _ in range(100):  # refused again and again while the policy says no
            if gateway.store.count("deny") >= 3:
                break
            await asyncio.sleep(0.1)
        assert gateway.store.count("deny") >= 3 and not nc.is_connected and not closed
        policy.write_text(allowed)
        assert gateway.policies.reload("test")
        for _ in range(100):
            if nc.is_connected:
                break
            await asyncio.sleep(0.1)
        assert nc.is_connected and not closed
        await nc.publish("airflow.etl.load.events", b"back")
        await nc.flush()
    finally:
        await nc.close()
        await gateway.stop()


async def _quiet(exc: Exception) -> None:
    pass  # refusals are expected; nats-py would log a traceback for each


# Before this bound, the wrong-audience worker below retried about twice a second forever
# (37 deny records in 19 s); `max_reconnect_attempts=0` did not stop it either.
@pytest.mark.parametrize(("options", "refusals"), [
    ({}, 3),
    ({"max_reconnect_attempts": 0}, 3),
    ({"max_reconnect_attempts": 1}, 2),  # nats-py gives up first: still named a refusal
], ids=["default", "max-reconnect-0", "max-reconnect-1"])
async def test_a_refused_first_connect_raises_after_a_bounded_number_of_tries(
        stack: Stack, options: dict[str, int], refusals: int) -> None:
    gateway = await stack.start_gateway()
    wrong_audience = stack.token(audience="another-service")
    try:
        with pytest.raises(GatewayRefused) as raised:
            # The bound is the refusal count; the timeout only keeps a regression from
            # hanging the suite.
            await asyncio.wait_for(connect(
                stack.nats_url, OidcToken(wrong_audience), scope=Scope("etl", "load"),
                reconnect_time_wait=0.05, error_cb=_quiet, **options), timeout=60)
        assert raised.value.refusals == refusals and not raised.value.reconnecting
        assert "GET /v1/grants?decision=deny&dag=etl&task=load" in str(raised.value)
        assert wrong_audience not in str(raised.value)
        assert gateway.store.count("deny") == refusals
        assert gateway.store.count("grant") == 0
    finally:
        await gateway.stop()


async def _wait_until(condition: object, tries: int = 300) -> bool:
    for _ in range(tries):
        if callable(condition) and condition():
            return True
        await asyncio.sleep(0.1)
    return False


# nats-py 2.16 drops the StreamWriter of an abandoned reconnect attempt after closing its
# transport: Python warns when the writer is collected, but the socket is already closing.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_revoked_worker_gives_up_after_k_refusals_and_a_success_resets_the_count(
        stack: Stack) -> None:
    """Rights revoked mid-connection: the 2 s grant expires, every reconnect is refused,
    and after `give_up_after` refusals in a row the client reports `GatewayRefused` to
    the error callback and closes. Refusals before a successful reconnect do not count."""
    policy = stack.tmp / "policies" / "etl.yaml"
    allowed = policy.read_text().replace("ttl_seconds: 600", "ttl_seconds: 2")
    revoked = allowed.replace("tasks: [load, extract]", "tasks: [extract]")
    policy.write_text(allowed)
    gateway = await stack.start_gateway(policy={"dir": str(stack.tmp / "policies"),
                                                "reload_interval_seconds": 0})
    reported: list[Exception] = []
    closed: list[bool] = []

    async def on_error(exc: Exception) -> None:
        reported.append(exc)

    async def on_closed() -> None:
        closed.append(True)

    def revoke(text: str) -> None:
        policy.write_text(text)
        assert gateway.policies.reload("test")

    nc: Client = await connect(
        stack.nats_url, OidcToken(stack.token()), scope=Scope("etl", "load"),
        reconnect_time_wait=0.05, error_cb=on_error, closed_cb=on_closed,
        refusals=RefusalPolicy(give_up_after=4, backoff_cap_seconds=0.4))
    try:
        revoke(revoked)
        assert await _wait_until(lambda: gateway.store.count("deny") >= 2)
        revoke(allowed)  # back before the bound: the count starts again
        assert await _wait_until(lambda: nc.is_connected)
        before = gateway.store.count("deny")
        assert 2 <= before < 4 and not closed

        revoke(revoked)
        assert await _wait_until(lambda: bool(closed))
        assert nc.is_closed
        assert gateway.store.count("deny") == before + 4
        gave_up = [e for e in reported if isinstance(e, GatewayRefused)]
        assert len(gave_up) == 1 and gave_up[0].reconnecting and gave_up[0].refusals == 4
        assert isinstance(nc.last_error, GatewayRefused)
        assert "gave up" in str(gave_up[0])
    finally:
        await nc.close()
        await gateway.stop()
