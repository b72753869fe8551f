"""The detection service: one in-memory monitor per process, fed the events the engine
learns from, turning its findings into anomaly records, metrics and alerts.

Feeding: ``observe`` is called with the same newly stored events as
:meth:`RoutingService.learn` (bootstrap wires it next to it), embedded with each stored
batch and its outbox row, with Redis with each applied-stream entry and its id. It holds
only this service's lock and a few microseconds per event: findings are queued for the
writer thread, never written on the event path. A tick worker calls ``tick`` on the
routing clock, so interval detectors notice silence (a connector that stopped answering).

Time: events are observed at event time (``now`` is the newest event time seen), so every
instance fed the same stream reports the same findings from ``observe``; but, as for
learning, an event outside the accepted window is not observed and none moves ``now`` past
the wall clock (with clock = "event", past receipt + the skew). Ticks follow the routing
clock and never go back.

Writing: the writer applies findings to :class:`AnomalyStore`, which keeps one record per
incident across instances and says which transitions this instance caused. Only those are
counted (``apos_anomalies_detected_total``) and alerted, so three instances raise one alert.

Snapshots: the monitor's state is saved in its own ``engine_snapshots`` row (``detection``)
with what it has seen, so a restarted instance neither misses nor double-counts events:
with Redis the applied-stream id it observed up to (entries at or before it are skipped on
resume); embedded the outbox rows it observed that are not yet deleted (a replayed row it
already saw is skipped). ``bootstrap.save_snapshot`` captures it just after the engine's
state and writes it first: this service observes a batch before the engine learns it, so its
position is never behind the engine's. (Embedded, a crash between the two writes replays to
the monitor the rows the engine snapshot would have deleted: counted twice, never lost.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from apos.adapters.alerts import Alert, AlertDispatcher
from apos.adapters.db.anomalies import AnomalyChange, AnomalyStore, Transition
from apos.adapters.db.refusals import is_row_fault
from apos.adapters.db.snapshots import SavedSnapshot, SnapshotStore
from apos.core.detect.findings import Finding, Severity
from apos.core.event_time import EventTimeWindow
from apos.core.events import PaymentEvent
from apos.service.logs import get_logger
from apos.service.metrics import Metrics

__all__ = [
    "DETECTION_SNAPSHOT",
    "DetectionService",
    "MonitorLike",
    "coalesce",
    "stream_id_after",
]

log = get_logger("detection")

DETECTION_SNAPSHOT = "detection"
# What one sender may make the detectors track (see DetectionService._admit): far above any
# real merchant's connector and payment-method count.
MAX_CONNECTORS_PER_MERCHANT = 32
MAX_CONNECTORS = 256
MAX_PAYMENT_METHODS = 64
# Events older than this behind the newest one observed are not counted as current traffic.
MAX_LATENESS_S = 600.0
_RANK = {Severity.INFO.value: 0, Severity.WARNING.value: 1, Severity.CRITICAL.value: 2}


class MonitorLike(Protocol):
    """What this service needs of :class:`apos.core.detect.monitor.Monitor`."""

    def observe(self, event: PaymentEvent, now: float) -> list[Finding]: ...

    def tick(self, now: float) -> list[Finding]: ...

    def snapshot(self) -> dict[str, Any]: ...


def coalesce(queue: Collection[Finding]) -> deque[Finding]:
    """The queued findings with each incident's repeats merged, in queue order: per
    incident key its first active finding (it opens the record with its start) and its
    latest one (the current state, or the clearing one). What the store would have done
    with the dropped middle ones is what the latest one does: update the same record."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    items = list(queue)
    for i, finding in enumerate(items):
        key = finding.incident_key
        if finding.active and key not in first:
            first[key] = i
        last[key] = i
    keep = set(first.values()) | set(last.values())
    return deque(f for i, f in enumerate(items) if i in keep)


def stream_id_after(entry: str, position: str) -> bool:
    """Whether Redis stream id ``entry`` (``ms-seq``) comes after ``position``."""

    def parts(value: str) -> tuple[int, int]:
        ms, _, seq = value.partition("-")
        return int(ms), int(seq or 0)

    return parts(entry) > parts(position)


class DetectionService:
    """Owns the process's monitor; see the module docstring."""

    def __init__(
        self,
        monitor: MonitorLike,
        anomalies: AnomalyStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
        window: EventTimeWindow | None = None,
        follow_event_time: bool = False,
        alerts: AlertDispatcher | None = None,
        alert_min_severity: str = Severity.WARNING.value,
        queue_limit: int = 100_000,
        saved: SavedSnapshot | None = None,
    ) -> None:
        self.monitor = monitor
        self.lock = threading.Lock()
        self._anomalies = anomalies
        self._metrics = metrics
        self._clock = clock
        # As for learning: nothing outside the accepted window of event time is observed,
        # and no event moves the monitor's clock past the wall clock (with clock = "event",
        # past receipt + max_future_s), so one sender cannot make every interval detector
        # see minutes of silence for everyone (apos.core.event_time).
        self._wall = wall
        self._window = window or EventTimeWindow()
        self._follow = follow_event_time
        self.events_outside_window = 0
        self.observe_failures = 0
        # Bounds on what one sender can make the detectors track: every made-up connector
        # or payment method name is an entity in several detectors (memory, tick time and
        # snapshot size for everyone). Names past a cap are not observed (counted).
        self._connectors: dict[str, set[str]] = {}  # merchant -> connectors admitted
        self._all_connectors: set[str] = set()
        self._methods: set[str] = set()
        self.events_over_cap = 0
        self.events_late = 0
        self._alerts = alerts
        self._alert_rank = _RANK[alert_min_severity]
        self._pending: deque[Finding] = deque()
        self._queue_limit = queue_limit
        self._wake = threading.Event()
        self.now = 0.0  # the monitor's clock: event time, never going back
        self.events_observed = 0
        self.findings_dropped = 0  # merged or dropped on queue overflow (database down long)
        self.stream_position: str | None = None  # applied-stream id observed up to
        self.outbox_observed: set[int] = set()  # embedded: observed, not known deleted
        self._resume_after: str | None = None
        self._replayed: set[int] = set()
        if saved is not None:
            self.events_observed = saved.events_learned
            self.now = float(saved.state.get("now", 0.0))
            self.stream_position = saved.stream_position
            self._resume_after = saved.stream_position
            self._replayed = {int(row) for row in saved.state.get("outbox_observed", [])}
            self.outbox_observed = set(self._replayed)
            admitted = saved.state.get("admitted", {})
            for merchant, names in admitted.get("connectors", {}).items():
                self._connectors[merchant] = set(names)
                self._all_connectors.update(names)
            self._methods = set(admitted.get("payment_methods", []))

    @staticmethod
    def saved_monitor(saved: SavedSnapshot | None) -> dict[str, Any] | None:
        """The monitor state inside a saved detection snapshot."""
        if saved is None:
            return None
        state = saved.state.get("monitor")
        return state if isinstance(state, dict) else None

    # The event path -------------------------------------------------------------------

    def observe(
        self,
        events: Sequence[PaymentEvent],
        position: str | None = None,
        outbox_id: int | None = None,
    ) -> None:
        """Observe newly stored events (one applied-stream entry ending at ``position``, or
        embedded one outbox row ``outbox_id``); what was already observed is skipped."""
        try:
            self._observe(events, position, outbox_id)
        except Exception:
            # Detection must never stop learning: the caller learns these events next.
            self.observe_failures += 1
            log.exception("anomaly detection failed on a batch; skipped")

    def _observe(
        self, events: Sequence[PaymentEvent], position: str | None, outbox_id: int | None
    ) -> None:
        findings: list[Finding] = []
        with self.lock:
            if outbox_id is not None:
                if outbox_id in self._replayed:
                    self._replayed.discard(outbox_id)
                    return
                self.outbox_observed.add(outbox_id)
            if position is not None:
                resume = self._resume_after
                if resume is not None and not stream_id_after(position, resume):
                    return
                self.stream_position = position
            now = self.now
            wall = self._wall()
            cap = self._window.latest(wall) if self._follow else wall
            verdict = self._window.verdict
            observe = self.monitor.observe
            for event in events:
                ts = event.occurred_ts
                if verdict(ts, wall) != "ok":
                    self.events_outside_window += 1
                    continue
                if ts < now - MAX_LATENESS_S:
                    # A late or resent old event is stored and learnt, but counting it as
                    # current traffic would raise spikes or failure incidents for everyone.
                    self.events_late += 1
                    continue
                if not self._admit(event):
                    self.events_over_cap += 1
                    continue
                if ts > now:
                    now = max(now, min(ts, cap))
                findings.extend(observe(event, now))
            self.now = now
            self.events_observed += len(events)
        if findings:
            self._enqueue(findings)

    def _admit(self, event: PaymentEvent) -> bool:
        """Whether the event's connector and payment method are within the caps (a name
        seen before always is). Called under the lock."""
        merchant, connector = event.merchant_id, event.connector
        known = self._connectors.get(merchant)
        if known is None or connector not in known:
            if known is not None and len(known) >= MAX_CONNECTORS_PER_MERCHANT:
                return False
            if connector not in self._all_connectors:
                if len(self._all_connectors) >= MAX_CONNECTORS:
                    return False
                self._all_connectors.add(connector)
            self._connectors.setdefault(merchant, set()).add(connector)
        method = event.payment_method
        if method not in self._methods:
            if len(self._methods) >= MAX_PAYMENT_METHODS:
                return False
            self._methods.add(method)
        return True

    def tick(self) -> int:
        """Evaluate the interval detectors at the routing clock (or the newest event time,
        if that is ahead). Returns how many findings it queued."""
        with self.lock:
            self.now = now = max(self.now, self._clock())
            findings = self.monitor.tick(now)
        if findings:
            self._enqueue(findings)
        return len(findings)

    def _enqueue(self, findings: list[Finding]) -> None:
        with self.lock:
            self._pending.extend(findings)
            dropped = 0
            if len(self._pending) > self._queue_limit:
                before = len(self._pending)
                self._pending = coalesce(self._pending)
                # Still over: every queued finding is a different incident's; the oldest go.
                while len(self._pending) > self._queue_limit:
                    self._pending.popleft()
                dropped = before - len(self._pending)
                self.findings_dropped += dropped
        if dropped:
            log.warning("detection findings merged: writer behind", merged=dropped)
        self._wake.set()

    # The writer -----------------------------------------------------------------------

    def write_step(self) -> int:
        """Apply queued findings to the anomaly store (the writer thread's step). A finding
        leaves the queue only once applied: a database outage delays, never loses it."""
        done = 0
        while True:
            with self.lock:
                if not self._pending:
                    self._wake.clear()
                    return done
                finding = self._pending[0]
            try:
                change = self._anomalies.apply(finding, datetime.now(UTC))
            except Exception as exc:
                if not is_row_fault(exc):
                    raise  # the database is down: kept, retried by the worker's backoff
                # Refused for its content: retrying changes nothing, and it must not hold
                # up every finding behind it.
                log.error("anomaly finding refused by the database; dropped", error=str(exc))
                change = None
            with self.lock:
                if self._pending and self._pending[0] is finding:
                    self._pending.popleft()
            done += 1
            if change is not None:
                self._announce(change)

    def wait_for_findings(self, timeout: float) -> None:
        self._wake.wait(timeout)

    @property
    def pending(self) -> int:
        with self.lock:
            return len(self._pending)

    def _announce(self, change: AnomalyChange) -> None:
        record = change.record
        if change.transition is Transition.OPENED:
            self._metrics.anomalies.labels(record.anomaly_type, record.severity).inc()
        log.warning(
            "anomaly " + change.transition.value,
            anomaly_id=record.id,
            anomaly_type=record.anomaly_type,
            severity=record.severity,
            merchant_id=record.merchant_id,
            connector=record.connector,
            segment=record.segment,
            score=round(record.score, 4),
        )
        if self._alerts is not None and _RANK.get(record.severity, 0) >= self._alert_rank:
            self._alerts.submit(Alert(change.transition.value, record.to_dict()))

    # Snapshots ------------------------------------------------------------------------

    def capture(self, deleting: Collection[int] = ()) -> SavedSnapshot:
        """The monitor's state with what it has seen (see the module docstring); embedded,
        the outbox rows observed, less those the engine snapshot written next deletes."""
        with self.lock:
            state = {
                "monitor": self.monitor.snapshot(),
                "now": self.now,
                "outbox_observed": sorted(self.outbox_observed.difference(deleting)),
                "admitted": {
                    "connectors": {m: sorted(c) for m, c in self._connectors.items()},
                    "payment_methods": sorted(self._methods),
                },
            }
            return SavedSnapshot(
                DETECTION_SNAPSHOT,
                datetime.now(UTC),
                self.stream_position,
                self.events_observed,
                state,
            )

    def save(self, snapshots: SnapshotStore, deleting: Collection[int] = ()) -> None:
        snapshots.save(self.capture(deleting))

    def replay_done(self) -> None:
        """Embedded: the outbox rows a crash left have been replayed; later rows are new
        (SQLite may reuse a deleted row's id)."""
        with self.lock:
            self._replayed.clear()

    def settled(self, rows: set[int] | frozenset[int]) -> None:
        """Embedded: these outbox rows are deleted (the engine snapshot holding them was
        saved); they can no longer be replayed."""
        with self.lock:
            self.outbox_observed -= rows
