"""Anomaly records (``anomaly_records``): one row per incident, from findings to resolution.

A detector reports a :class:`~apos.core.detect.findings.Finding` on every evaluation while a
condition holds and one with ``active=False`` when it clears. :meth:`AnomalyStore.apply`
turns that stream into incidents:

- the first active finding of an ``incident_key`` opens a record (``open``);
- later ones update it: ``last_seen_at``, the latest ``score`` and evidence, ``peak_score``,
  and ``severity`` (the highest seen: a rise is an *escalation*);
- the clearing finding resolves it (``resolution = auto``, ``ended_at`` its event time);
- an operator may acknowledge (``open`` → ``acknowledged``) or resolve it
  (``resolution = operator``). The same incident firing on is then not reopened; a new
  occurrence (a finding that starts after the record) opens a new record.

Several instances apply the same findings (each runs the same monitor over the same applied
stream, at its own pace). Two things keep one incident one record:

- a partial unique index on ``incident_key`` where ``status != 'resolved'`` and an upsert
  (``INSERT .. ON CONFLICT .. DO UPDATE``): two inserts at once make one row;
- each finding is applied in a transaction serialised per incident (a PostgreSQL
  transaction-level advisory lock on the key; SQLite has one writer), so a lagging
  instance's finding that a resolved record already covers (its event time is not after
  the record's last one) changes nothing rather than reopening it.

:meth:`apply` returns the transition a finding caused (opened, escalated, resolved), if
any: exactly one instance sees each, so alerts and the detection counter are not repeated.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from apos.adapters.db.cursors import decode_time_cursor, encode_time_cursor
from apos.adapters.db.models import anomaly_records, metric_rollups
from apos.adapters.ports import Page
from apos.core.detect.findings import Finding, Severity

__all__ = [
    "AnomalyChange",
    "AnomalyQuery",
    "AnomalyRecord",
    "AnomalyStatus",
    "AnomalyStore",
    "InvalidTransitionError",
    "SeriesPoint",
    "Transition",
]

_SEVERITY_RANK = {Severity.INFO.value: 0, Severity.WARNING.value: 1, Severity.CRITICAL.value: 2}
_CURSOR = "an"
_SERIES_MARGIN = timedelta(minutes=30)
_SERIES_MAX = timedelta(hours=24)  # the newest day of a longer incident


class AnomalyStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Transition(StrEnum):
    """What applying a finding did to its incident (``None``: an update, or nothing)."""

    OPENED = "opened"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


class InvalidTransitionError(ValueError):
    """An operator action the record's status does not allow (acknowledging a resolved one)."""

    def __init__(self, record: AnomalyRecord, action: str) -> None:
        super().__init__(f"anomaly {record.id} is {record.status}; cannot {action} it")
        self.record = record


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """One incident as stored. Event times: ``started_at`` (estimated start),
    ``detected_at`` (first flagged), ``last_seen_at``, ``ended_at``; wall-clock times:
    ``acknowledged_at``, ``resolved_at``."""

    id: str
    incident_key: str
    anomaly_type: str
    severity: str
    score: float
    peak_score: float
    status: str
    merchant_id: str | None
    connector: str | None
    segment: str | None
    detector: str | None
    started_at: datetime
    detected_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None
    evidence: dict[str, Any]
    resolution_actions: list[str]
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution: str | None

    def to_dict(self) -> dict[str, Any]:
        """The record as the API shows it."""
        return {
            "id": self.id,
            "incident_key": self.incident_key,
            "anomaly_type": self.anomaly_type,
            "severity": self.severity,
            "score": self.score,
            "peak_score": self.peak_score,
            "status": self.status,
            "merchant_id": self.merchant_id,
            "connector": self.connector,
            "segment": self.segment,
            "detector": self.detector,
            "started_at": _iso(self.started_at),
            "detected_at": _iso(self.detected_at),
            "last_seen_at": _iso(self.last_seen_at),
            "ended_at": _iso(self.ended_at),
            "evidence": self.evidence,
            "resolution_actions": self.resolution_actions,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": _iso(self.acknowledged_at),
            "resolved_by": self.resolved_by,
            "resolved_at": _iso(self.resolved_at),
            "resolution": self.resolution,
        }


@dataclass(frozen=True, slots=True)
class AnomalyChange:
    """A transition a finding caused, with the record after it."""

    transition: Transition
    record: AnomalyRecord
    previous_severity: str | None = None  # for an escalation


@dataclass(frozen=True, slots=True)
class AnomalyQuery:
    """Filters for listing anomalies, newest ``detected_at`` first. ``None`` means any."""

    status: str | None = None
    anomaly_type: str | None = None
    merchant_id: str | None = None
    connector: str | None = None
    severity: str | None = None
    since: datetime | None = None  # detected_at >= since
    until: datetime | None = None  # detected_at < until
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One minute of an entity's traffic, from ``metric_rollups``."""

    minute: datetime
    attempts: int
    successes: int
    failures: int
    latency_ms_avg: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "minute": self.minute.isoformat(),
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": self.failures,
            "success_rate": self.successes / self.attempts if self.attempts else None,
            "latency_ms_avg": self.latency_ms_avg,
        }


def _upsert(dialect: Any) -> Any:
    """INSERT .. ON CONFLICT (incident_key) WHERE status != 'resolved' DO UPDATE: a second
    instance's insert of the same incident becomes an update of the one open row."""
    stmt = dialect.insert(anomaly_records)
    ex = stmt.excluded
    t = anomaly_records.c
    return stmt.on_conflict_do_update(
        index_elements=[t.incident_key],
        index_where=sa.text("status != 'resolved'"),
        set_={
            "last_seen_at": sa.case(
                (ex.last_seen_at > t.last_seen_at, ex.last_seen_at), else_=t.last_seen_at
            ),
            "peak_score": sa.case(
                (ex.peak_score > t.peak_score, ex.peak_score), else_=t.peak_score
            ),
        },
    ).returning(t.id)


_UPSERTS = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}


class AnomalyStore:
    """Anomaly records on the store's SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    # Findings ---------------------------------------------------------------------------

    def apply(self, finding: Finding, now: datetime | None = None) -> AnomalyChange | None:
        """Fold one finding into its incident; the transition it caused, if any.

        ``now`` (wall clock, default the current time) dates an automatic resolution.
        """
        now = now or datetime.now(UTC)
        key = finding.incident_key
        at = _ts(finding.at)
        with self._engine.begin() as connection:
            self._serialise(connection, key)
            current = _one(
                connection,
                sa.select(anomaly_records).where(
                    anomaly_records.c.incident_key == key,
                    anomaly_records.c.status != AnomalyStatus.RESOLVED.value,
                ),
            )
            if not finding.active:
                if current is None or at < current.last_seen_at:
                    return None  # nothing open, or a clearing older than what we know
                values = {
                    "status": AnomalyStatus.RESOLVED.value,
                    "resolution": "auto",
                    "resolved_by": f"system:{finding.detector}",
                    "resolved_at": now,
                    "ended_at": at,
                    "last_seen_at": at,
                }
                connection.execute(
                    anomaly_records.update()
                    .where(anomaly_records.c.id == current.id)
                    .values(**values)
                )
                return AnomalyChange(Transition.RESOLVED, self._get(connection, current.id))
            if current is not None:
                return self._update(connection, current, finding)
            if self._covered(connection, key, finding):
                return None
            record_id = str(uuid.uuid4())
            evidence = _evidence(finding)
            inserted = connection.execute(
                _UPSERTS[connection.dialect.name].values(
                    id=record_id,
                    incident_key=key,
                    anomaly_type=finding.anomaly_type.value,
                    severity=finding.severity.value,
                    score=finding.score,
                    peak_score=finding.score,
                    status=AnomalyStatus.OPEN.value,
                    merchant_id=finding.entity.merchant_id,
                    connector=finding.entity.connector,
                    segment=finding.entity.segment,
                    detector=finding.detector,
                    started_at=_ts(min(finding.started_at, finding.at)),
                    detected_at=at,
                    last_seen_at=at,
                    evidence=evidence,
                    resolution_actions=[],
                )
            ).scalar_one()
            record = self._get(connection, str(inserted))
        if record.id != record_id:
            return None  # another writer opened it first (only without the lock: belt and braces)
        return AnomalyChange(Transition.OPENED, record)

    def apply_many(
        self, findings: Sequence[Finding], now: datetime | None = None
    ) -> list[AnomalyChange]:
        """:meth:`apply` each finding in order; the transitions they caused."""
        changes = []
        for finding in findings:
            change = self.apply(finding, now)
            if change is not None:
                changes.append(change)
        return changes

    def _serialise(self, connection: sa.Connection, key: str) -> None:
        if self._postgres:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))
        else:
            # Start with a write (it matches nothing) so the transaction holds SQLite's write
            # lock before it reads: a read-then-write upgrade does not wait on busy_timeout.
            connection.execute(
                anomaly_records.update().where(anomaly_records.c.id == "").values(status="open")
            )

    def _covered(self, connection: sa.Connection, key: str, finding: Finding) -> bool:
        """Whether a resolved record of ``key`` already covers this finding: its event time
        is not after the record's last, or it continues the occurrence an operator resolved
        (same or earlier start). Then it is a lagging instance's copy, or the same incident
        firing on, and must not reopen anything."""
        t = anomaly_records.c
        started = _ts(finding.started_at)
        stmt = (
            sa.select(t.id)
            .where(
                t.incident_key == key,
                t.status == AnomalyStatus.RESOLVED.value,
                sa.or_(t.last_seen_at >= _ts(finding.at), t.started_at >= started),
            )
            .limit(1)
        )
        return connection.execute(stmt).first() is not None

    def _update(
        self, connection: sa.Connection, current: AnomalyRecord, finding: Finding
    ) -> AnomalyChange | None:
        at = _ts(finding.at)
        values: dict[str, Any] = {}
        if at >= current.last_seen_at:
            values.update(last_seen_at=at, score=finding.score, evidence=_evidence(finding))
        if finding.score > current.peak_score:
            values["peak_score"] = finding.score
        escalated = _SEVERITY_RANK[finding.severity.value] > _SEVERITY_RANK.get(current.severity, 0)
        if escalated:
            values["severity"] = finding.severity.value
        if not values:
            return None
        connection.execute(
            anomaly_records.update().where(anomaly_records.c.id == current.id).values(**values)
        )
        if not escalated:
            return None
        return AnomalyChange(
            Transition.ESCALATED, self._get(connection, current.id), current.severity
        )

    # Operators --------------------------------------------------------------------------

    def acknowledge(self, record_id: str, actor: str, now: datetime | None = None) -> AnomalyRecord:
        """``open`` → ``acknowledged``. Raises :class:`InvalidTransitionError` otherwise,
        ``KeyError`` for an unknown id."""
        now = now or datetime.now(UTC)
        t = anomaly_records.c
        with self._engine.begin() as connection:
            done = connection.execute(
                anomaly_records.update()
                .where(t.id == record_id, t.status == AnomalyStatus.OPEN.value)
                .values(
                    status=AnomalyStatus.ACKNOWLEDGED.value,
                    acknowledged_by=actor,
                    acknowledged_at=now,
                )
            ).rowcount
            record = self._find(connection, record_id)
        if record is None:
            raise KeyError(record_id)
        if not done:
            raise InvalidTransitionError(record, "acknowledge")
        return record

    def resolve(
        self,
        record_id: str,
        actor: str,
        actions: Sequence[str] = (),
        now: datetime | None = None,
    ) -> AnomalyRecord:
        """``open`` or ``acknowledged`` → ``resolved`` by an operator, appending ``actions``
        (what was done) to ``resolution_actions``. The record ends at its last event time."""
        now = now or datetime.now(UTC)
        t = anomaly_records.c
        with self._engine.begin() as connection:
            record = self._find_serialised(connection, record_id)
            if record is None:
                raise KeyError(record_id)
            if record.status == AnomalyStatus.RESOLVED.value:
                raise InvalidTransitionError(record, "resolve")
            connection.execute(
                anomaly_records.update()
                .where(t.id == record_id, t.status != AnomalyStatus.RESOLVED.value)
                .values(
                    status=AnomalyStatus.RESOLVED.value,
                    resolution="operator",
                    resolved_by=actor,
                    resolved_at=now,
                    ended_at=record.last_seen_at,
                    resolution_actions=[*record.resolution_actions, *actions],
                )
            )
            return self._get(connection, record_id)

    # Reads ------------------------------------------------------------------------------

    def get(self, record_id: str) -> AnomalyRecord | None:
        with self._engine.connect() as connection:
            return self._find(connection, record_id)

    def list_anomalies(self, query: AnomalyQuery) -> Page[AnomalyRecord]:
        """Records matching ``query``, newest ``detected_at`` first (keyset cursor)."""
        t = anomaly_records.c
        size = max(1, min(query.limit, 1000))
        stmt = sa.select(anomaly_records)
        for column, value in (
            (t.status, query.status),
            (t.anomaly_type, query.anomaly_type),
            (t.merchant_id, query.merchant_id),
            (t.connector, query.connector),
            (t.severity, query.severity),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if query.since is not None:
            stmt = stmt.where(t.detected_at >= query.since)
        if query.until is not None:
            stmt = stmt.where(t.detected_at < query.until)
        if query.cursor is not None:
            at, last_id = decode_time_cursor(query.cursor, _CURSOR)
            stmt = stmt.where(
                sa.or_(t.detected_at < at, sa.and_(t.detected_at == at, t.id < last_id))
            )
        stmt = stmt.order_by(t.detected_at.desc(), t.id.desc()).limit(size + 1)
        with self._engine.connect() as connection:
            found = [_record(row) for row in connection.execute(stmt).mappings()]
        if len(found) <= size:
            return Page(items=found, next_cursor=None)
        last = found[size - 1]
        return Page(found[:size], encode_time_cursor(_CURSOR, last.detected_at, last.id))

    def open_summary(self, merchant_id: str | None = None, newest: int = 5) -> dict[str, Any]:
        """Unresolved records: how many, by type and by severity, and the newest few."""
        t = anomaly_records.c
        where = [t.status != AnomalyStatus.RESOLVED.value]
        if merchant_id is not None:
            where.append(t.merchant_id == merchant_id)
        counts = (
            sa.select(t.anomaly_type, t.severity, sa.func.count())
            .where(*where)
            .group_by(t.anomaly_type, t.severity)
        )
        latest = (
            sa.select(anomaly_records)
            .where(*where)
            .order_by(t.detected_at.desc(), t.id.desc())
            .limit(newest)
        )
        by_type: dict[str, int] = {}
        by_severity: dict[str, int] = {}
        with self._engine.connect() as connection:
            for anomaly_type, severity, count in connection.execute(counts):
                by_type[anomaly_type] = by_type.get(anomaly_type, 0) + count
                by_severity[severity] = by_severity.get(severity, 0) + count
            records = [_record(row) for row in connection.execute(latest).mappings()]
        return {
            "open": sum(by_type.values()),
            "by_type": by_type,
            "by_severity": by_severity,
            "newest": [
                {
                    "id": r.id,
                    "anomaly_type": r.anomaly_type,
                    "severity": r.severity,
                    "status": r.status,
                    "merchant_id": r.merchant_id,
                    "connector": r.connector,
                    "segment": r.segment,
                    "score": r.score,
                    "started_at": _iso(r.started_at),
                    "detected_at": _iso(r.detected_at),
                }
                for r in records
            ],
        }

    def series(
        self, record: AnomalyRecord, margin: timedelta = _SERIES_MARGIN
    ) -> tuple[list[SeriesPoint], bool]:
        """The entity's per-minute traffic from ``metric_rollups`` over the incident ±
        ``margin`` (the newest day of it at most; the flag says it was cut).

        Rollups are per (minute, merchant, connector): an entity without a merchant sums its
        connector across merchants; one without either is the whole system. A ``segment``
        (payment method, fingerprint) is finer than the rollups, so it is not applied.
        """
        t = metric_rollups.c
        end = (record.ended_at or record.last_seen_at) + margin
        start = (record.started_at - margin).replace(second=0, microsecond=0)
        cut = end - start > _SERIES_MAX
        if cut:
            start = end - _SERIES_MAX
        stmt = sa.select(
            t.minute,
            sa.func.sum(t.attempts),
            sa.func.sum(t.successes),
            sa.func.sum(t.failures),
            sa.func.sum(t.latency_ms_sum),
            sa.func.sum(t.latency_count),
        ).where(t.minute >= start, t.minute <= end)
        if record.merchant_id is not None:
            stmt = stmt.where(t.merchant_id == record.merchant_id)
        if record.connector is not None:
            stmt = stmt.where(t.connector == record.connector)
        stmt = stmt.group_by(t.minute).order_by(t.minute)
        points = []
        with self._engine.connect() as connection:
            for minute, attempts, successes, failures, latency_sum, latency_n in connection.execute(
                stmt
            ):
                points.append(
                    SeriesPoint(
                        minute=_aware(minute),
                        attempts=int(attempts or 0),
                        successes=int(successes or 0),
                        failures=int(failures or 0),
                        latency_ms_avg=float(latency_sum) / int(latency_n) if latency_n else None,
                    )
                )
        return points, cut

    def _find_serialised(self, connection: sa.Connection, record_id: str) -> AnomalyRecord | None:
        """The record, read under the lock its incident's findings are applied under."""
        if not self._postgres:
            self._serialise(connection, "")
            return self._find(connection, record_id)
        record = self._find(connection, record_id)
        if record is None:
            return None
        self._serialise(connection, record.incident_key)
        return self._find(connection, record_id)

    def _find(self, connection: sa.Connection, record_id: str) -> AnomalyRecord | None:
        return _one(connection, sa.select(anomaly_records).where(anomaly_records.c.id == record_id))

    def _get(self, connection: sa.Connection, record_id: str) -> AnomalyRecord:
        record = self._find(connection, record_id)
        assert record is not None
        return record


def _one(connection: sa.Connection, stmt: sa.Select[Any]) -> AnomalyRecord | None:
    row = connection.execute(stmt).mappings().first()
    return None if row is None else _record(row)


def _record(row: sa.RowMapping) -> AnomalyRecord:
    return AnomalyRecord(
        id=row["id"],
        incident_key=row["incident_key"],
        anomaly_type=row["anomaly_type"],
        severity=row["severity"],
        score=row["score"],
        peak_score=row["peak_score"],
        status=row["status"],
        merchant_id=row["merchant_id"],
        connector=row["connector"],
        segment=row["segment"],
        detector=row["detector"],
        started_at=row["started_at"],
        detected_at=row["detected_at"],
        last_seen_at=row["last_seen_at"],
        ended_at=row["ended_at"],
        evidence=row["evidence"] or {},
        resolution_actions=list(row["resolution_actions"] or []),
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        resolved_by=row["resolved_by"],
        resolved_at=row["resolved_at"],
        resolution=row["resolution"],
    )


def _evidence(finding: Finding) -> dict[str, Any]:
    return {**finding.evidence.to_dict(), "at": finding.at, "started_at": finding.started_at}


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
