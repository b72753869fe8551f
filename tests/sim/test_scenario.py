"""Scenario files: every shipped one loads; every mistake names the key that is wrong."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from apos.sim.scenario import (
    Degradation,
    Outage,
    ScenarioError,
    load_scenario,
    parse_duration,
    parse_scenario,
    scenario_dir,
    scenario_names,
)
from apos.sim.suite import SUITE
from tests.sim.conftest import tiny_doc


def test_every_shipped_scenario_loads() -> None:
    names = scenario_names()
    assert set(SUITE) <= set(names)
    assert "realistic_day" in names
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.description


def test_load_by_path_and_by_name_agree() -> None:
    by_name = load_scenario("sudden_outage")
    by_path = load_scenario(scenario_dir() / "sudden_outage.toml")
    assert by_name.connectors == by_path.connectors
    assert isinstance(by_name.events[0], Outage)


def test_realistic_day_uses_every_feature() -> None:
    scenario = load_scenario("realistic_day")
    kinds = {e.kind for e in scenario.events}
    assert kinds == {"outage", "degradation", "flapping", "connector_added", "fraud_burst"}
    assert scenario.traffic.payments == 1_000_000
    assert scenario.traffic.bursts
    drift = next(e for e in scenario.events if isinstance(e, Degradation))
    assert drift.ramp == 7200 and drift.where == {"issuer_country": frozenset({"GB", "DE"})}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        (12, 12.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10x", "h", "1h 30", "-5m", -1, True, None])
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def _broken(edit: Any) -> ScenarioError:
    doc = copy.deepcopy(tiny_doc())
    edit(doc)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc, "broken.toml")
    return info.value


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (
            lambda d: d["connectors"][0].update(sucess_rate=0.9),
            "connectors[0].sucess_rate",
            "unknown key",
        ),
        (
            lambda d: d["connectors"][1].update(success_rate=1.2),
            "connectors[1].success_rate",
            "<= 1",
        ),
        (
            lambda d: d["connectors"][0].update(success_rate="high"),
            "connectors[0].success_rate",
            "number",
        ),
        (lambda d: d["connectors"][0].pop("latency_ms"), "connectors[0].latency_ms", "required"),
        (
            lambda d: d["connectors"][0]["latency_ms"].update(p95=10),
            "connectors[0].latency_ms.p95",
            ">= median",
        ),
        (
            lambda d: d["connectors"][0]["segment_rates"].update(issuer={"BR": 0.5}),
            "connectors[0].segment_rates.issuer",
            "unknown segment dimension",
        ),
        (
            lambda d: d["connectors"][0]["segment_rates"]["issuer_country"].update(FR=0.5),
            "connectors[0].segment_rates.issuer_country.FR",
            "never occurs",
        ),
        (lambda d: d["connectors"][1].update(name="A"), "connectors[1].name", "duplicate"),
        (
            lambda d: d["connectors"][0].update(decline_codes={"nope": 1.0}),
            "connectors[0].decline_codes.nope",
            "unknown decline code",
        ),
        (
            lambda d: d["events"][0].update(connector="zzz"),
            "events[0].connector",
            "no connector named",
        ),
        (lambda d: d["events"][0].update(kind="meltdown"), "events[0].kind", "unknown event kind"),
        (lambda d: d["events"][0].update(end="30m"), "events[0].end", "after start"),
        (lambda d: d["events"][0].update(start="soon"), "events[0].start", "not a duration"),
        (
            lambda d: d["events"][0].update(where={"card_network": "discover"}),
            "events[0].where.card_network",
            "never occurs",
        ),
        (lambda d: d["traffic"].update(daily=[1.0] * 23), "traffic.daily", "24"),
        (lambda d: d["traffic"].pop("payments"), "traffic.payments", "required"),
        (lambda d: d["traffic"].update(start="yesterday"), "traffic.start", "ISO 8601"),
        (lambda d: d["merchants"][0].update(currency="XXY"), "merchants[0].currency", "ISO 4217"),
        (lambda d: d["mix"]["issuer_country"].update(ZZ=0.1), "mix.issuer_country.ZZ", "3166"),
        (lambda d: d["scenario"].pop("name"), "scenario.name", "required"),
        (lambda d: d.update(extra={"x": 1}), "extra", "unknown key"),
        (lambda d: d.pop("connectors"), "connectors", "at least one"),
    ],
)
def test_errors_name_the_bad_key(edit: Any, key: str, words: str) -> None:
    error = _broken(edit)
    assert error.key == key
    assert words in str(error)
    assert str(error).startswith("broken.toml: " + key)


def test_fraud_burst_needs_a_known_merchant() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["events"].append(
            {"kind": "fraud_burst", "merchant": "m9", "start": "1h", "end": "2h", "attempts": 10}
        )

    assert _broken(edit).key == "events[1].merchant"


def test_invalid_toml_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[scenario\nname = 'x'\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(path)


def test_values_are_normalised() -> None:
    doc = tiny_doc()
    doc["connectors"][0]["name"] = "Stripe"
    doc["events"][0]["connector"] = "STRIPE"
    doc["mix"]["card_network"] = {"VISA": 3, "Mastercard": 1}
    doc["mix"]["issuer_country"] = {"us": 1}
    doc["connectors"][0]["segment_rates"] = {"card_network": {"Visa": 0.95}}
    doc["connectors"][1]["segment_rates"] = {}
    scenario = parse_scenario(doc)
    assert scenario.connector_names == ("stripe", "b")
    assert scenario.mix["card_network"] == {"visa": 0.75, "mastercard": 0.25}
    assert scenario.connectors[0].segment_rates == {"card_network": {"visa": 0.95}}
