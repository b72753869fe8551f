"""Monitor: composition, event-time clamping, interval cadence, determinism, snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Self

import orjson
import pytest

from apos.core.detect.base import Detector
from apos.core.detect.config import DetectionConfig
from apos.core.detect.findings import Finding
from apos.core.detect.monitor import DETECTORS, Monitor
from apos.core.events import PaymentEvent, PaymentStatus
from tests.core.detect_streams import openings
from tests.core.interval_streams import T0, drive, traffic

START = T0 + 8 * 3600.0


class Probe:
    """A detector that records what the Monitor hands it."""

    name = "probe"

    def __init__(self) -> None:
        self.learnt: list[float] = []
        self.evaluated: list[float] = []

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        self.learnt.append(now)
        return []

    def evaluate(self, now: float) -> list[Finding]:
        self.evaluated.append(now)
        return []

    def to_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        return cls()


def event_at(ts: float) -> PaymentEvent:
    return PaymentEvent.model_construct(
        event_id="e",
        payment_id="p",
        merchant_id="m1",
        connector="adyen",
        status=PaymentStatus.SUCCEEDED,
        amount=100,
        currency="EUR",
        occurred_at=datetime.fromtimestamp(ts, UTC),
    )


def test_every_detector_is_registered_and_follows_the_protocol() -> None:
    monitor = Monitor()
    names = [d.name for d in monitor.detectors]
    assert names == list(DETECTORS)
    assert {"success_rate", "latency", "volume", "unusual_amount", "fraud", "series"} <= set(names)
    assert all(isinstance(d, Detector) for d in monitor.detectors)


def test_an_event_dated_after_now_counts_at_now() -> None:
    probe = Probe()
    monitor = Monitor(detectors=[probe])
    monitor.observe(event_at(START + 500.0), now=START)  # a sender's clock ahead
    monitor.observe(event_at(START - 5.0), now=START)  # a late event keeps its own time
    assert probe.learnt == [START, START - 5.0]


def test_detectors_are_evaluated_once_per_interval_however_often_ticked() -> None:
    probe = Probe()
    monitor = Monitor(DetectionConfig(interval_s=10.0), detectors=[probe])
    for k in range(100):  # ticked every 0.5 s for 50 s
        monitor.tick(START + 0.5 * k)
    assert probe.evaluated == [START + 10.0 * i for i in range(5)]


def test_enabled_selects_detectors_and_rejects_unknown_names() -> None:
    monitor = Monitor(DetectionConfig(enabled=("volume", "success_rate")))
    assert [d.name for d in monitor.detectors] == ["success_rate", "volume"]
    with pytest.raises(ValueError, match="unknown detector"):
        Monitor(DetectionConfig(enabled=("volumes",)))


def test_config_round_trips_and_names_bad_keys() -> None:
    config = DetectionConfig.from_dict(
        {"interval_s": 5, "latency": {"threshold": 10}, "fraud": {}, "enabled": ["volume"]}
    )
    assert config.interval_s == 5.0 and config.latency.threshold == 10.0
    assert DetectionConfig.from_dict(orjson.loads(orjson.dumps(config.to_dict()))) == config
    for bad, message in [
        ({"success_rate": {"delta": 1.5}}, "success_rate.delta"),
        ({"volume": {"alpha": "small"}}, "volume.alpha"),
        ({"latency": {"per_merchant": True}}, "latency.per_merchant: unknown key"),
        ({"intervals": 5}, "intervals: unknown key"),
    ]:
        with pytest.raises(ValueError, match=message):
            DetectionConfig.from_dict(bad)
    with pytest.raises(ValueError, match="fraud"):
        Monitor(DetectionConfig.from_dict({"fraud": {"no_such_threshold": 1}}))


def incident_stream(seed: int) -> list[PaymentEvent]:
    outage = (START + 2 * 3600.0, START + 2 * 3600.0 + 900.0)

    def success(t: float, connector: str) -> float:
        return 0.0 if connector == "checkout" and outage[0] <= t < outage[1] else 0.92

    return traffic(seed, START, 3 * 3600.0, 400.0, success=success)


def test_same_stream_same_findings() -> None:
    events = incident_stream(21)
    first = drive(Monitor(), events)
    second = drive(Monitor(), events)
    assert first == second
    assert any(
        f.entity.key == "c=checkout" and f.anomaly_type.value == "HighFailureRate"
        for f in openings(first)
    )


def test_snapshot_restore_continues_identically() -> None:
    events = incident_stream(22)
    cut = next(i for i, e in enumerate(events) if e.occurred_ts >= START + 2 * 3600.0 - 20.0)
    original = Monitor()
    drive(original, events[:cut])
    snapshot = orjson.loads(orjson.dumps(original.snapshot()))
    copy = Monitor.restore(snapshot)
    assert copy.snapshot() == snapshot
    rest = drive(original, events[cut:])
    assert rest == drive(copy, events[cut:])
    assert rest


def test_restore_refuses_what_it_cannot_read() -> None:
    snapshot = Monitor().snapshot()
    with pytest.raises(ValueError, match="version"):
        Monitor.restore({**snapshot, "version": 99})
    with pytest.raises(ValueError, match="unknown detector"):
        Monitor.restore({**snapshot, "detectors": [["mystery", {}]]})
