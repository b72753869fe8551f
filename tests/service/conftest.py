"""An APOS app on each backend, with keys of every role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from apos.service.app import build_app
from apos.service.auth import Role, issue_key
from apos.service.bootstrap import Services, build_services
from apos.settings import Settings


@dataclass
class Api:
    """A test client plus a key per role; ``as_(name)`` gives auth headers."""

    client: TestClient
    services: Services
    tokens: dict[str, str]

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def add_key(self, who: str, role: Role, merchant_id: str | None = None) -> str:
        issued = issue_key(who, role, merchant_id, datetime.now(UTC))
        self.services.store.create_api_key(issued.record)
        self.tokens[who] = issued.token
        return issued.record.id


def make_event(n: int = 1, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"evt_{n}",
        "payment_id": f"pay_{n}",
        "merchant_id": "m_alpha",
        "connector": "stripe",
        "status": "succeeded",
        "amount": 1999,
        "currency": "USD",
        "payment_method": "card",
        "card_network": "visa",
        "issuer_country": "US",
        "latency_ms": 321.5,
        "occurred_at": "2026-11-25T10:00:00Z",
    }
    event.update(overrides)
    return event


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    # A fixed consumer name fixes the engine's seed: the same test draws the same numbers.
    settings = Settings(database_url=database_url, consumer_name="test")
    services = build_services(settings)
    app = build_app(settings, services)
    with TestClient(app) as client:
        result = Api(client, services, {})
        result.add_key("admin", Role.ADMIN)
        result.add_key("operator", Role.OPERATOR)
        result.add_key("viewer", Role.VIEWER)
        result.add_key("alpha", Role.OPERATOR, "m_alpha")
        result.add_key("beta", Role.OPERATOR, "m_beta")
        yield result
    services.close()
