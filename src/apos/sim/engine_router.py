"""The real APOS ``Engine`` as a simulator router, collecting what it reports.

The engine already has the router surface (``route`` / ``observe`` / ``tick``); this adapter
only builds it for a run and turns what ``tick`` returns (anomalies raised, actions taken)
into :class:`~apos.sim.routers.Note` s for the report.
"""

from __future__ import annotations

from typing import Any

from apos.sim.routers import Note, RunContext

__all__ = ["EngineRouter"]


def _text(item: Any) -> str:
    for attr in ("summary", "description", "message", "reason", "text"):
        value = getattr(item, attr, None)
        if isinstance(value, str) and value:
            kind = getattr(item, "kind", None) or getattr(item, "type", None)
            target = getattr(item, "connector", None) or getattr(item, "target", None)
            prefix = " ".join(str(x) for x in (kind, target) if x)
            return f"{prefix}: {value}" if prefix else value
    return str(item)


def _state(value: Any) -> str:
    return str(getattr(value, "value", value))


class EngineRouter:
    """Drives an ``apos.Engine`` and keeps the anomalies and actions it reports."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.route = engine.route  # the hot path goes straight to the engine
        self.observe = engine.observe
        self._notes: list[Note] = []

    @classmethod
    def build(cls, ctx: RunContext) -> EngineRouter:
        """An engine over the run's connectors, seeded from the run."""
        try:
            from apos.core.engine import Engine
        except ImportError as exc:  # pragma: no cover - depends on the core being present
            raise RuntimeError("apos.core.engine.Engine is not available yet") from exc
        kwargs = dict(ctx.options.get("engine", {}))
        return cls(Engine(connectors=list(ctx.connectors), seed=ctx.seed, **kwargs))

    def tick(self, now: float) -> object:
        """Tick the engine and record what it reports."""
        result = self.engine.tick(now)
        if result is not None:
            self._collect(result, now)
        return result

    def _collect(self, report: Any, now: float) -> None:
        for t in getattr(report, "transitions", ()):
            scope = f"merchant {t.merchant_id}" if t.merchant_id else "all merchants"
            self._notes.append(
                Note(
                    float(getattr(t, "at", now)),
                    "action",
                    f"{t.connector} breaker {_state(t.from_state)} -> {_state(t.to_state)} "
                    f"({scope}): {t.reason}",
                )
            )
        for a in getattr(report, "anomalies", ()):  # detectors, once the engine reports them
            self._notes.append(Note(float(getattr(a, "at", now)), "anomaly", _text(a)))
        for a in getattr(report, "actions", ()):
            self._notes.append(Note(float(getattr(a, "at", now)), "action", _text(a)))

    def drain_notes(self) -> list[Note]:
        """Notes recorded since the last call."""
        notes, self._notes = self._notes, []
        return notes
