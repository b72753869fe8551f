"""Small hand-made scenarios for the simulator's tests."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from apos.sim.scenario import Scenario, parse_scenario

TINY = """
[scenario]
name = "tiny"
seed = 3

[traffic]
payments = 4000
start = "2026-03-03T00:00:00Z"
duration = "4h"

[mix.card_network]
visa = 0.7
mastercard = 0.3
[mix.issuer_country]
US = 0.8
BR = 0.2

[[merchants]]
id = "m1"
currency = "USD"
amount = { median = 2000, p95 = 8000 }

[[connectors]]
name = "a"
success_rate = 0.9
latency_ms = { median = 300, p95 = 900 }
segment_rates = { issuer_country = { BR = 0.6 } }

[[connectors]]
name = "b"
success_rate = 0.8
latency_ms = { median = 300, p95 = 900 }
segment_rates = { issuer_country = { BR = 0.85 } }

[[events]]
kind = "outage"
connector = "a"
start = "1h"
end = "2h"
"""


def tiny_doc(**sections: Any) -> dict[str, Any]:
    """The tiny scenario as a TOML document, with top-level sections replaced."""
    doc = tomllib.loads(TINY)
    doc.update(sections)
    return doc


@pytest.fixture
def tiny() -> Scenario:
    return parse_scenario(tiny_doc(), "tiny.toml")
