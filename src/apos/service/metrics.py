"""Prometheus metrics, with the names the architecture document promises operators.

One :class:`Metrics` per app, on its own registry, so several apps (tests, benchmarks) can
live in one process without clashing on the global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The service's metrics. Names from the seed: ``apos_events_processed_total``,
    ``apos_decisions_total``, ``apos_anomalies_detected_total``, ``apos_healing_actions_total``
    and the ``apos_decision_latency`` histogram (seconds)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_processed = Counter(
            "apos_events_processed",
            "Payment events seen, by source and result (accepted, duplicate, rejected).",
            ["source", "result"],
            registry=r,
        )
        self.decisions = Counter(
            "apos_decisions", "Routing decisions made.", ["policy", "connector"], registry=r
        )
        # Counted once per incident across instances: by the instance whose write opened
        # the anomaly record (apos.service.detection).
        self.anomalies = Counter(
            "apos_anomalies_detected",
            "Anomaly incidents opened, by type and severity.",
            ["type", "severity"],
            registry=r,
        )
        self.alerts_delivered = Counter(
            "apos_alerts_delivered", "Alerts delivered, by sink.", ["sink"], registry=r
        )
        self.alert_failures = Counter(
            "apos_alert_failures",
            "Alerts given up on (after retries, or dropped from a full queue), by sink.",
            ["sink"],
            registry=r,
        )
        self.healing_actions = Counter(
            "apos_healing_actions",
            "Healing actions, by type and status.",
            ["action_type", "status"],
            registry=r,
        )
        self.decision_latency = Histogram(
            "apos_decision_latency",
            "Compute time of one routing decision, in seconds.",
            buckets=(10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3),
            registry=r,
        )
        self.ingest_batch_seconds = Histogram(
            "apos_ingest_batch_seconds",
            "Time to validate and durably store one batch.",
            ["source"],
            registry=r,
        )
        self.dead_letters = Counter(
            "apos_dead_letters", "Inputs kept in the dead-letter store.", ["source"], registry=r
        )
        self.bus_pending = Gauge(
            "apos_bus_pending_messages",
            "Bus entries delivered but not yet acknowledged.",
            registry=r,
        )
