"""Prometheus metrics: one registry per gateway process, served at ``/metrics``.

Labels carry only bounded, non-secret values: results, methods, reason codes, steps,
issuer names. Never a principal, token, subject or DAG id (unbounded cardinality, and
this endpoint is not authenticated). Counters the components already keep (JWKS
fetches, audit writes, policy reloads, the NATS connection) are read at scrape time by
:class:`StateCollector`, so those components need no metrics code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics", "StateCollector"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Series observed in code: decisions, step latency, in-flight, STS calls."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "nats_gateway_decisions", "Decisions, by result, method and reason code",
            ["result", "method", "reason"], registry=r)
        self.step_seconds = Histogram(
            "nats_gateway_decision_step_seconds",
            "Time per decision step: identity, policy, sign, audit (the durable write), total",
            ["step"], buckets=_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "nats_gateway_in_flight_requests", "Auth callout requests being decided",
            registry=r)
        self.shed = Counter(
            "nats_gateway_shed_requests",
            "Auth requests dropped unanswered: they queued too long to be decided and "
            "recorded before nats-server's auth timeout (overload)", registry=r)
        self.unrecorded = Counter(
            "nats_gateway_unrecorded_decisions",
            "Denials answered whose record could not be committed at all (the store is "
            "down); grants are never answered without their record", registry=r)
        self.reply_failures = Counter(
            "nats_gateway_reply_failures",
            "Answers that could not be sent to nats-server after their decision was "
            "recorded (each grant among them gets a reply_failed record)", registry=r)
        self.sts_calls = Counter(
            "nats_gateway_sts_calls", "STS GetCallerIdentity calls, by result", ["result"],
            registry=r)
        self.sts_seconds = Histogram(
            "nats_gateway_sts_call_seconds", "STS call latency", buckets=_BUCKETS,
            registry=r)
        # labels() takes a lock and builds a key each call; a decision makes six of them.
        self._steps: dict[str, Histogram] = {}
        self._decisions: dict[tuple[str, str, str], Counter] = {}

    def step(self, name: str) -> Histogram:
        """The ``step_seconds`` series of one step."""
        series = self._steps.get(name)
        if series is None:
            series = self._steps[name] = self.step_seconds.labels(name)
        return series

    def decision(self, result: str, method: str, reason: str) -> Counter:
        """The ``decisions`` series of one (result, method, reason code)."""
        key = (result, method, reason)
        series = self._decisions.get(key)
        if series is None:
            series = self._decisions[key] = self.decisions.labels(*key)
        return series


class StateCollector(Collector):
    """Reads the gateway's own counters and state at scrape time."""

    def __init__(self, gateway: Any) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        gw = self._gateway
        jwks = CounterMetricFamily("nats_gateway_jwks_fetches",
                                   "JWKS/discovery fetches, by issuer and result",
                                   labels=["issuer", "result"])
        for issuer, cache in gw.oidc.caches.items():
            jwks.add_metric([issuer, "ok"], cache.fetches - cache.failures)
            jwks.add_metric([issuer, "failed"], cache.failures)
        yield jwks
        writer = gw.writer
        yield _counter("nats_gateway_audit_records_written", "Audit records committed",
                       lambda: writer.records)
        yield _counter("nats_gateway_audit_commits", "Audit transactions committed",
                       lambda: writer.commits)
        yield _counter("nats_gateway_audit_inline_commits",
                       "Audit records of a decision alone in flight, committed on the event "
                       "loop without the writer thread's hand-offs", lambda: writer.inline_commits)
        yield _counter("nats_gateway_audit_write_failures",
                       "Audit records that could not be committed (each one a deny)",
                       lambda: writer.failures)
        yield _counter("nats_gateway_audit_checkpoints", "Signed chain checkpoints written",
                       lambda: writer.checkpoints)
        yield _counter("nats_gateway_audit_checkpoint_failures",
                       "Genesis, heartbeat or final checkpoints that could not be committed",
                       lambda: writer.checkpoint_failures)
        anchors = getattr(gw, "anchors", None)
        if anchors is not None:
            yield _counter("nats_gateway_audit_anchor_writes",
                           "Checkpoints written to an anchor sink", lambda: anchors.written)
            yield _counter("nats_gateway_audit_anchor_failures",
                           "Anchor sink writes that failed (retried)", lambda: anchors.failures)
            yield _gauge("nats_gateway_audit_anchor_backlog",
                         "Checkpoints waiting for the slowest anchor sink",
                         lambda: anchors.backlog)
        status = gw.policies.status()
        reloads = CounterMetricFamily("nats_gateway_policy_reloads",
                                      "Policy reloads, by result", labels=["result"])
        reloads.add_metric(["ok"], status["reloads"])
        reloads.add_metric(["failed"], status["reload_failures"])
        yield reloads
        yield _gauge("nats_gateway_policy_stale",
                     "1 while the newest policy edit is invalid (last good set in force)",
                     lambda: 0 if status["last_error"] is None else 1)
        yield _gauge("nats_gateway_policies_loaded", "Policies in the set in force",
                     lambda: len(status["policies"]))
        yield _gauge("nats_gateway_nats_connected", "1 while connected to nats-server",
                     lambda: 1 if gw.service.connected else 0)


def _counter(name: str, doc: str, value: Callable[[], float]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value())


def _gauge(name: str, doc: str, value: Callable[[], float]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value())
