"""The anomalies API through the ASGI app: listing and filters, one record with its evidence
and series, acknowledge and resolve with roles, merchant scope, audit and error codes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity
from tests.service.conftest import Api, make_event

T0 = time.time() - 3600
T0 -= T0 % 60


def raise_finding(
    api: Api,
    *,
    merchant_id: str | None,
    connector: str = "adyen",
    kind: AnomalyType = AnomalyType.HIGH_FAILURE_RATE,
    severity: Severity = Severity.CRITICAL,
    at: float = T0 + 120,
) -> str:
    anomalies = api.services.anomalies
    assert anomalies is not None
    change = anomalies.apply(
        Finding(
            anomaly_type=kind,
            entity=Entity(merchant_id=merchant_id, connector=connector),
            score=0.999,
            severity=severity,
            at=at,
            started_at=at - 60,
            evidence=Evidence("success_rate", 0.97, 0.2, "Bernoulli CUSUM", 60.0, 250),
            detector="success_rate",
        )
    )
    assert change is not None
    return change.record.id


def test_list_filters_and_merchant_scope(api: Api) -> None:
    alpha = raise_finding(api, merchant_id="m_alpha")
    beta = raise_finding(api, merchant_id="m_beta", kind=AnomalyType.VOLUME_DROP)
    wide = raise_finding(api, merchant_id=None, connector="stripe", severity=Severity.WARNING)
    client = api.client

    every = client.get("/v1/anomalies", headers=api.as_("viewer")).json()["items"]
    assert {a["id"] for a in every} == {alpha, beta, wide}
    drops = client.get(
        "/v1/anomalies", params={"anomaly_type": "VolumeDrop"}, headers=api.as_("viewer")
    ).json()["items"]
    assert [a["id"] for a in drops] == [beta]
    warnings = client.get(
        "/v1/anomalies", params={"severity": "warning"}, headers=api.as_("viewer")
    ).json()["items"]
    assert [a["id"] for a in warnings] == [wide]
    stripe = client.get(
        "/v1/anomalies", params={"connector": "STRIPE"}, headers=api.as_("viewer")
    ).json()["items"]
    assert [a["id"] for a in stripe] == [wide]
    later = datetime.fromtimestamp(T0 + 3000, UTC).isoformat()
    assert (
        client.get("/v1/anomalies", params={"since": later}, headers=api.as_("viewer")).json()[
            "items"
        ]
        == []
    )

    # A scoped key sees its merchant's records only, and may not ask for another's.
    scoped = client.get("/v1/anomalies", headers=api.as_("alpha")).json()["items"]
    assert [a["id"] for a in scoped] == [alpha]
    refused = client.get(
        "/v1/anomalies", params={"merchant_id": "m_beta"}, headers=api.as_("alpha")
    )
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden_merchant"

    for params in ({"status": "closed"}, {"cursor": "bm9wZQ"}, {"since": "2026-01-01T00:00"}):
        wrong = client.get("/v1/anomalies", params=params, headers=api.as_("viewer"))
        assert wrong.status_code == 422, params
    assert client.get("/v1/anomalies").status_code == 401


def test_pages_with_cursor(api: Api) -> None:
    ids = [
        raise_finding(api, merchant_id="m_alpha", connector=f"c{i}", at=T0 + 60 * i)
        for i in range(5)
    ]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = api.client.get("/v1/anomalies", params=params, headers=api.as_("viewer")).json()
        seen += [a["id"] for a in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == list(reversed(ids))


def test_one_anomaly_with_evidence_and_the_series_around_it(api: Api) -> None:
    events = [
        make_event(
            n,
            merchant_id="m_alpha",
            connector="adyen",
            status="failed" if 60 <= n < 120 and n % 2 else "succeeded",
            occurred_at=T0 + n,
        )
        for n in range(240)
    ]
    assert (
        api.client.post("/v1/events", json=events, headers=api.as_("operator")).status_code == 200
    )
    anomaly_id = raise_finding(api, merchant_id="m_alpha")
    got = api.client.get(f"/v1/anomalies/{anomaly_id}", headers=api.as_("alpha"))
    assert got.status_code == 200
    body = got.json()
    assert body["evidence"]["test"] == "Bernoulli CUSUM" and body["evidence"]["baseline"] == 0.97
    assert body["status"] == "open" and body["series_truncated"] is False
    by_minute = {p["minute"]: p for p in body["series"]}
    assert sum(p["attempts"] for p in body["series"]) == 240
    failing = by_minute[datetime.fromtimestamp(T0 + 60, UTC).isoformat()]
    assert failing["attempts"] == 60 and failing["success_rate"] == 0.5
    assert failing["latency_ms_avg"] == 321.5

    # Another merchant's scoped key, and an unknown id: the same 404.
    for who, target in (("beta", anomaly_id), ("viewer", "no-such-anomaly")):
        missing = api.client.get(f"/v1/anomalies/{target}", headers=api.as_(who))
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_acknowledge_then_resolve_audited_with_who_and_why(api: Api) -> None:
    anomaly_id = raise_finding(api, merchant_id="m_alpha")
    client = api.client
    url = f"/v1/anomalies/{anomaly_id}"

    viewer = client.post(f"{url}/acknowledge", json={"reason": "x"}, headers=api.as_("viewer"))
    assert viewer.status_code == 403
    other = client.post(f"{url}/acknowledge", json={"reason": "x"}, headers=api.as_("beta"))
    assert other.status_code == 404
    for body in ({}, {"reason": ""}, {"reason": "x", "extra": 1}):
        bad = client.post(f"{url}/acknowledge", json=body, headers=api.as_("alpha"))
        assert bad.status_code == 422, body

    acked = client.post(
        f"{url}/acknowledge", json={"reason": "looking at adyen"}, headers=api.as_("alpha")
    )
    assert acked.status_code == 200
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"].startswith("key:")
    again = client.post(f"{url}/acknowledge", json={"reason": "x"}, headers=api.as_("operator"))
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"

    resolved = client.post(
        f"{url}/resolve",
        json={"reason": "adyen fixed their acquirer", "actions": ["disabled adyen for 20 min"]},
        headers=api.as_("operator"),
    )
    assert resolved.status_code == 200
    record = resolved.json()
    assert record["status"] == "resolved" and record["resolution"] == "operator"
    assert record["resolution_actions"] == ["disabled adyen for 20 min"]
    assert (
        client.post(f"{url}/resolve", json={"reason": "x"}, headers=api.as_("operator")).status_code
        == 409
    )

    audit = client.get("/v1/audit", headers=api.as_("admin")).json()["items"]
    entries = [a for a in audit if a["target"] == f"anomaly:{anomaly_id}"]
    assert [a["action"] for a in entries] == ["anomaly.resolve", "anomaly.acknowledge"]
    assert entries[0]["details"]["reason"] == "adyen fixed their acquirer"
    assert entries[0]["details"]["actions"] == ["disabled adyen for 20 min"]
    assert entries[1]["details"]["reason"] == "looking at adyen"
    assert {a["merchant_id"] for a in entries} == {"m_alpha"}
    assert entries[0]["actor"] != entries[1]["actor"]  # the operator, then alpha's key


def test_status_shows_open_anomalies(api: Api) -> None:
    raise_finding(api, merchant_id="m_alpha")
    raise_finding(api, merchant_id="m_beta", kind=AnomalyType.VOLUME_DROP)
    closed = raise_finding(api, merchant_id="m_beta", connector="stripe")
    api.services.anomalies.resolve(closed, "key:test")  # type: ignore[union-attr]
    status = api.client.get("/v1/status", headers=api.as_("viewer")).json()["anomalies"]
    assert status["open"] == 2
    assert status["by_type"] == {"HighFailureRate": 1, "VolumeDrop": 1}
    assert status["by_severity"] == {"critical": 2}
    assert len(status["newest"]) == 2
    scoped = api.client.get("/v1/status", headers=api.as_("alpha")).json()["anomalies"]
    assert scoped["open"] == 1 and scoped["newest"][0]["merchant_id"] == "m_alpha"


def test_openapi_declares_the_statuses(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {"200", "403", "422"} <= set(paths["/v1/anomalies"]["get"]["responses"])
    assert "404" in paths["/v1/anomalies/{anomaly_id}"]["get"]["responses"]
    for action in ("acknowledge", "resolve"):
        declared = paths[f"/v1/anomalies/{{anomaly_id}}/{action}"]["post"]["responses"]
        assert {"200", "403", "404", "409", "422"} <= set(declared)
