"""The routing service: one in-memory :class:`~apos.core.engine.Engine` per process, fed
from the event stream, answering ``route`` without touching the database.

Hot path: ``route()`` takes the engine lock, asks the engine, records metrics and hands the
decision to :class:`DecisionWriter`, a background thread that writes decisions to
``autonomous_decisions`` in batches and joins outcomes to them. Nothing on that path waits
on I/O.

Learning: outcomes reach ``learn()`` exactly once per process. Embedded (no Redis), the
ingestor calls it with each batch of newly stored events. With Redis, every instance instead
tails the shared ``<event_stream>:applied`` stream, to which every instance appends what it
stored, so all instances learn from all events, whoever ingested them.

Changes to routing state that are not events (starting or stopping an A/B experiment) travel
the same way: ``control()`` applies them here when embedded; with Redis it appends them to the
applied stream, in order with the events, and every instance (this one too) applies them when
its tail reads them, so every instance splits and counts an experiment alike.

Manual capture sends two success webhooks for one attempt (authorised, then captured); the
learner must count that attempt once, so final outcomes are deduplicated on
(payment_id, attempt, connector) over a bounded window.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from apos.adapters.db.decisions import DecisionOutcome, DecisionStore
from apos.adapters.db.refusals import dead_letter_raw, write_isolating
from apos.adapters.ports import DeadLetter
from apos.core.decision import Decision, TickReport
from apos.core.engine import Engine
from apos.core.event_time import EventTimeWindow
from apos.core.events import PaymentEvent, PaymentStatus
from apos.core.experiments import Experiment
from apos.core.payment import Payment
from apos.service.logs import get_logger
from apos.service.metrics import Metrics

log = get_logger("routing")


_DIGEST = (1 << 63) - 1  # digests stay within a signed 64-bit column
_FINAL = frozenset(status for status in PaymentStatus if status.is_final)


def outcome_digest(event_id: str) -> int:
    """The 63-bit digest of one final event: BLAKE2b-64 of its ``event_id`` (UTF-8), read
    big-endian, low 63 bits. Their sum modulo 2**63 over a set of events changes if any is
    missing or counted twice, whatever the order they came in."""
    raw = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big") & _DIGEST


class _RecentKeys:
    """A bounded set remembering the most recent keys (oldest forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self._keys: OrderedDict[tuple[str, int, str], None] = OrderedDict()
        self._capacity = capacity

    def add(self, key: tuple[str, int, str]) -> bool:
        """Remember ``key``; False if it was already there."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return True


class DecisionWriter:
    """Writes decisions and outcome joins in batches from a background thread.

    An outcome can arrive before its decision is written (or be for a decision another
    instance writes); unmatched outcomes are retried for ``outcome_retry_s``.
    """

    def __init__(
        self,
        store: DecisionStore,
        flush_interval_s: float = 0.2,
        max_batch: int = 2_000,
        outcome_retry_s: float = 60.0,
        dead_letter: Callable[[Sequence[DeadLetter]], object] | None = None,
    ) -> None:
        self._store = store
        # Where decisions and outcomes the database refuses go (see flush).
        self._dead_letter = dead_letter
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._retry_s = outcome_retry_s
        self._decisions: list[Decision] = []
        self._outcomes: list[tuple[float, DecisionOutcome]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.joined = 0
        self.refused = 0

    def add_decision(self, decision: Decision) -> None:
        # list.append is atomic under the GIL; the lock only guards the swap in flush().
        self._decisions.append(decision)

    def add_outcome(self, outcome: DecisionOutcome) -> None:
        self._outcomes.append((time.monotonic(), outcome))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="decision-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is still queued (logged, not raised, if the
        database is down: shutdown goes on)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            self.flush()
        except Exception:
            with self._lock:
                lost = len(self._decisions)
            log.exception("decision log not flushed at shutdown", decisions=lost)

    def flush(self) -> None:
        """Write what is queued now (decisions first, so outcomes can find them).

        A row the database refuses (see :mod:`apos.adapters.db.refusals`) is isolated and
        dead-lettered with the reason, and the rest are written; any other failure (the
        database is down) keeps everything queued for the next flush and raises.
        """
        with self._lock:
            decisions, self._decisions = self._decisions, []
            outcomes, self._outcomes = self._outcomes, []
        refused: list[tuple[Any, str]] = []
        try:
            for i in range(0, len(decisions), self._max_batch):
                counts, bad = write_isolating(
                    self._store.insert, decisions[i : i + self._max_batch]
                )
                self.written += sum(counts)
                refused.extend(bad)
        except Exception:
            # Keep both for the next attempt (inserts skip what is stored), but not what was
            # refused already: it is dead-lettered below, once.
            gone = {id(d) for d, _ in refused}
            with self._lock:
                self._decisions[:0] = [d for d in decisions if id(d) not in gone]
                self._outcomes[:0] = outcomes
            raise
        finally:
            self._refuse(refused)
        if not outcomes:
            return
        joins = [o for _, o in outcomes]
        try:
            parts, bad_joins = write_isolating(self._store.record_outcomes, joins)
        except Exception:
            with self._lock:
                self._outcomes[:0] = outcomes
            raise
        self._refuse(bad_joins)
        found: dict[str, bool] = {}
        for part in parts:
            found.update(part)
        refused_ids = {o.decision_id for o, _ in bad_joins}
        self.joined += sum(1 for _, o in outcomes if found.get(o.decision_id))
        horizon = time.monotonic() - self._retry_s
        retry = [
            (t, o)
            for t, o in outcomes
            if o.decision_id not in found and o.decision_id not in refused_ids and t > horizon
        ]
        if retry:
            with self._lock:
                self._outcomes[:0] = retry

    def _refuse(self, refused: Sequence[tuple[Any, str]]) -> None:
        """Dead-letter decisions or outcomes the database refused (never retried)."""
        if not refused:
            return
        self.refused += len(refused)
        log.error("decision log rows refused by the database", rows=len(refused))
        if self._dead_letter is None:
            return
        now = datetime.now(UTC)
        letters = [
            DeadLetter(
                source="decision_log",
                raw=dead_letter_raw(_as_dict(row)),
                reason=reason,
                received_at=now,
                merchant_id=row.merchant_id,
            )
            for row, reason in refused
        ]
        try:
            self._dead_letter(letters)
        except Exception:
            log.exception("could not dead-letter refused decision log rows", rows=len(letters))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except Exception:
                log.exception("decision log flush failed; will retry")


class RoutingService:
    """Owns the process's engine; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        writer: DecisionWriter | None,
        clock: Callable[[], float] = time.time,
        follow_event_time: bool = False,
        window: EventTimeWindow | None = None,
    ) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self._applied = threading.Condition(self.lock)
        self._publish_control: Callable[[dict[str, Any]], None] | None = None
        self._waiting: dict[str, BaseException | bool | None] = {}
        self._metrics = metrics
        self._writer = writer
        self._wall = clock
        # With follow_event_time, "now" is the newest event time learnt when that is ahead
        # of the wall clock: replays and accelerated simulations run breakers and decay on
        # their own timeline (settings.clock = "event").
        self._follow = follow_event_time
        self._watermark = 0.0
        # Nothing outside the accepted window of event time is learnt, and the watermark
        # never passes receipt + max_future_s: one sender cannot move the clock for others.
        self._window = window or EventTimeWindow()
        self.events_not_learnt = 0  # final events outside the window (stored, not learnt)
        self._learned = _RecentKeys(500_000)
        self.events_learned = 0
        self.stream_position: str | None = None  # of the applied stream, under the lock
        # Evidence of exactly-once learning (saved with snapshots): the final events that
        # reached learn(), taught or not, and the sum of their outcome_digest() values.
        self.outcomes_applied = 0
        self.outcomes_digest = 0
        # Embedded: outbox rows learnt since the last snapshot (it deletes them), under the lock.
        self.outbox_learnt: set[int] = set()
        self._decisions = metrics.decisions
        self._latency = metrics.decision_latency

    def _clock(self) -> float:
        wall = self._wall()
        return wall if not self._follow or wall >= self._watermark else self._watermark

    def route(self, payment: Payment) -> Decision:
        """Decide where ``payment`` goes (in-memory only)."""
        now = self._clock()
        started = time.perf_counter()
        with self.lock:
            decision = self.engine.route(payment, now)
        self._latency.observe(time.perf_counter() - started)
        self._decisions.labels(decision.policy, decision.connector).inc()
        if self._writer is not None:
            self._writer.add_decision(decision)
        return decision

    def learn(
        self,
        events: Sequence[PaymentEvent],
        position: str | None = None,
        outbox_id: int | None = None,
    ) -> None:
        """Learn from newly stored events and join their outcomes to decisions.

        ``position``: the applied-stream id these events end at, recorded in the same
        critical section, so a snapshot never pairs a position with state that lacks it.
        ``outbox_id``: embedded, the events' outbox row, likewise recorded so that the
        snapshot holding them deletes it (``outbox_learnt``).
        """
        wall = self._wall()
        # The accepted window (EventTimeWindow.verdict), inlined: this loop runs per event.
        latest = self._window.latest(wall)
        oldest = wall - self._window.max_age_s
        joined: list[DecisionOutcome] = []
        observe = self.engine.observe
        learned_keys = self._learned
        follow = self._follow
        applied = learnt = outside = 0
        digest = 0
        with self.lock:
            if position is not None:
                self.stream_position = position
            if outbox_id is not None:
                self.outbox_learnt.add(outbox_id)
            now = wall if not follow or wall >= self._watermark else self._watermark
            for event in events:
                if event.status not in _FINAL:
                    continue
                applied += 1
                digest += outcome_digest(event.event_id)
                if not learned_keys.add((event.payment_id, event.attempt, event.connector)):
                    continue
                ts = event.occurred_ts
                if ts > latest or ts < oldest:
                    # Too old to say anything about now, or dated past what ingestion
                    # accepts (an event stored by another version or an old snapshot).
                    outside += 1
                elif follow and ts > now:
                    self._watermark = now = ts
                    observe(event, now)
                    learnt += 1
                else:
                    observe(event, now)
                    learnt += 1
                if event.decision_id is not None:
                    joined.append(
                        DecisionOutcome(
                            event.decision_id,
                            str(event.status),
                            event.event_id,
                            event.occurred_at,
                            event.merchant_id,
                        )
                    )
            self.outcomes_applied += applied
            self.outcomes_digest = (self.outcomes_digest + digest) & _DIGEST
            self.events_learned += learnt
            self.events_not_learnt += outside
        if self._writer is not None:
            for outcome in joined:
                self._writer.add_outcome(outcome)

    def tick(self) -> TickReport:
        with self.lock:
            return self.engine.tick(self._clock())

    # Control messages -----------------------------------------------------------------

    def share_controls(self, publish: Callable[[dict[str, Any]], None]) -> None:
        """Send control messages through ``publish`` (the applied stream) from now on."""
        self._publish_control = publish

    def control(self, message: dict[str, Any], timeout: float = 5.0) -> None:
        """Apply ``message`` (see :meth:`apply_control`) on every instance; returns once it
        holds here. Blocks: call it from a thread.

        Raises:
            ValueError, KeyError: The engine refused it (duplicate or unknown experiment).
            TimeoutError: Shared, but this instance's tail did not read it back in time.
        """
        if self._publish_control is None:
            with self.lock:
                _apply(self.engine, message)
            return
        token = os.urandom(8).hex()
        with self.lock:
            self._waiting[token] = False
        try:
            self._publish_control({**message, "token": token})
            with self._applied:
                if not self._applied.wait_for(lambda: self._waiting[token] is not False, timeout):
                    raise TimeoutError("the change was shared but not yet applied here")
                outcome = self._waiting[token]
        finally:
            with self.lock:
                self._waiting.pop(token, None)
        if isinstance(outcome, BaseException):
            raise outcome

    def apply_control(self, message: dict[str, Any], position: str | None = None) -> None:
        """Apply a control message read from the applied stream (at ``position``, as for
        :meth:`learn`); a refused one is logged (and reported to the instance that sent it),
        never raised."""
        outcome: BaseException | None = None
        with self._applied:
            if position is not None:
                self.stream_position = position
            try:
                _apply(self.engine, message)
            except (KeyError, TypeError, ValueError) as exc:
                outcome = exc
                log.warning(
                    "control message refused", control=message.get("control"), error=str(exc)
                )
            token = message.get("token")
            if token in self._waiting:
                self._waiting[token] = outcome
                self._applied.notify_all()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.engine.snapshot()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _as_dict(row: Decision | DecisionOutcome) -> dict[str, Any]:
    if isinstance(row, Decision):
        return row.to_dict()
    return {
        "decision_id": row.decision_id,
        "status": row.status,
        "event_id": row.event_id,
        "at": row.at.isoformat(),
        "merchant_id": row.merchant_id,
    }


def _apply(engine: Engine, message: dict[str, Any]) -> None:
    """Start or stop an experiment: ``{"control": "experiment.start", "experiment": {...}}``
    (``Experiment.to_dict``) or ``{"control": "experiment.stop", "experiment_id", "at"}``."""
    kind = message.get("control")
    if kind == "experiment.start":
        engine.start_experiment(Experiment.from_dict(message["experiment"]))
    elif kind == "experiment.stop":
        engine.stop_experiment(str(message["experiment_id"]), float(message["at"]))
    else:
        raise ValueError(f"unknown control message {kind!r}")
