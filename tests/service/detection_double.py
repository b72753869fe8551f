"""A small, real monitor for testing the shell while ``apos.core.detect.monitor`` is built
in parallel: it flags a connector whose failures in a window of event time reach a count.

It follows the Monitor interface (``observe``, ``tick``, ``snapshot``, ``restore``) and the
Finding contract (one active finding per evaluation while the condition holds, one with
``active=False`` when it clears). Windows are aligned to event time and a finding is dated
at its window's end, so every instance fed the same stream reports the same findings.
"""

from __future__ import annotations

import sys
import types
from collections import defaultdict
from typing import Any

import pytest

from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity
from apos.core.events import PaymentEvent


class FailureBurstMonitor:
    window_s = 10.0
    failures_at = 5
    critical_at = 8

    def __init__(self, config: Any = None) -> None:
        self.window: float | None = None  # start of the open window
        self.failures: dict[str, int] = defaultdict(int)
        self.active: dict[str, float] = {}  # connector -> started_at
        self.observed = 0

    def observe(self, event: PaymentEvent, now: float) -> list[Finding]:
        findings = self._close_until(now)
        if self.window is None:
            self.window = now - now % self.window_s
        self.observed += 1
        if event.status.value == "failed":
            self.failures[event.connector] += 1
        return findings

    def tick(self, now: float) -> list[Finding]:
        return self._close_until(now)

    def _close_until(self, now: float) -> list[Finding]:
        findings: list[Finding] = []
        while self.window is not None and now >= self.window + self.window_s:
            end = self.window + self.window_s
            for connector in sorted(set(self.failures) | set(self.active)):
                count = self.failures.get(connector, 0)
                if count >= self.failures_at:
                    started = self.active.setdefault(connector, self.window)
                    findings.append(self._finding(connector, count, end, started, True))
                elif connector in self.active:
                    started = self.active.pop(connector)
                    findings.append(self._finding(connector, count, end, started, False))
            self.failures = defaultdict(int)
            self.window = end
            if not self.active and now >= end + self.window_s:
                self.window = None  # idle: restart at the next event
        return findings

    def _finding(
        self, connector: str, count: int, at: float, started: float, active: bool
    ) -> Finding:
        critical = count >= self.critical_at
        return Finding(
            anomaly_type=AnomalyType.HIGH_FAILURE_RATE,
            entity=Entity(connector=connector),
            score=min(1.0, count / 10) if active else 0.0,
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            at=at,
            started_at=started,
            evidence=Evidence("failures", 0.0, float(count), "count >= 5", self.window_s, count),
            detector="failure_burst",
            active=active,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "failures": dict(self.failures),
            "active": dict(self.active),
            "observed": self.observed,
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> FailureBurstMonitor:
        monitor = cls()
        monitor.window = state["window"]
        monitor.failures = defaultdict(int, state["failures"])
        monitor.active = dict(state["active"])
        monitor.observed = state["observed"]
        return monitor


@pytest.fixture
def failure_burst_monitor(monkeypatch: pytest.MonkeyPatch) -> type[FailureBurstMonitor]:
    """Make bootstrap build this monitor instead of the core's."""
    module = types.ModuleType("apos.core.detect.monitor")
    module.Monitor = FailureBurstMonitor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "apos.core.detect.monitor", module)
    return FailureBurstMonitor
