"""Authentication, roles and merchant isolation."""

from __future__ import annotations

from tests.service.conftest import Api, make_event


def test_health_is_open_everything_else_needs_a_key(api: Api) -> None:
    assert api.client.get("/health").json() == {"status": "ok"}
    for method, path in [
        ("get", "/v1/status"),
        ("get", "/v1/events"),
        ("post", "/v1/events"),
        ("get", "/v1/dead-letters"),
        ("get", "/v1/audit"),
        ("get", "/v1/keys"),
    ]:
        r = getattr(api.client, method)(path)
        assert r.status_code == 401, path
        assert r.json()["code"] == "unauthorized"


def test_unknown_and_revoked_keys_are_refused(api: Api) -> None:
    r = api.client.get("/v1/status", headers={"Authorization": "Bearer apos_key_00_nope"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    created = api.client.post(
        "/v1/keys", json={"name": "tmp", "role": "viewer"}, headers=api.as_("admin")
    ).json()
    tmp = {"X-API-Key": created["key"]}
    assert api.client.get("/v1/status", headers=tmp).status_code == 200
    assert (
        api.client.delete(f"/v1/keys/{created['id']}", headers=api.as_("admin")).status_code == 200
    )
    assert api.client.get("/v1/status", headers=tmp).status_code == 401
    listed = api.client.get("/v1/keys", headers=api.as_("admin")).json()["items"]
    assert all("key" not in k and "key_hash" not in k for k in listed)


def test_roles_are_enforced(api: Api) -> None:
    r = api.client.post("/v1/events", json=make_event(1), headers=api.as_("viewer"))
    assert r.status_code == 403 and r.json()["code"] == "insufficient_role"
    r = api.client.post(
        "/v1/keys", json={"name": "x", "role": "admin"}, headers=api.as_("operator")
    )
    assert r.status_code == 403


def test_merchant_key_sees_and_writes_only_its_merchant(api: Api) -> None:
    api.client.post(
        "/v1/events",
        json=[make_event(1, merchant_id="m_alpha"), make_event(2, merchant_id="m_beta")],
        headers=api.as_("operator"),
    )
    alpha = api.as_("alpha")
    items = api.client.get("/v1/events", headers=alpha).json()["items"]
    assert [e["merchant_id"] for e in items] == ["m_alpha"]
    r = api.client.get("/v1/events", params={"merchant_id": "m_beta"}, headers=alpha)
    assert r.status_code == 403 and r.json()["code"] == "forbidden_merchant"
    assert api.client.get("/v1/events/evt_2", headers=alpha).status_code == 404
    assert api.client.get("/v1/events/evt_1", headers=alpha).status_code == 200
    r = api.client.post("/v1/events", json=make_event(3, merchant_id="m_beta"), headers=alpha)
    assert r.status_code == 403 and r.json()["code"] == "forbidden_merchant"
    assert api.services.store.get_event("evt_3") is None
    status = api.client.get("/v1/status", headers=alpha).json()
    assert status["counts"]["events"] == 1 and status["merchant_scope"] == "m_alpha"


def test_merchant_key_sees_only_its_dead_letters_and_audit(api: Api) -> None:
    api.client.post(
        "/v1/events",
        json=[
            make_event(1, merchant_id="m_alpha", currency="??"),
            make_event(2, merchant_id="m_beta", currency="??"),
        ],
        headers=api.as_("operator"),
    )
    letters = api.client.get("/v1/dead-letters", headers=api.as_("beta")).json()["items"]
    assert [d["merchant_id"] for d in letters] == ["m_beta"]
    created = api.client.post(
        "/v1/keys",
        json={"name": "a", "role": "viewer", "merchant_id": "m_alpha"},
        headers=api.as_("admin"),
    )
    assert created.status_code == 201
    audit_beta = api.client.get("/v1/audit", headers=api.as_("beta")).json()["items"]
    assert all(a["merchant_id"] == "m_beta" for a in audit_beta)
    audit_all = api.client.get("/v1/audit", headers=api.as_("admin")).json()["items"]
    assert any(a["action"] == "api_key.create" for a in audit_all)


def test_merchant_key_files_its_rejects_under_its_own_merchant(api: Api) -> None:
    # What a scoped key sends that cannot be ingested is its own: it must not land in
    # another merchant's dead letters (a cross-merchant write), and the key must see it.
    alpha = {**api.as_("alpha"), "content-type": "application/json"}
    r = api.client.post(
        "/v1/events",
        json=make_event(1, merchant_id="m_beta", currency="ZZZ"),
        headers=api.as_("alpha"),
    )
    assert r.status_code == 422
    assert api.client.post("/v1/events", content=b"{broken", headers=alpha).status_code == 400
    assert api.client.post("/v1/events", content=b"42", headers=alpha).status_code == 422
    beta = api.client.get("/v1/dead-letters", headers=api.as_("beta")).json()["items"]
    assert beta == []
    mine = api.client.get("/v1/dead-letters", headers=api.as_("alpha")).json()["items"]
    assert [d["merchant_id"] for d in mine] == ["m_alpha"] * 3
    assert {d["raw"] for d in mine} >= {"{broken", "42"}
    # An unscoped key still files a reject under the merchant the payload names.
    api.client.post(
        "/v1/events",
        json=make_event(2, merchant_id="m_beta", currency="ZZZ"),
        headers=api.as_("operator"),
    )
    beta = api.client.get("/v1/dead-letters", headers=api.as_("beta")).json()["items"]
    assert [d["merchant_id"] for d in beta] == ["m_beta"]
