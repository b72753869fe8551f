"""Every configuration change is an admin's, and a scoped admin's only for its own merchant.

Configuration is whatever decides how live traffic is routed or who may act: experiments
(they hand a share of a merchant's payments to another policy), decision-engine merchant
accounts and rule configurations, and API keys. Operators run traffic through APOS (route,
send events and webhooks) and viewers read; neither may change configuration
(``docs/api.md``, "Keys, roles, merchant scope"). Each endpoint is tried with every role; a
refused call must change nothing, which the audit log (every change is audited) shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from apos.service.auth import Role
from tests.service.conftest import Api

ALPHA, BETA = "m_alpha", "m_beta"
SR_RULE = {
    "config": {
        "type": "successRate",
        "data": {"defaultBucketSize": 20, "subLevelInputConfig": []},
    }
}


def _experiment(merchant: str, n: int) -> dict[str, Any]:
    return {
        "experiment_id": f"exp_{merchant}_{n}",
        "control": {"policy": "rules"},
        "treatment": {"policy": "thompson"},
        "merchant_id": merchant,
    }


@dataclass
class ConfigEndpoint:
    """One configuration-changing call: ``prepare`` (as an unscoped admin) whatever it acts
    on for a merchant, then ``call`` it as someone for that merchant."""

    name: str
    prepare: Callable[[Api, str], Any]
    call: Callable[[Api, str, str, Any], httpx.Response]


def _nothing(api: Api, merchant: str) -> None:
    return None


def _merchant(api: Api, merchant: str) -> None:
    r = api.client.post(
        "/merchant-account/create", json={"merchant_id": merchant}, headers=api.as_("admin")
    )
    assert r.status_code == 200, r.text


def _merchant_with_rule(api: Api, merchant: str) -> None:
    _merchant(api, merchant)
    r = api.client.post(
        "/rule/create", json={"merchant_id": merchant, **SR_RULE}, headers=api.as_("admin")
    )
    assert r.status_code == 200, r.text


def _running_experiment(api: Api, merchant: str) -> str:
    body = _experiment(merchant, 0)
    r = api.client.post("/v1/experiments", json=body, headers=api.as_("admin"))
    assert r.status_code == 201, r.text
    return str(body["experiment_id"])


def _key(api: Api, merchant: str) -> str:
    r = api.client.post(
        "/v1/keys",
        json={"name": "k", "role": "viewer", "merchant_id": merchant},
        headers=api.as_("admin"),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


_calls = iter(range(1, 10**6))

ENDPOINTS = [
    ConfigEndpoint(
        "POST /v1/experiments",
        _nothing,
        lambda api, who, m, _: api.client.post(
            "/v1/experiments", json=_experiment(m, next(_calls)), headers=api.as_(who)
        ),
    ),
    ConfigEndpoint(
        "POST /v1/experiments/{id}/stop",
        _running_experiment,
        lambda api, who, m, exp: api.client.post(
            f"/v1/experiments/{exp}/stop", headers=api.as_(who)
        ),
    ),
    ConfigEndpoint(
        "POST /merchant-account/create",
        _nothing,
        lambda api, who, m, _: api.client.post(
            "/merchant-account/create", json={"merchant_id": m}, headers=api.as_(who)
        ),
    ),
    ConfigEndpoint(
        "DELETE /merchant-account/{id}",
        _merchant,
        lambda api, who, m, _: api.client.delete(f"/merchant-account/{m}", headers=api.as_(who)),
    ),
    ConfigEndpoint(
        "POST /rule/create",
        _merchant,
        lambda api, who, m, _: api.client.post(
            "/rule/create", json={"merchant_id": m, **SR_RULE}, headers=api.as_(who)
        ),
    ),
    ConfigEndpoint(
        "POST /rule/update",
        _merchant_with_rule,
        lambda api, who, m, _: api.client.post(
            "/rule/update", json={"merchant_id": m, **SR_RULE}, headers=api.as_(who)
        ),
    ),
    ConfigEndpoint(
        "POST /rule/delete",
        _merchant_with_rule,
        lambda api, who, m, _: api.client.post(
            "/rule/delete",
            json={"merchant_id": m, "algorithm": "successRate"},
            headers=api.as_(who),
        ),
    ),
    ConfigEndpoint(
        "POST /v1/keys",
        _nothing,
        lambda api, who, m, _: api.client.post(
            "/v1/keys", json={"name": "n", "role": "viewer", "merchant_id": m}, headers=api.as_(who)
        ),
    ),
    ConfigEndpoint(
        "DELETE /v1/keys/{id}",
        _key,
        lambda api, who, m, key_id: api.client.delete(f"/v1/keys/{key_id}", headers=api.as_(who)),
    ),
]


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Roles are decided before any storage: one backend is enough (and keeps this fast)."""
    return sqlite_url


def _audit_size(api: Api) -> int:
    r = api.client.get("/v1/audit", params={"limit": 1000}, headers=api.as_("admin"))
    return len(r.json()["items"])


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_only_an_admin_changes_configuration_and_a_scoped_one_only_its_own(
    api: Api, endpoint: ConfigEndpoint
) -> None:
    api.add_key("alpha_admin", Role.ADMIN, ALPHA)
    target = {m: endpoint.prepare(api, m) for m in (ALPHA, BETA)}
    changes = _audit_size(api)

    for who in ("viewer", "operator", "alpha"):  # the last: an operator scoped to alpha
        r = endpoint.call(api, who, ALPHA, target[ALPHA])
        assert (r.status_code, r.json().get("code")) == (403, "insufficient_role"), (who, r.text)
    assert _audit_size(api) == changes, "a refused call changed something"

    other = endpoint.call(api, "alpha_admin", BETA, target[BETA])
    assert other.status_code in (403, 404), other.text  # 404: no oracle of what others have
    assert _audit_size(api) == changes

    own = endpoint.call(api, "alpha_admin", ALPHA, target[ALPHA])
    assert 200 <= own.status_code < 300, own.text
    anyone = endpoint.call(api, "admin", BETA, target[BETA])
    assert 200 <= anyone.status_code < 300, anyone.text
    assert _audit_size(api) == changes + 2


def test_an_unscoped_experiment_needs_an_unscoped_admin(api: Api) -> None:
    """An experiment without ``merchant_id`` routes every merchant's traffic: a scoped admin
    starting one gets one for its own merchant only."""
    api.add_key("alpha_admin", Role.ADMIN, ALPHA)
    body = {**_experiment(ALPHA, 99), "merchant_id": None}
    r = api.client.post("/v1/experiments", json=body, headers=api.as_("alpha_admin"))
    assert r.status_code == 201, r.text
    assert r.json()["merchant_id"] == ALPHA
    global_one = {**_experiment(ALPHA, 100), "merchant_id": None}
    r = api.client.post("/v1/experiments", json=global_one, headers=api.as_("admin"))
    assert r.status_code == 201 and r.json()["merchant_id"] is None
