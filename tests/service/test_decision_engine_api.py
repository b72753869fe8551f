"""The Juspay decision-engine compatible API, driven with the engine's own documented examples.

The request bodies under ``tests/fixtures/decision_engine/`` are copied verbatim from the
engine's documentation (see the README there); each test sends them as written, plus an APOS
API key, and checks the answer field by field against the engine's response shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apos.core.config import PolicyConfig
from apos.service.auth import Role
from apos.service.decision_engine import (
    STATUS_MAP,
    desired_policy,
    elimination_from_decider_input,
    minor_units,
    payment_methods,
)
from tests.service.conftest import Api

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "decision_engine"

# The engine's DecidedGateway (src/decider/gatewaydecider/types.rs), every field.
DECIDED_GATEWAY_FIELDS = {
    "decided_gateway",
    "gateway_priority_map",
    "filter_wise_gateways",
    "priority_logic_tag",
    "routing_approach",
    "gateway_before_evaluation",
    "priority_logic_output",
    "debit_routing_output",
    "reset_approach",
    "routing_dimension",
    "routing_dimension_level",
    "is_scheduled_outage",
    "is_dynamic_mga_enabled",
    "gateway_mga_id_map",
    "is_rust_based_decider",
    "latency",
}
# The engine's ErrorResponse, every field.
ERROR_RESPONSE_FIELDS = {
    "status",
    "error_code",
    "error_message",
    "priority_logic_tag",
    "routing_approach",
    "filter_wise_gateways",
    "error_info",
    "priority_logic_output",
    "is_dynamic_mga_enabled",
}
SR_APPROACHES = {
    "SR_SELECTION_V3_ROUTING",
    "SR_V3_HEDGING",
    "SR_V3_DOWNTIME_ROUTING",
    "SR_V3_DOWNTIME_HEDGING",
    "SR_V3_ALL_DOWNTIME_ROUTING",
    "SR_V3_ALL_DOWNTIME_HEDGING",
}


def raw(name: str) -> str:
    return (FIXTURES / name).read_text()


def fixture(name: str) -> Any:
    return json.loads(raw(name))


def key_header(api: Api, who: str) -> dict[str, str]:
    """The documented ``x-api-key`` header (``api.as_`` sends ``Authorization: Bearer``)."""
    return {"x-api-key": api.tokens[who], "Content-Type": "application/json"}


def create_merchant(api: Api, merchant_id: str) -> None:
    response = api.client.post(
        "/merchant-account/create", json={"merchant_id": merchant_id}, headers=api.as_("admin")
    )
    assert response.status_code == 200, response.text


def decide(api: Api, body: dict[str, Any], who: str = "operator") -> Any:
    response = api.client.post("/decide-gateway", json=body, headers=api.as_(who))
    assert response.status_code == 200, response.text
    return response.json()


def decide_body(
    merchant_id: str, payment_id: str, gateways: list[str], **info: Any
) -> dict[str, Any]:
    body = fixture("decide_gateway_openapi_sr_routing.json")
    body["merchantId"] = merchant_id
    body["eligibleGatewayList"] = gateways
    body["paymentInfo"]["paymentId"] = payment_id
    body["paymentInfo"].update(info)
    return body


def update(api: Api, merchant_id: str, payment_id: str, gateway: str, status: str, **extra: Any):
    body = {
        "merchantId": merchant_id,
        "gateway": gateway,
        "paymentId": payment_id,
        "status": status,
        **extra,
    }
    return api.client.post("/update-gateway-score", json=body, headers=api.as_("operator"))


def assert_engine_error(response: Any, http_status: int, code: str) -> dict[str, Any]:
    assert response.status_code == http_status, response.text
    body = response.json()
    assert set(body) == ERROR_RESPONSE_FIELDS
    assert set(body["error_info"]) == {"code", "user_message", "developer_message"}
    assert body["error_info"]["code"] == code
    assert body["is_dynamic_mga_enabled"] is False
    assert body["filter_wise_gateways"] is None
    return body  # type: ignore[no-any-return]


def assert_config_error(response: Any, http_status: int, message: str) -> dict[str, Any]:
    assert response.status_code == http_status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "data"}
    assert body["code"] in {"TE_03", "TE_04"}
    assert message in body["message"]
    return body  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- merchant accounts


def test_merchant_account_examples_create_get_delete(api: Api) -> None:
    headers = key_header(api, "admin")
    created = api.client.post(
        "/merchant-account/create", content=raw("merchant_account_create.json"), headers=headers
    )
    assert created.status_code == 200
    assert created.json() == {
        "message": "Merchant account created successfully",
        "merchant_id": "test_merchant_123423",
        "gateway_success_rate_based_decider_input": None,
        "api_key": None,
    }
    again = api.client.post(
        "/merchant-account/create", content=raw("merchant_account_create.json"), headers=headers
    )
    assert again.json() == {
        "code": "TE_04",
        "message": "Merchant account already exists",
        "data": None,
    }
    assert again.status_code == 400

    got = api.client.get("/merchant-account/test_merchant_123423", headers=headers)
    assert got.status_code == 200
    assert got.json() == fixture("merchant_account_get.response.json")

    deleted = api.client.delete("/merchant-account/test_merchant_123423", headers=headers)
    assert deleted.status_code == 200
    assert deleted.json() == {
        "message": "Merchant account deleted successfully",
        "merchant_id": "test_merchant_123423",
    }
    assert_config_error(
        api.client.get("/merchant-account/test_merchant_123423", headers=headers),
        404,
        "MerchantId not found",
    )
    assert_config_error(
        api.client.delete("/merchant-account/test_merchant_123423", headers=headers),
        404,
        "MerchantId not found",
    )
    actions = [a.action for a in api.services.store.list_audit(None, 100, None).items]
    assert "decision_engine.merchant.create" in actions
    assert "decision_engine.merchant.delete" in actions


def test_merchant_account_bad_input(api: Api) -> None:
    headers = api.as_("admin")
    broken = api.client.post("/merchant-account/create", content=b"{", headers=headers)
    assert_config_error(broken, 400, "not valid JSON")
    missing = api.client.post("/merchant-account/create", json={}, headers=headers)
    body = assert_config_error(missing, 422, "Failed to deserialize the JSON body")
    assert body["data"]["errors"][0]["field"] == "merchant_id"
    odd = api.client.post(
        "/merchant-account/create", json={"merchant_id": "has space"}, headers=headers
    )
    assert_config_error(odd, 422, "merchant_id")


# --------------------------------------------------------------------------- decide-gateway


def test_decide_gateway_sr_example_has_the_engine_shape(api: Api) -> None:
    create_merchant(api, "test_merchant1")
    response = api.client.post(
        "/decide-gateway",
        content=raw("decide_gateway_sr_based.json"),
        headers=key_header(api, "operator"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    documented = fixture("decide_gateway_sr_based.response.json")
    assert set(documented) <= set(body)
    assert set(body) >= DECIDED_GATEWAY_FIELDS

    gateways = ["GatewayA", "GatewayB", "GatewayC"]
    assert body["decided_gateway"] in gateways  # the caller's spelling, not lower-cased
    assert set(body["gateway_priority_map"]) == set(gateways)
    assert all(0.0 <= s <= 1.0 for s in body["gateway_priority_map"].values())
    assert body["filter_wise_gateways"] is None
    assert body["priority_logic_tag"] is None
    # Nothing learnt yet: the engine, like APOS, is at its SR v3 cold start.
    assert body["routing_approach"] == "SR_SELECTION_V3_ROUTING"
    assert body["gateway_before_evaluation"] in gateways
    assert body["priority_logic_output"] == documented["priority_logic_output"]
    assert body["debit_routing_output"] is None
    assert body["reset_approach"] == documented["reset_approach"] == "NO_RESET"
    assert isinstance(body["routing_dimension"], str)
    assert isinstance(body["routing_dimension_level"], str)
    assert body["is_scheduled_outage"] is False
    assert body["is_dynamic_mga_enabled"] is False
    assert body["gateway_mga_id_map"] is None
    assert body["is_rust_based_decider"] is False
    assert isinstance(body["latency"], int)
    # APOS's own explanation rides along in an extra field the engine's clients ignore.
    assert body["apos"]["decision_id"].startswith("dec_")
    assert body["apos"]["policy"] == "thompson"
    assert body["apos"]["fallback"] is True  # cold start: the rules decided


def test_decide_gateway_openapi_and_debit_examples(api: Api) -> None:
    create_merchant(api, "test_merchant")
    create_merchant(api, "pro_OiJkBiFuCYbYAkCG9X02")
    headers = key_header(api, "operator")
    sr = api.client.post(
        "/decide-gateway", content=raw("decide_gateway_openapi_sr_routing.json"), headers=headers
    )
    assert sr.status_code == 200, sr.text
    assert sr.json()["decided_gateway"] in {"stripe", "paypal", "adyen"}
    assert sr.json()["routing_approach"] in SR_APPROACHES
    assert sr.json()["routing_dimension"] == "card, -, US, ge1000"  # 1000 USD, no network

    # Network (debit) routing: APOS ranks the gateways with its learner and does not pick
    # among co-badged networks, so debit_routing_output is null (docs: not supported).
    debit = api.client.post(
        "/decide-gateway", content=raw("decide_gateway_debit_routing.json"), headers=headers
    )
    assert debit.status_code == 200, debit.text
    body = debit.json()
    assert set(body) >= DECIDED_GATEWAY_FIELDS
    assert body["decided_gateway"] in {"PAYU", "RAZORPAY", "PAYTM_V2"}
    assert body["debit_routing_output"] is None
    assert body["routing_approach"] in SR_APPROACHES
    assert body["apos"]["ranking_algorithm"] == "NTW_BASED_ROUTING"


def test_decide_gateway_pl_example(api: Api) -> None:
    create_merchant(api, "merchant_demo")
    response = api.client.post(
        "/decide-gateway",
        content=raw("decide_gateway_pl_based.json"),
        headers=key_header(api, "operator"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    documented = fixture("decide_gateway_pl_based.response.json")
    assert body["decided_gateway"] == documented["decided_gateway"] == "stripe"
    assert body["routing_approach"] == documented["routing_approach"] == "PRIORITY_LOGIC"
    for field in ("isEnforcement", "gws", "gatewayReferenceIds"):
        assert body["priority_logic_output"][field] == documented["priority_logic_output"][field]
    assert body["reset_approach"] == "NO_RESET"
    # The engine's priority scores: 1.0, then 0.1 less for each next gateway.
    assert body["gateway_priority_map"] == {"stripe": 1.0, "adyen": 0.9, "checkout": 0.8}
    assert body["routing_dimension"] is None


def test_pl_follows_the_merchants_apos_priority_and_preference(api: Api) -> None:
    create_merchant(api, "m_pl")
    body = fixture("decide_gateway_pl_based.json")
    body["merchantId"] = "m_pl"
    body["paymentInfo"]["preferredGateway"] = "checkout"
    answer = decide(api, body)
    assert answer["decided_gateway"] == "checkout"
    assert answer["priority_logic_output"]["gws"][0] == "checkout"

    # One eligible gateway and it is the preferred one: the engine's MERCHANT_PREFERENCE.
    body["eligibleGatewayList"] = ["adyen"]
    body["paymentInfo"]["preferredGateway"] = "adyen"
    answer = decide(api, body)
    assert answer["routing_approach"] == "MERCHANT_PREFERENCE"
    assert answer["decided_gateway"] == "adyen"
    assert answer["gateway_priority_map"] == {"adyen": 1.0}

    body["paymentInfo"]["preferredGateway"] = "stripe"  # not eligible
    response = api.client.post("/decide-gateway", json=body, headers=api.as_("operator"))
    error = assert_engine_error(response, 400, "GATEWAY_NOT_FOUND")
    assert error["routing_approach"] == "NONE"


def test_decide_gateway_errors_use_the_engine_error_shape(api: Api) -> None:
    headers = api.as_("operator")
    post = api.client.post

    broken = assert_engine_error(
        post("/decide-gateway", content=b"{not json", headers=headers), 400, "INVALID_INPUT"
    )
    assert broken["status"] == "400"
    assert broken["error_code"] == "400"
    assert broken["error_message"] == "Error parsing request"
    assert broken["error_info"]["user_message"] == (
        "Invalid request params. Please verify your input."
    )

    body = fixture("decide_gateway_sr_based.json")
    del body["paymentInfo"]["paymentId"]
    missing = assert_engine_error(
        post("/decide-gateway", json=body, headers=headers), 400, "INVALID_INPUT"
    )
    assert "paymentInfo.paymentId" in missing["error_info"]["developer_message"]

    for path, value in (
        (("paymentInfo", "currency"), "XXX"),
        (("paymentInfo", "paymentType"), "WHATEVER"),
        (("paymentInfo", "amount"), "lots"),
        (("rankingAlgorithm",), "BEST_GUESS"),
    ):
        body = fixture("decide_gateway_sr_based.json")
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        error = assert_engine_error(
            post("/decide-gateway", json=body, headers=headers), 400, "INVALID_INPUT"
        )
        assert path[-1] in error["error_info"]["developer_message"]

    # The merchant must exist, as in the engine.
    unknown = assert_engine_error(
        post("/decide-gateway", content=raw("decide_gateway_sr_based.json"), headers=headers),
        400,
        "MERCHANT_NOT_FOUND",
    )
    assert unknown["status"] == "Invalid Request"
    assert unknown["error_code"] == "invalid_request_error"
    assert unknown["error_message"] == "Merchant not found"

    create_merchant(api, "test_merchant1")
    body = fixture("decide_gateway_sr_based.json")
    body["eligibleGatewayList"] = []
    empty = assert_engine_error(
        post("/decide-gateway", json=body, headers=headers), 400, "GATEWAY_NOT_FOUND"
    )
    assert empty["error_message"] == "Can't find a suitable gateway to process the transaction"
    assert empty["routing_approach"] == "NONE"
    assert empty["priority_logic_output"]["gws"] == []

    body["eligibleGatewayList"] = ["stripe", "no spaces allowed"]
    assert_engine_error(post("/decide-gateway", json=body, headers=headers), 400, "INVALID_INPUT")


# --------------------------------------------------------------------------- update-gateway-score


def test_update_gateway_score_example(api: Api) -> None:
    create_merchant(api, "merchant_demo")
    body = fixture("decide_gateway_pl_based.json")
    body["paymentInfo"]["paymentId"] = "sr_001"  # the payment the update example reports
    decided = decide(api, body)
    assert decided["decided_gateway"] == "stripe"

    response = api.client.post(
        "/update-gateway-score",
        content=raw("update_gateway_score.json"),
        headers=key_header(api, "operator"),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {k: answer[k] for k in ("message", "merchant_id", "gateway", "payment_id")} == {
        "message": "Gateway score updated successfully",
        "merchant_id": "merchant_demo",
        "gateway": "stripe",
        "payment_id": "sr_001",
    }
    assert answer["apos"]["status"] == "succeeded"
    assert answer["apos"]["learnt"] is True

    # Stored as a canonical event, built from what the decide call knew.
    event = api.services.store.get_event(answer["apos"]["event_id"])
    assert event is not None
    assert event.merchant_id == "merchant_demo"
    assert event.payment_id == "sr_001"
    assert event.connector == "stripe"
    assert event.status == "succeeded"
    assert event.amount == 100_000  # 1000 USD (engine amounts are major units)
    assert event.currency == "USD"
    assert event.payment_method == "card"
    assert event.payment_method_type == "credit"
    assert event.issuer_country == "US"
    assert event.attempt == 1


def test_update_gateway_score_changes_later_decisions(api: Api) -> None:
    create_merchant(api, "m_learn")
    gateways = ["GatewayA", "GatewayB"]
    first = decide(api, decide_body("m_learn", "learn_000", gateways))
    assert first["gateway_priority_map"]["GatewayA"] == first["gateway_priority_map"]["GatewayB"]

    learnt_before = api.services.routing.events_learned
    for i in range(1, 31):
        payment = f"learn_{i:03d}"
        decide(api, decide_body("m_learn", payment, gateways))
        assert update(api, "m_learn", payment, "GatewayA", "CHARGED").status_code == 200
        assert update(api, "m_learn", payment, "GatewayB", "FAILURE").status_code == 200
    assert api.services.routing.events_learned == learnt_before + 60

    after = decide(api, decide_body("m_learn", "learn_999", gateways))
    scores = after["gateway_priority_map"]
    assert scores["GatewayA"] > 0.9
    assert scores["GatewayB"] < 0.1
    assert after["decided_gateway"] == "GatewayA"
    # GatewayB failed every time: its breaker may be open as well (a downtime variant).
    assert after["routing_approach"] in SR_APPROACHES
    assert after["apos"]["fallback"] is False  # the learner decided, not the cold-start rules


def test_repeated_updates_are_idempotent(api: Api) -> None:
    create_merchant(api, "test_merchant")
    decide(api, fixture("decide_gateway_openapi_sr_routing.json"))
    learnt = api.services.routing.events_learned
    headers = api.as_("operator")
    body = raw("update_gateway_score_openapi.json")
    first = api.client.post("/update-gateway-score", content=body, headers=headers).json()
    second = api.client.post("/update-gateway-score", content=body, headers=headers).json()
    assert first["apos"]["event_id"] == second["apos"]["event_id"]
    assert first["apos"]["duplicate"] is False
    assert second["apos"]["duplicate"] is True
    assert second["message"] == "Gateway score updated successfully"
    assert api.services.routing.events_learned == learnt + 1
    from apos.adapters.ports import EventQuery

    stored = api.services.store.list_events(EventQuery(payment_id="pay_001", limit=10)).items
    assert len(stored) == 1


@pytest.mark.parametrize(
    ("status", "expected", "error_code"),
    [
        ("CHARGED", "succeeded", None),
        ("AUTHORIZED", "authorized", None),
        ("VOIDED", "authorized", None),
        ("AUTHENTICATION_FAILED", "failed", "authentication_failed"),
        ("AUTHORIZATION_FAILED", "failed", "authorization_failed"),
        ("JUSPAY_DECLINED", "failed", "juspay_declined"),
        ("PENDING_VBV", "requires_action", None),
        ("STARTED", "pending", None),
        ("V_B_V_SUCCESSFUL", "pending", None),  # Hyperswitch's spelling of VBV_SUCCESSFUL
    ],
)
def test_statuses_map_onto_apos_statuses(
    api: Api, status: str, expected: str, error_code: str | None
) -> None:
    create_merchant(api, "m_status")
    decide(api, decide_body("m_status", "pay_status", ["stripe", "adyen"]))
    response = update(api, "m_status", "pay_status", "stripe", status)
    assert response.status_code == 200, response.text
    event = api.services.store.get_event(response.json()["apos"]["event_id"])
    assert event is not None
    assert event.status == expected
    assert event.error_code == error_code


def test_status_table_covers_the_engine_enum() -> None:
    engine_statuses = {
        "STARTED", "AUTHENTICATION_FAILED", "JUSPAY_DECLINED", "PENDING_VBV", "VBV_SUCCESSFUL",
        "AUTHORIZED", "AUTHORIZATION_FAILED", "CHARGED", "AUTHORIZING", "COD_INITIATED",
        "VOIDED", "VOID_INITIATED", "NOP", "CAPTURE_INITIATED", "CAPTURE_FAILED", "VOID_FAILED",
        "AUTO_REFUNDED", "PARTIAL_CHARGED", "TO_BE_CHARGED", "PENDING", "FAILURE", "DECLINED",
    }  # fmt: skip
    assert engine_statuses <= set(STATUS_MAP)
    # What the engine rewards is a success for APOS; what it penalises, a failure.
    rewarded = {
        "CHARGED", "AUTHORIZED", "COD_INITIATED", "VOIDED", "VOID_INITIATED",
        "CAPTURE_INITIATED", "CAPTURE_FAILED", "VOID_FAILED", "AUTO_REFUNDED",
        "PARTIAL_CHARGED", "TO_BE_CHARGED",
    }  # fmt: skip
    penalised = {"AUTHENTICATION_FAILED", "AUTHORIZATION_FAILED", "JUSPAY_DECLINED", "FAILURE"}
    assert {s for s in engine_statuses if STATUS_MAP[s].is_success} == rewarded
    assert {s for s in penalised if STATUS_MAP[s] == "failed"} == penalised


def test_enforced_failure_and_latency(api: Api) -> None:
    create_merchant(api, "m_enforce")
    decide(api, decide_body("m_enforce", "pay_enf", ["stripe", "adyen"]))
    response = update(
        api,
        "m_enforce",
        "pay_enf",
        "adyen",
        "CHARGED",
        enforceDynamicRoutingFailure=True,
        txnLatency={"gatewayLatency": 420.0},
    )
    event = api.services.store.get_event(response.json()["apos"]["event_id"])
    assert event is not None
    assert event.status == "failed"
    assert event.error_code == "dynamic_routing_failure_enforced"
    assert event.latency_ms == 420.0


def test_update_gateway_score_errors(api: Api) -> None:
    headers = api.as_("operator")
    create_merchant(api, "test_merchant")
    # No decide-gateway call for the payment: the engine's GATEWAY_SCORING_DATA_NOT_FOUND.
    unknown = assert_engine_error(
        api.client.post(
            "/update-gateway-score",
            content=raw("update_gateway_score_openapi.json"),
            headers=headers,
        ),
        400,
        "GATEWAY_SCORING_DATA_NOT_FOUND",
    )
    assert unknown["error_code"] == "GATEWAY_SCORING_DATA_NOT_FOUND"

    body = fixture("update_gateway_score_openapi.json")
    body["status"] = "MAYBE"
    bad = assert_engine_error(
        api.client.post("/update-gateway-score", json=body, headers=headers), 400, "INVALID_INPUT"
    )
    assert "status" in bad["error_info"]["developer_message"]
    del body["gateway"]
    body["status"] = "CHARGED"
    assert_engine_error(
        api.client.post("/update-gateway-score", json=body, headers=headers), 400, "INVALID_INPUT"
    )


def test_decide_context_is_shared_through_the_database(api: Api) -> None:
    """An update that lands on another instance finds the decide call's context in the
    database (simulated by dropping this instance's memory of it)."""
    create_merchant(api, "test_merchant")
    decide(api, fixture("decide_gateway_openapi_sr_routing.json"))
    api.client.app.state.decision_engine._contexts.clear()  # type: ignore[attr-defined]
    response = api.client.post(
        "/update-gateway-score",
        content=raw("update_gateway_score_openapi.json"),
        headers=api.as_("operator"),
    )
    assert response.status_code == 200, response.text
    event = api.services.store.get_event(response.json()["apos"]["event_id"])
    assert event is not None
    assert (event.amount, event.payment_method, event.payment_method_type) == (
        100_000,
        "card",
        "credit",
    )


def test_open_breakers_show_as_downtime(api: Api) -> None:
    create_merchant(api, "m_down")
    gateways = ["stripe", "adyen"]
    for i in range(30):
        payment = f"down_{i:03d}"
        decide(api, decide_body("m_down", payment, gateways))
        update(api, "m_down", payment, "stripe", "FAILURE")
    sr = decide(api, decide_body("m_down", "down_sr", gateways))
    assert sr["decided_gateway"] == "adyen"
    assert sr["routing_approach"].startswith("SR_V3_DOWNTIME")
    pl = decide(
        api,
        decide_body("m_down", "down_pl", gateways, preferredGateway=None)
        | {"rankingAlgorithm": "PL_BASED_ROUTING"},
    )
    assert pl["decided_gateway"] == "adyen"
    assert pl["routing_approach"] == "PL_DOWNTIME_ROUTING"
    assert pl["priority_logic_output"]["gws"] == ["adyen", "stripe"]


# --------------------------------------------------------------------------- rule configurations


def test_success_rate_rule_crud_round_trip(api: Api) -> None:
    headers = key_header(api, "admin")
    post = api.client.post
    for merchant in ("merchant_demo", "test_merchant_123423"):
        create_merchant(api, merchant)

    created = post("/rule/create", content=raw("success_rate_config_create.json"), headers=headers)
    assert created.status_code == 200, created.text
    assert created.json() == fixture("success_rate_config_create.response.json")
    assert_config_error(
        post("/rule/create", content=raw("success_rate_config_create.json"), headers=headers),
        400,
        "Rule configuration already exists",
    )

    # test_merchant_123423: update needs an existing rule, then get returns what was stored.
    assert_config_error(
        post("/rule/update", content=raw("success_rate_config_update.json"), headers=headers),
        404,
        "Rule configuration not found",
    )
    create_body = fixture("success_rate_config_create.json")
    create_body["merchant_id"] = "test_merchant_123423"
    assert post("/rule/create", json=create_body, headers=headers).status_code == 200
    updated = post("/rule/update", content=raw("success_rate_config_update.json"), headers=headers)
    assert updated.status_code == 200, updated.text
    assert updated.json()["message"] == "Success Rate Configuration updated successfully"
    assert updated.json()["config"] == fixture("success_rate_config_update.json")["config"]

    got = post("/rule/get", content=raw("success_rate_config_get.json"), headers=headers)
    assert got.status_code == 200
    assert got.json() == fixture("success_rate_config_get.response.json")
    # A viewer may read it too.
    viewer = post(
        "/rule/get", content=raw("success_rate_config_get.json"), headers=api.as_("viewer")
    )
    assert viewer.json() == got.json()

    deleted = post("/rule/delete", content=raw("success_rate_config_delete.json"), headers=headers)
    assert deleted.status_code == 200
    assert deleted.json() == {
        "message": "Success Rate Configuration deleted successfully",
        "merchant_id": "test_merchant_123423",
    }
    assert_config_error(
        post("/rule/get", content=raw("success_rate_config_get.json"), headers=headers),
        404,
        "Rule configuration not found",
    )
    assert_config_error(
        post("/rule/delete", content=raw("success_rate_config_delete.json"), headers=headers),
        404,
        "Rule configuration not found",
    )
    unknown = {"merchant_id": "nobody", "algorithm": "successRate"}
    assert_config_error(post("/rule/get", json=unknown, headers=headers), 404, "MerchantId")
    assert_config_error(
        post("/rule/create", json=create_body | {"merchant_id": "nobody"}, headers=headers),
        404,
        "MerchantId not found",
    )
    actions = {a.action for a in api.services.store.list_audit(None, 100, None).items}
    assert {"decision_engine.rule.create", "decision_engine.rule.update"} <= actions
    assert "decision_engine.rule.delete" in actions


def test_success_rate_rule_maps_onto_the_merchants_policy(api: Api) -> None:
    headers = api.as_("admin")
    create_merchant(api, "test_merchant_123423")
    engine = api.services.routing.engine
    assert engine.config.policy_for("test_merchant_123423").policy == "thompson"

    create_body = fixture("success_rate_config_update.json")  # defaultHedgingPercent: 5
    assert api.client.post("/rule/create", json=create_body, headers=headers).status_code == 200
    policy = engine.config.policy_for("test_merchant_123423")
    assert (policy.policy, policy.epsilon) == ("greedy", pytest.approx(0.05))

    body = decide_body("test_merchant_123423", "pay_policy", ["stripe", "adyen"])
    assert decide(api, body)["apos"]["policy"] == "greedy"

    create_body["config"]["data"]["defaultHedgingPercent"] = None
    assert api.client.post("/rule/update", json=create_body, headers=headers).status_code == 200
    assert engine.config.policy_for("test_merchant_123423").policy == "thompson"

    create_body["config"]["data"]["defaultHedgingPercent"] = 20
    assert api.client.post("/rule/update", json=create_body, headers=headers).status_code == 200
    assert engine.config.policy_for("test_merchant_123423").epsilon == pytest.approx(0.2)
    api.client.post("/rule/delete", content=raw("success_rate_config_delete.json"), headers=headers)
    assert engine.config.policy_for("test_merchant_123423") == PolicyConfig()


def test_elimination_rule_round_trip(api: Api) -> None:
    headers = api.as_("admin")
    create_merchant(api, "test_merchant_123423")
    created = api.client.post(
        "/rule/create", content=raw("elimination_config_create.json"), headers=headers
    )
    assert created.status_code == 200, created.text
    assert created.json() == {
        "message": "Elimination Configuration created successfully",
        "merchant_id": "test_merchant_123423",
        "config": {"type": "elimination", "data": {"threshold": 0.35}},
    }
    # As in the engine, the elimination rule lives in the merchant's decider input.
    account = api.client.get("/merchant-account/test_merchant_123423", headers=headers).json()
    decider_input = account["gateway_success_rate_based_decider_input"]
    assert json.loads(decider_input)["defaultEliminationThreshold"] == 0.35
    assert elimination_from_decider_input(decider_input) == {"threshold": 0.35}

    get_body = {"merchant_id": "test_merchant_123423", "algorithm": "elimination"}
    got = api.client.post("/rule/get", json=get_body, headers=headers)
    assert got.json() == {
        "merchant_id": "test_merchant_123423",
        "config": {"type": "elimination", "data": {"threshold": 0.35}},
    }
    deleted = api.client.post("/rule/delete", json=get_body, headers=headers)
    assert deleted.json()["message"] == "Elimination Configuration deleted successfully"
    assert_config_error(
        api.client.post("/rule/get", json=get_body, headers=headers),
        404,
        "Rule configuration not found",
    )
    account = api.client.get("/merchant-account/test_merchant_123423", headers=headers).json()
    assert account["gateway_success_rate_based_decider_input"] == ""


def test_rule_bad_input(api: Api) -> None:
    headers = api.as_("admin")
    post = api.client.post
    create_merchant(api, "merchant_demo")
    assert_config_error(post("/rule/create", content=b"[", headers=headers), 400, "JSON")
    assert_config_error(
        post("/rule/create", json={"merchant_id": "merchant_demo"}, headers=headers),
        422,
        "config",
    )
    body = fixture("success_rate_config_create.json")
    body["config"]["type"] = "fastest"
    assert_config_error(post("/rule/create", json=body, headers=headers), 422, "unknown variant")
    body = fixture("success_rate_config_create.json")
    body["config"]["data"]["defaultHedgingPercent"] = 150
    invalid = assert_config_error(
        post("/rule/create", json=body, headers=headers), 400, "Invalid routing rule"
    )
    assert invalid["data"]["errors"][0]["field"] == "defaultHedgingPercent"
    fetch = {"merchant_id": "merchant_demo", "algorithm": "fastest"}
    assert_config_error(post("/rule/get", json=fetch, headers=headers), 422, "algorithm")


# --------------------------------------------------------------------------- access


def test_merchant_scoped_keys_act_only_for_their_merchant(api: Api) -> None:
    api.add_key("alpha_admin", Role.ADMIN, "m_alpha")
    post = api.client.post
    # A scoped admin may create its own merchant, not another one.
    assert (
        post(
            "/merchant-account/create",
            json={"merchant_id": "m_alpha"},
            headers=api.as_("alpha_admin"),
        ).status_code
        == 200
    )
    refused = post(
        "/merchant-account/create", json={"merchant_id": "m_beta"}, headers=api.as_("alpha_admin")
    )
    assert_config_error(refused, 403, "m_beta")
    create_merchant(api, "m_beta")

    alpha = decide_body("m_alpha", "pay_a", ["stripe", "adyen"])
    beta = decide_body("m_beta", "pay_b", ["stripe", "adyen"])
    assert post("/decide-gateway", json=alpha, headers=api.as_("alpha")).status_code == 200
    error = assert_engine_error(
        post("/decide-gateway", json=beta, headers=api.as_("alpha")), 403, "FORBIDDEN_MERCHANT"
    )
    assert error["error_code"] == "forbidden_merchant"
    update_beta = {"merchantId": "m_beta", "gateway": "stripe", "paymentId": "pay_a",
                   "status": "CHARGED"}  # fmt: skip
    assert_engine_error(
        post("/update-gateway-score", json=update_beta, headers=api.as_("alpha")),
        403,
        "FORBIDDEN_MERCHANT",
    )
    # Contexts are per merchant: beta cannot report on alpha's payment.
    assert_engine_error(
        post("/update-gateway-score", json=update_beta, headers=api.as_("beta")),
        400,
        "GATEWAY_SCORING_DATA_NOT_FOUND",
    )

    fetch = {"merchant_id": "m_beta", "algorithm": "successRate"}
    assert_config_error(post("/rule/get", json=fetch, headers=api.as_("alpha")), 403, "m_beta")
    rule = fixture("success_rate_config_create.json") | {"merchant_id": "m_beta"}
    assert_config_error(
        post("/rule/create", json=rule, headers=api.as_("alpha_admin")), 403, "m_beta"
    )
    assert_config_error(
        api.client.get("/merchant-account/m_beta", headers=api.as_("alpha")), 403, "m_beta"
    )
    assert_config_error(
        api.client.delete("/merchant-account/m_beta", headers=api.as_("alpha_admin")),
        403,
        "m_beta",
    )

    # Roles: routing needs an operator, configuration an admin, and every call a key.
    assert post("/decide-gateway", json=beta, headers=api.as_("viewer")).status_code == 403
    rule_alpha = fixture("success_rate_config_create.json") | {"merchant_id": "m_alpha"}
    assert post("/rule/create", json=rule_alpha, headers=api.as_("alpha")).status_code == 403
    assert post("/decide-gateway", json=beta).status_code == 401


# --------------------------------------------------------------------------- pure mappings


def test_payment_method_mapping() -> None:
    assert payment_methods("CARD", "CREDIT") == ("card", "credit")
    assert payment_methods("UPI", "UPI_PAY") == ("upi", "upi_pay")
    # Hyperswitch sends a fixed "UPI" type and its own category as the method.
    assert payment_methods("UPI", "card") == ("card", None)
    assert payment_methods("UPI", "wallet") == ("wallet", None)
    assert payment_methods("NB", "Net Banking") == ("nb", "net_banking")


def test_amounts_are_major_units() -> None:
    assert minor_units(100.50, "USD") == 10_050
    assert minor_units(1000, "JPY") == 1000
    assert minor_units(1.234, "KWD") == 1234


def test_desired_policy() -> None:
    base = PolicyConfig(policy="rules", priority=("adyen",))
    assert desired_policy(base, None) is base
    assert desired_policy(base, {"defaultBucketSize": 20}).policy == "thompson"
    hedged = desired_policy(base, {"defaultHedgingPercent": 5})
    assert (hedged.policy, hedged.epsilon, hedged.priority) == ("greedy", 0.05, ("adyen",))


def test_payment_context_store_replaces_and_purges(api: Api) -> None:
    from datetime import UTC, datetime, timedelta

    from apos.adapters.db.routing_config import RoutingConfigStore

    store = RoutingConfigStore(api.services.store.engine)
    then = datetime.now(UTC) - timedelta(days=2)
    store.save_payment_context("m1", "p1", {"amount": 1}, then)
    store.save_payment_context("m1", "p1", {"amount": 2}, then)  # a second decide: replaced
    store.save_payment_context("m1", "p2", {"amount": 3}, datetime.now(UTC))
    assert store.load_payment_context("m1", "p1", then) == {"amount": 2}
    assert store.load_payment_context("m1", "p1", then + timedelta(seconds=1)) is None
    assert store.load_payment_context("m2", "p2", then) is None
    assert store.purge_payment_contexts(datetime.now(UTC) - timedelta(days=1)) == 1
    assert store.load_payment_context("m1", "p2", then) == {"amount": 3}
