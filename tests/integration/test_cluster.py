"""A 3-node nats-server cluster (routes), the callout on every node with the same issuer
and xkey, two `nats-gateway serve` replicas on different nodes, one PostgreSQL audit
store; real processes throughout, killed with SIGKILL as in a crash.

What every failure test asserts, by counting rather than timing:
- every worker gets connected again (a flush round trip proves it), possibly elsewhere;
- no grant without a record: per worker, grant records >= accepted CONNECTs;
- no decision recorded twice: unique decision ids, and no user nkey (one per connect
  attempt) granted twice;
- no connect attempt waits past nats-server's auth timeout because a replica or node
  died: a one-shot attempt ends connected or refused (nats-server's answer at its
  timeout), never by the client's own, longer, connect timeout;
- `nats-gateway audit verify` exits 0 for the shared PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from sqlalchemy import text

from gateway.audit.store import AuditStore
from gateway.client import OidcToken, connect, oidc_envelope
from gateway.dev.cluster import Cluster, free_port, nats_config, start_cluster
from gateway.dev.issuer import DevIssuer
from gateway.dev.natsserver import NatsServer
from gateway.dev.postgres import postgres_database
from gateway.envelope import Scope
from gateway.keyfiles import generate_keys
from tests.integration.harness import AUDIENCE, WORKER, policy_yaml, settings_dict
from tests.integration.test_processes import CLI, REPO, _stop, _toml, _wait_for_line

pytestmark = pytest.mark.integration
CLIENT_TIMEOUT = 5.0  # longer than nats-server's auth timeout (2 s): who answers is visible
SETTLE_SECONDS = 90.0  # bound on every wait for a condition
WORKERS = 90
STORM = 120
LEAF_AUTH_SECRET = "leaf-auth-sample-secret"
LEAF_APP_SECRET = "leaf-app-sample-secret"
# What the hub adds for edge servers (docs/operations.md): a leaf user per bound account.
HUB_LEAFNODES = """
leafnodes {{
  listen: "127.0.0.1:{port}"
  authorization {{
    users: [
      {{ user: leaf-auth, password: "{auth_secret}", account: AUTH }}
      {{ user: leaf-app, password: "{app_secret}", account: APP }}
    ]
  }}
}}
"""


@dataclass
class Site:
    tmp: Path
    keys: Path
    issuer: DevIssuer
    audit_url: str
    cluster: Cluster
    leaf_ports: list[int]
    replicas: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def token(self) -> str:
        return self.issuer.mint(subject=WORKER, audience=AUDIENCE, lifetime=3600)

    def start_replica(self, name: str, node: int) -> None:
        data = settings_dict(self.tmp, self.keys, self.cluster.urls[node], self.issuer.issuer,
                             xkey=True, audit_db=self.tmp / "unused.db", admin_token="x" * 32,
                             instance=name)
        data["audit"]["url"] = self.audit_url
        data["api"]["enabled"] = False
        config = self.tmp / f"{name}.toml"
        config.write_text(_toml(data))
        proc = subprocess.Popen([*CLI, "--log-level", "INFO", "serve", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=REPO)
        self.replicas[name] = proc
        _wait_for_line(proc, "gateway started")


def _gateway_toml(tmp: Path, keys: Path) -> Path:
    """The keys-only config `nats-config` reads (the replicas' own configs add the rest)."""
    path = tmp / "nats-config.toml"
    path.write_text(textwrap.dedent(f"""\
        [nats]
        user_seed_file = "{keys / 'auth-user.nk'}"
        [keys]
        issuer_seed_file = "{keys / 'issuer.nk'}"
        xkey_seed_file = "{keys / 'xkey.nk'}"
        """))
    return path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    keys = tmp_path / "keys"
    generate_keys(keys)
    issuer = DevIssuer().start()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "etl.yaml").write_text(policy_yaml(issuer.issuer))
    built: Site | None = None
    leaf_ports = [free_port() for _ in range(3)]

    def hub_leafnodes(index: int) -> str:
        return HUB_LEAFNODES.format(port=leaf_ports[index], auth_secret=LEAF_AUTH_SECRET,
                                    app_secret=LEAF_APP_SECRET)

    try:
        with postgres_database() as (audit_url, _), \
                start_cluster(_gateway_toml(tmp_path, keys), tmp_path,
                              extra=hub_leafnodes) as cluster:
            built = Site(tmp_path, keys, issuer, audit_url, cluster, leaf_ports)
            built.start_replica("r0", node=0)
            built.start_replica("r1", node=1)
            yield built
            for proc in built.replicas.values():
                _stop(proc)
    finally:
        if built is not None:
            for proc in built.replicas.values():
                if proc.poll() is None:
                    _stop(proc)
        issuer.stop()


class Workers:
    """Long-lived workers on the project's client (reconnecting, fresh envelope each
    time), given every node's URL; counts each one's accepted CONNECTs."""

    def __init__(self, site: Site) -> None:
        self._site = site
        self.clients: dict[str, Client] = {}
        self.accepted: Counter[str] = Counter()
        self.gave_up: list[str] = []

    async def open(self, name: str) -> None:
        async def reconnected() -> None:
            self.accepted[name] += 1

        async def closed() -> None:
            self.gave_up.append(name)

        for _ in range(20):  # a first connect refused in the storm (timed out) is retried
            try:
                client = await connect(self._site.cluster.urls, OidcToken(self._site.token()),
                                       scope=Scope("etl", "load"), name=name,
                                       connect_timeout=CLIENT_TIMEOUT,
                                       reconnected_cb=reconnected, closed_cb=closed)
            except Exception:
                await asyncio.sleep(0.5)
                continue
            self.accepted[name] += 1
            self.clients[name] = client
            return
        raise AssertionError(f"worker `{name}` never connected")

    async def disconnected(self) -> set[str]:
        """Workers without a working connection right now (a flush round trip each)."""
        async def down(name: str, client: Client) -> bool:
            try:
                await client.flush(timeout=2)
            except Exception:
                return True
            return not client.is_connected

        names = list(self.clients)
        results = await asyncio.gather(*(down(n, self.clients[n]) for n in names))
        return {name for name, bad in zip(names, results, strict=True) if bad}

    async def wait_all_connected(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        while (missing := await self.disconnected()) and loop.time() < deadline:
            await asyncio.sleep(0.3)
        assert not missing, f"{len(missing)} workers never came back: {sorted(missing)[:5]}"
        assert not self.gave_up, f"workers gave up: {self.gave_up[:5]}"

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()),
                             return_exceptions=True)


async def _attempt(urls: list[str], envelope: str, name: str) -> str:
    """One connect with no retry: ``connected``, ``refused`` (nats-server's answer,
    at the latest its auth timeout) or what else ended it."""
    nc = Client()
    try:
        await nc.connect(urls, token=envelope, name=name, allow_reconnect=False,
                         max_reconnect_attempts=0, connect_timeout=CLIENT_TIMEOUT)
        if not nc.is_connected:
            # nats-py returns from connect() without an error when the server closes
            # the socket instead of answering (its refusal, read or not): not a timeout.
            return "refused"
        await nc.flush(timeout=CLIENT_TIMEOUT)
        return "connected"
    except Exception as exc:
        if "authorization violation" in str(exc).lower():
            return "refused"
        return f"{type(exc).__name__}: {exc}"
    finally:
        await nc.close()


def _rows(audit_url: str, sql: str) -> list[tuple[object, ...]]:
    store = AuditStore(audit_url)
    try:
        with store.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql)).all()]
    finally:
        store.close()


def _grants_per_client(audit_url: str) -> Counter[str]:
    return Counter({str(name): int(str(count)) for name, count in _rows(
        audit_url, "SELECT client_name, COUNT(*) FROM decisions WHERE decision = 'grant' "
                   "GROUP BY client_name")})


def _assert_audit_consistent(site: Site, accepted: Counter[str]) -> None:
    grants = _grants_per_client(site.audit_url)
    unrecorded = {name: n for name, n in accepted.items() if grants[name] < n}
    assert not unrecorded, f"accepted CONNECTs without a grant record: {unrecorded}"
    assert not _rows(site.audit_url, "SELECT decision_id FROM decisions "
                                     "GROUP BY decision_id HAVING COUNT(*) > 1")
    assert not _rows(site.audit_url, "SELECT user_nkey FROM decisions WHERE decision = "
                                     "'grant' GROUP BY user_nkey HAVING COUNT(*) > 1")
    assert not _rows(site.audit_url, "SELECT decision_id FROM decisions "
                                     "WHERE decision = 'deny'"), "an entitled worker denied"


def _assert_chains_verify(site: Site) -> None:
    for proc in site.replicas.values():
        if proc.poll() is None:
            _stop(proc)
    verified = subprocess.run([*CLI, "audit", "verify", "--config", str(site.tmp / "r0.toml")],
                              capture_output=True, text=True, timeout=120, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def _first_of(tasks: list[asyncio.Task[None]], count: int) -> None:
    """Return once ``count`` of ``tasks`` are done (the storm is under way)."""
    while sum(t.done() for t in tasks) < count:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=1)


async def test_a_replica_on_one_node_answers_clients_of_every_node(site: Site) -> None:
    """The request is published on the client's node and routed to a replica on another;
    each server seals with its own xkey and the replica answers to that key."""
    _stop(site.replicas.pop("r0"))  # r1 on n1 alone: n0 and n2 must route to it
    envelope = oidc_envelope(site.token(), dag_id="etl", task_id="load")
    outcomes = [await _attempt([url], envelope, f"via-n{i}")
                for i, url in enumerate(site.cluster.urls)]
    assert outcomes == ["connected"] * 3
    rows = _rows(site.audit_url, "SELECT client_name, server_name, gateway_instance "
                                 "FROM decisions WHERE client_name LIKE 'via-%'")
    assert sorted(rows) == [(f"via-n{i}", f"n{i}", "r1") for i in range(3)]  # type: ignore[comparison-overlap]


@pytest.mark.parametrize("node", [2, 1], ids=["node-without-replica", "node-with-replica"])
async def test_a_node_killed_mid_storm_every_worker_comes_back(site: Site, node: int) -> None:
    """Workers are connecting to all three nodes when one node dies (node 1 also carries
    replica r1, which must come back through another node and serve again)."""
    workers = Workers(site)
    try:
        storm = [asyncio.create_task(workers.open(f"w{i}")) for i in range(WORKERS)]
        await _first_of(storm, WORKERS // 3)
        site.cluster.nodes[node].kill()
        await asyncio.gather(*storm)
        await workers.wait_all_connected()
        alive = [i for i in range(3) if i != node]
        site.cluster.wait_for_routes(alive)
        await _wait_until_both_replicas_serve(site, [site.cluster.urls[i] for i in alive])
    finally:
        await workers.close()
    assert sum(workers.accepted.values()) > WORKERS, "no worker was on the killed node"
    _assert_audit_consistent(site, workers.accepted)
    _assert_chains_verify(site)


async def _wait_until_both_replicas_serve(site: Site, urls: list[str]) -> None:
    """Connect until each replica has granted one of these probes: the one whose node
    died must have reconnected to another node and resubscribed."""
    envelope = oidc_envelope(site.token(), dag_id="etl", task_id="load")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_SECONDS
    probe = 0
    served: set[object] = set()
    while served != {"r0", "r1"} and loop.time() < deadline:
        outcomes = await asyncio.gather(*(_attempt(urls, envelope, f"probe-{probe + i}")
                                          for i in range(10)))
        probe += 10
        assert set(outcomes) <= {"connected", "refused"}, outcomes
        served = {row[0] for row in _rows(
            site.audit_url, "SELECT DISTINCT gateway_instance FROM decisions "
                            "WHERE client_name LIKE 'probe-%'")}
    assert served == {"r0", "r1"}, f"only {served} serve after the node died"


async def test_a_replica_killed_mid_storm_the_survivor_serves_everyone(site: Site) -> None:
    """SIGKILL r1 while one-shot connects are in flight on every node: requests it held
    end with nats-server's refusal at the auth timeout (never the client's longer
    timeout), a retry is served by r0, and the connected workers are untouched."""
    workers = Workers(site)
    envelope = oidc_envelope(site.token(), dag_id="etl", task_id="load")
    try:
        await asyncio.gather(*(workers.open(f"w{i}") for i in range(WORKERS // 3)))
        names = [f"s{i}" for i in range(STORM)]
        attempts = [asyncio.create_task(_attempt(site.cluster.urls, envelope, name))
                    for name in names]
        await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
        site.replicas["r1"].kill()
        outcomes = dict(zip(names, await asyncio.gather(*attempts), strict=True))
        assert set(outcomes.values()) <= {"connected", "refused"}, Counter(outcomes.values())
        retried = {name: await _attempt(site.cluster.urls, envelope, name)
                   for name, outcome in outcomes.items() if outcome == "refused"}
        assert set(retried.values()) <= {"connected"}, Counter(retried.values())
        assert not await workers.disconnected()
    finally:
        await workers.close()
    site.replicas["r1"].wait()
    accepted = workers.accepted + Counter(outcomes.keys())  # each storm name: one connect
    _assert_audit_consistent(site, accepted)
    _assert_chains_verify(site)


async def test_a_leaf_node_uses_the_hubs_gateway(site: Site) -> None:
    """An edge server (leaf node) with the same callout block, its callout account bound
    to the hub's: its clients are decided by the hub's replicas and recorded centrally,
    and their messages reach the hub's clients."""
    hubs = [f"127.0.0.1:{port}" for port in site.leaf_ports]
    config = nats_config(site.tmp / "nats-config.toml", "--listen", "127.0.0.1:-1",
                         "--server-name", "edge",
                         "--leaf-remote", "AUTH=" + ",".join(
                             f"nats-leaf://leaf-auth:{LEAF_AUTH_SECRET}@{hub}" for hub in hubs),
                         "--leaf-remote", "APP=" + ",".join(
                             f"nats-leaf://leaf-app:{LEAF_APP_SECRET}@{hub}" for hub in hubs))
    with NatsServer(config, workdir=site.tmp / "leaf") as leaf:
        leaf.check_config()
        hub = await connect(site.cluster.urls[2], OidcToken(site.token()),
                            scope=Scope("etl", "load"), name="hub-reader")
        try:
            sub = await hub.subscribe("airflow.etl.load.>")
            await hub.flush()
            edge = await _connect_when_linked(leaf.url, site.token())
            try:
                await _publish_until_received(edge, sub)
            finally:
                await edge.close()
        finally:
            await hub.close()
    [(server_name, instance)] = _rows(site.audit_url, "SELECT server_name, gateway_instance "
                                      "FROM decisions WHERE client_name = 'edge-worker'")
    assert server_name == "edge" and instance in {"r0", "r1"}


async def _connect_when_linked(url: str, token: str) -> Client:
    """The leaf's first callouts wait for its leaf connections (and the hub's interest in
    the callout subject) to arrive; until then nats-server refuses at its auth timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_SECONDS
    while True:
        try:
            return await connect(url, OidcToken(token), scope=Scope("etl", "load"),
                                 name="edge-worker", connect_timeout=CLIENT_TIMEOUT)
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.3)


async def _publish_until_received(edge: Client, sub: Subscription) -> None:
    """Publish from the edge until the hub's subscriber sees it (interest crosses the
    leaf connection asynchronously)."""
    for attempt in range(int(SETTLE_SECONDS / 0.5)):
        await edge.publish("airflow.etl.load.done", f"{attempt}".encode())
        await edge.flush()
        try:
            await sub.next_msg(timeout=0.5)
            return
        except TimeoutError:
            continue
    raise AssertionError("a message from the edge never reached the hub")


@pytest.mark.parametrize(("options", "expected"), [
    (["--cluster-name", "airflow"],
     "a cluster node also needs --cluster-listen, --routes, --server-name"),
    (["--cluster-name", "a", "--server-name", "n0", "--cluster-listen", "127.0.0.1:6222",
      "--routes", "127.0.0.1:6222"], "route `127.0.0.1:6222` must be nats-route://HOST:PORT"),
    (["--leaf-remote", "AUTH=http://leaf-auth:hidden-secret@hub:7422"],
     "--leaf-remote for account `AUTH` must be ACCOUNT=nats-leaf://USER:PASSWORD@HUB:PORT"),
    (["--mode", "merge", "--out", "x", "--server-name", "n0"],
     "--server-name, --cluster-* and --leaf-remote are for full mode"),
], ids=["partial-cluster", "route-without-scheme", "leaf-url-hides-password", "merge-mode"])
def test_nats_config_refuses_an_incomplete_topology(
        tmp_path: Path, options: list[str], expected: str) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys)
    refused = subprocess.run([*CLI, "nats-config", "--config",
                              str(_gateway_toml(tmp_path, keys)), *options],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2, refused.stderr
    assert expected in refused.stderr and "hidden-secret" not in refused.stderr
