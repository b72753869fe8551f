"""VolumeDetector: counts against a Holt-Winters forecast, Poisson tails with tolerance."""

from __future__ import annotations

import orjson

from apos.core.detect.config import VolumeConfig
from apos.core.detect.findings import AnomalyType, Severity
from apos.core.detect.volume import VolumeDetector
from tests.core.detect_streams import openings
from tests.core.interval_streams import T0, clearings, drive, traffic

START = T0 + 6 * 3600.0


def test_a_merchant_losing_ninety_percent_of_its_volume_is_flagged_and_clears() -> None:
    drop = (START + 3 * 3600.0, START + 3 * 3600.0 + 1800.0)

    def volume(t: float, merchant: str) -> float:
        return 0.1 if merchant == "m_games" and drop[0] <= t < drop[1] else 1.0

    findings = drive(VolumeDetector(), traffic(8, START, 4.5 * 3600.0, 600.0, volume=volume))
    opened = openings(findings)
    merchant = [f for f in opened if f.entity.merchant_id == "m_games"]
    assert len(merchant) == 1
    first = merchant[0]
    assert first.anomaly_type is AnomalyType.VOLUME_DROP
    assert first.at - drop[0] <= 180.0
    steady = [f for f in findings if f.incident_key == first.incident_key and f.at >= drop[0] + 300]
    assert steady[0].active and steady[0].severity is Severity.CRITICAL  # down to a tenth
    assert first.evidence.observed <= 0.6 * first.evidence.baseline  # the min_drop gate
    # everything raised is a consequence of the drop, and it all clears after it
    assert all(f.entity.merchant_id in ("m_games", None) for f in opened)
    assert all(drop[0] <= f.at <= drop[1] for f in opened)
    assert {f.incident_key for f in clearings(findings)} == {f.incident_key for f in opened}
    assert all(f.at > drop[1] for f in clearings(findings))


def test_a_flash_sale_is_a_spike() -> None:
    sale = (START + 3 * 3600.0, START + 3 * 3600.0 + 900.0)

    base = traffic(9, START, 4 * 3600.0, 300.0)
    extra = traffic(10, sale[0], 900.0, 450.0, merchant_shares=(1.0, 0.0, 0.0))
    events = sorted(base + extra, key=lambda e: e.occurred_ts)
    opened = openings(drive(VolumeDetector(), events))
    spikes = [f for f in opened if f.entity.merchant_id == "m_shop"]
    assert spikes and spikes[0].anomaly_type is AnomalyType.VOLUME_SPIKE
    assert spikes[0].at - sale[0] <= 180.0


def test_stable_seasonal_day_stays_quiet() -> None:
    assert drive(VolumeDetector(), traffic(11, T0, 24 * 3600.0, 300.0)) == []


def test_quiet_merchants_do_not_page() -> None:
    # 20 payments a minute in all; m_media has 4 a minute: its 2-minute window expects 8,
    # below min_expected, so losing all of it is not paged (the overall count is tested)
    def volume(t: float, merchant: str) -> float:
        return 0.0 if merchant == "m_media" and t >= START + 3 * 3600.0 else 1.0

    events = traffic(12, START, 4 * 3600.0, 20.0, volume=volume, daily_amplitude=0.0)
    opened = openings(drive(VolumeDetector(VolumeConfig(min_expected=40.0)), events))
    assert all(f.entity.merchant_id != "m_media" for f in opened)


def test_snapshot_restore_continues_identically() -> None:
    drop_at = START + 2 * 3600.0

    def volume(t: float, merchant: str) -> float:
        return 0.2 if merchant == "m_shop" and t >= drop_at else 1.0

    events = traffic(13, START, 2.5 * 3600.0, 400.0, volume=volume)
    cut = next(i for i, e in enumerate(events) if e.occurred_ts >= drop_at - 30.0)
    original = VolumeDetector()
    drive(original, events[:cut])
    copy = VolumeDetector.from_dict(orjson.loads(orjson.dumps(original.to_dict())))
    assert copy.to_dict() == original.to_dict()
    rest = drive(original, events[cut:])
    assert rest == drive(copy, events[cut:])
    assert any(f.entity.merchant_id == "m_shop" for f in rest)
