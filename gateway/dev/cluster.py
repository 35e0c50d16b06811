"""Run a real nats-server cluster (routes) with the gateway's callout on every node, for
tests and benchmarks.

Each node's config is what `nats-gateway nats-config --cluster-name ... --routes ...`
prints (run as a subprocess, checked with `nats-server -t` before it starts), so what is
exercised is the configuration users deploy. Client and monitoring ports are chosen by
nats-server (``-1``); route ports are picked free beforehand, since each node's config
must name the others'.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.dev.natsserver import NatsServer

__all__ = ["CLUSTER_NAME", "Cluster", "free_port", "nats_config", "node_config",
           "start_cluster"]

CLI = [sys.executable, "-m", "gateway.cli"]
CLUSTER_NAME = "airflow"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def nats_config(gateway_toml: Path, *args: str) -> str:
    """`nats-gateway nats-config` as users run it; its stdout."""
    return subprocess.run(  # noqa: S603 - our own command
        [*CLI, "nats-config", "--config", str(gateway_toml), *args],
        capture_output=True, text=True, timeout=60, check=True).stdout


def node_config(gateway_toml: Path, index: int, route_ports: list[int]) -> str:
    routes = ",".join(f"nats-route://127.0.0.1:{port}" for port in route_ports)
    return nats_config(gateway_toml, "--listen", "127.0.0.1:-1", "--monitor-port", "-1",
                       "--cluster-name", CLUSTER_NAME, "--server-name", f"n{index}",
                       "--cluster-listen", f"127.0.0.1:{route_ports[index]}",
                       "--routes", routes)


@dataclass
class Cluster:
    nodes: list[NatsServer]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def monitoring(self, index: int) -> str:
        return self.listener(index, "monitoring")

    def listener(self, index: int, kind: str) -> str:
        """A listen address of node ``index`` from its ports file (``monitoring``,
        ``cluster``)."""
        [ports] = (self.nodes[index].workdir / "ports").glob("*.ports")
        return str(json.loads(ports.read_text())[kind][0])

    def wait_for_routes(self, alive: list[int], timeout: float = 30.0) -> None:
        """Until every live node has a route to every other live node."""
        deadline = time.monotonic() + timeout
        pending = set(alive)
        while pending and time.monotonic() < deadline:
            for index in sorted(pending):
                routez = httpx.get(f"{self.monitoring(index)}/routez", timeout=5).json()
                names = {route.get("remote_name") for route in routez.get("routes", [])}
                if {f"n{other}" for other in alive if other != index} <= names:
                    pending.discard(index)
            if pending:
                time.sleep(0.1)
        if pending:
            raise AssertionError(f"nodes {sorted(pending)} have no route to every other "
                                 f"node within {timeout}s")


@contextmanager
def start_cluster(gateway_toml: Path, workdir: Path, size: int = 3,
                  extra: Callable[[int], str] = lambda index: "") -> Iterator[Cluster]:
    """``extra(index)`` is appended to node ``index``'s config (a hub's ``leafnodes { }``
    block: nats-server's ports file does not list the leaf port, so it is fixed)."""
    route_ports = [free_port() for _ in range(size)]
    nodes = [NatsServer(node_config(gateway_toml, index, route_ports) + extra(index),
                        workdir=workdir / f"n{index}") for index in range(size)]
    try:
        for node in nodes:
            node.check_config()
            node.start()
        cluster = Cluster(nodes)
        cluster.wait_for_routes(list(range(size)))
        yield cluster
    finally:
        for node in nodes:
            node.close()
