"""The API of Juspay's open-source decision engine, served by APOS.

Hyperswitch's dynamic routing (and anything else already talking to that engine) can point
at APOS unchanged: the same paths (no ``/v1`` prefix), request and response field names,
status values and error bodies, plus an APOS API key (``x-api-key`` or ``Authorization:
Bearer``). Behind them are APOS's own policies:

- ``POST /decide-gateway`` builds a :class:`~apos.core.payment.Payment` and asks the routing
  service (success-rate ranking) or evaluates the merchant's rules (priority logic);
- ``POST /update-gateway-score`` becomes a canonical :class:`~apos.core.events.PaymentEvent`
  ingested through the normal :class:`~apos.service.ingest.Ingestor`: stored, then learnt;
- ``/merchant-account/*`` and ``/rule/*`` keep the engine's merchant accounts and rule
  configurations and map the success-rate rule onto the merchant's
  :class:`~apos.core.config.PolicyConfig`.

Every mapping, table and deviation is in ``docs/decision-engine-compat.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from starlette.background import BackgroundTask

from apos.core.breaker import BreakerState
from apos.core.decision import Decision
from apos.core.events import MAX_AMOUNT
from apos.core.iso import redact_card_numbers
from apos.core.payment import Payment, amount_band
from apos.core.routing.rules import RulesPolicy, rule_matches
from apos.service.api.deps import Admin, Operator, ServicesDep, Viewer, audit
from apos.service.api.events import read_body
from apos.service.auth import Principal
from apos.service.bootstrap import Services
from apos.service.decision_engine import (
    CONTEXT_TTL,
    RULE_LABELS,
    TOKEN,
    BadInput,
    DecideGatewayRequest,
    DecisionEngineCompat,
    MerchantAccountCreate,
    RuleConfigRequest,
    RuleFetchRequest,
    UpdateGatewayScoreRequest,
    elimination_decider_input,
    elimination_from_decider_input,
    event_id_for,
    minor_units,
    outcome_of,
    parse_body,
    payment_methods,
    rule_data,
    token,
)
from apos.service.errors import ApiError
from apos.service.openapi import engine_responses
from apos.service.routing import RoutingService

router = APIRouter(tags=["decision-engine compatibility"])

# What each kind of endpoint answers besides 200: the engine's own error shapes, and APOS's
# for authentication and the body size limit.
_ENGINE_ERRORS = engine_responses(
    {
        400: "the engine's ErrorResponse: invalid input, unknown merchant, no gateway",
        403: "role too low, or another merchant's payment for a scoped key",
        413: "body over `max_body_bytes` (APOS's error body)",
    }
)
_CONFIG_ERRORS = engine_responses(
    {
        403: "role too low, or another merchant for a scoped key",
        404: "no such merchant account (`TE_04`)",
    },
    config=True,
)
_CONFIG_BODY_ERRORS = engine_responses(
    {
        400: "broken JSON, or an invalid or duplicate configuration (`TE_03`, `TE_04`)",
        403: "role too low, or another merchant for a scoped key",
        413: "body over `max_body_bytes` (APOS's error body)",
        422: "a body of the wrong shape (`TE_03`, with the fields at fault)",
    },
    config=True,
)
_RULE_ERRORS = {
    **_CONFIG_BODY_ERRORS,
    **engine_responses({404: "no such merchant account or rule configuration (`TE_04`)"}, True),
}

# --------------------------------------------------------------------------- error bodies


def _json(body: Any, status: int = 200, background: BackgroundTask | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", background=background
    )


def engine_error(
    *,
    error_message: str,
    code: str,
    user_message: str,
    developer_message: str,
    status: str = "Invalid Request",
    error_code: str = "invalid_request_error",
    routing_approach: str | None = None,
    priority_logic_output: dict[str, Any] | None = None,
    http_status: int = 400,
) -> Response:
    """The engine's ``ErrorResponse`` (decide-gateway, update-gateway-score); HTTP 400 there."""
    return _json(
        {
            "status": status,
            "error_code": error_code,
            "error_message": error_message,
            "priority_logic_tag": None,
            "routing_approach": routing_approach,
            "filter_wise_gateways": None,
            "error_info": {
                "code": code,
                "user_message": user_message,
                "developer_message": developer_message,
            },
            "priority_logic_output": priority_logic_output,
            "is_dynamic_mga_enabled": False,
        },
        http_status,
    )


def invalid_input(developer_message: str) -> Response:
    """The engine's answer to a body it cannot parse."""
    return engine_error(
        status="400",
        error_code="400",
        error_message="Error parsing request",
        code="INVALID_INPUT",
        user_message="Invalid request params. Please verify your input.",
        developer_message=developer_message,
    )


def forbidden_engine(merchant_id: str) -> Response:
    message = f"this key may not access merchant {redact_card_numbers(merchant_id)!r}"
    return engine_error(
        status="Forbidden",
        error_code="forbidden_merchant",
        error_message=message,
        code="FORBIDDEN_MERCHANT",
        user_message=message,
        developer_message=message,
        http_status=403,
    )


def config_error(http_status: int, code: str, message: str, data: Any = None) -> Response:
    """The engine's ``ApiErrorResponse`` (merchant-account and rule endpoints)."""
    return _json({"code": code, "message": message, "data": data}, http_status)


def merchant_not_found() -> Response:
    return config_error(404, "TE_04", "MerchantId not found")


def forbidden_config(merchant_id: str) -> Response:
    shown = redact_card_numbers(merchant_id)  # a path parameter: not validated
    return config_error(403, "TE_04", f"this key may not access merchant {shown!r}")


def config_bad_input(exc: BadInput) -> Response:
    """Like the engine's JSON extractor: 400 for broken JSON, 422 for a body of wrong shape."""
    if exc.syntax:
        return config_error(400, "TE_03", exc.message)
    return config_error(
        422,
        "TE_03",
        f"Failed to deserialize the JSON body into the target type: {exc.message}",
        {"errors": exc.errors},
    )


# --------------------------------------------------------------------------- runtime state


async def _body(request: Request) -> bytes:
    """The raw body, refused (413, APOS's error shape) over the service's size limit."""
    return await read_body(request, request.app.state.services.settings.max_body_bytes)


_CREATE_LOCK = threading.Lock()


def compat_of(request: Request) -> DecisionEngineCompat:
    """The app's :class:`DecisionEngineCompat`, created on first use."""
    state = request.app.state
    compat: DecisionEngineCompat | None = getattr(state, "decision_engine", None)
    if compat is None:
        with _CREATE_LOCK:
            compat = getattr(state, "decision_engine", None)
            if compat is None:
                compat = DecisionEngineCompat(state.services)
                state.decision_engine = compat
    return compat


async def _audit(
    services: Services, principal: Principal, action: str, merchant_id: str, details: Any
) -> None:
    record = details if isinstance(details, dict) else {"value": details}
    await audit(services, principal, f"decision_engine.{action}", merchant_id, merchant_id, record)


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined (for ``openapi_extra``)."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(model)}},
        }
    }


# --------------------------------------------------------------------------- decide-gateway


def _priority_logic_output(gws: list[str], tag: str | None = None) -> dict[str, Any]:
    return {
        "isEnforcement": False,
        "gws": gws,
        "priorityLogicTag": tag,
        "gatewayReferenceIds": {},
        "primaryLogic": None,
        "fallbackLogic": None,
    }


def _open_connectors(routing: RoutingService, merchant_id: str, connectors: list[str]) -> set[str]:
    """Eligible connectors whose breaker is open for the merchant (the engine's downtime)."""
    engine = routing.engine
    if not engine.config.breaker.enabled:
        return set()
    now = routing.now().timestamp()
    with routing.lock:
        return {
            c for c in connectors if engine.breaker_state(c, merchant_id, now) is BreakerState.OPEN
        }


def _downtime(base: str, opened: set[str], eligible: list[str]) -> str:
    """``SR_V3_...`` / ``PL_...`` approach names with the engine's downtime variants."""
    if not opened:
        return base
    scope = "ALL_DOWNTIME" if opened >= set(eligible) else "DOWNTIME"
    if base == "PRIORITY_LOGIC":
        return f"PL_{scope}_ROUTING"
    if base == "SR_V3_HEDGING":
        return f"SR_V3_{scope}_HEDGING"
    return f"SR_V3_{scope}_ROUTING"


@dataclass(frozen=True, slots=True)
class _Outcome:
    decided: str
    scores: list[tuple[str, float]]
    approach: str
    before_evaluation: str | None
    gws: list[str]
    tag: str | None
    dimension: str | None
    dimension_level: str | None
    apos: dict[str, Any]


def _decision_extension(decision: Decision) -> dict[str, Any]:
    return {
        "decision_id": decision.decision_id,
        "policy": decision.policy,
        "model_version": decision.model_version,
        "confidence": decision.confidence,
        "propensity": decision.propensity,
        "explored": decision.explored,
        "fallback": decision.fallback,
        "reasons": list(decision.reasons),
    }


def route_by_success_rate(
    routing: RoutingService, payment: Payment, eligible: list[str]
) -> _Outcome:
    """SR (and network) ranking: the routing service with the merchant's learning policy."""
    decision = routing.route(payment)
    opened = _open_connectors(routing, payment.merchant_id, eligible)
    if decision.policy == "rules":
        base = "PRIORITY_LOGIC"
    elif decision.explored and not decision.fallback:
        base = "SR_V3_HEDGING"
    else:
        base = "SR_SELECTION_V3_ROUTING"
    best = max(decision.alternatives, key=lambda pair: pair[1])[0]
    # Named explicitly (not from the learner's path, whose level order is configurable).
    dimension = ", ".join(
        (
            payment.payment_method,
            payment.card_network or "-",
            payment.country or "-",
            amount_band(payment.amount, payment.currency),
        )
    )
    return _Outcome(
        decided=decision.connector,
        scores=list(decision.alternatives),
        approach=_downtime(base, opened, eligible),
        before_evaluation=best,
        gws=eligible,
        tag=None,
        dimension=dimension,
        dimension_level="APOS_CONTEXT",
        apos=_decision_extension(decision),
    )


def route_by_priority(
    routing: RoutingService, payment: Payment, eligible: list[str], preferred: str | None
) -> _Outcome:
    """PL ranking: the merchant's APOS rules and priority list, then the request's order."""
    merchant = payment.merchant_id
    policy = routing.engine.config.policy_for(merchant)
    opened = _open_connectors(routing, merchant, eligible)
    available = [c for c in eligible if c not in opened] or list(eligible)
    choice = RulesPolicy(policy.rules, policy.priority).choose(payment, available)
    decided, reasons = choice.connector, [choice.reason]
    tag = next(
        (
            rule.name
            for rule in policy.rules
            if rule_matches(rule, payment)
            and any(c in available for c in (*rule.connectors, *rule.split))
        ),
        None,
    )
    if preferred is not None and preferred in available:
        decided, tag = preferred, None
        reasons = [f"preferred gateway {preferred}"]
    order = [decided]
    for group in (policy.priority, available, eligible):
        order.extend(c for c in group if c in eligible and c not in order)
    # The engine's priority scores: 1.0 for the first, 0.1 less for each next one.
    scores = [(c, round(1.0 - 0.1 * i, 10)) for i, c in enumerate(order)]
    return _Outcome(
        decided=decided,
        scores=scores,
        approach=_downtime("PRIORITY_LOGIC", opened, eligible),
        before_evaluation=order[0] if not opened else None,
        gws=order,
        tag=tag,
        dimension=None,
        dimension_level=None,
        apos={
            "decision_id": None,
            "policy": "rules",
            "model_version": None,
            "confidence": None,
            "propensity": choice.propensity,
            "explored": False,
            "fallback": False,
            "reasons": reasons,
        },
    )


@router.post(
    "/decide-gateway",
    summary="Decide the gateway for a payment (decision-engine compatible)",
    description=(
        "Juspay decision-engine `/decide-gateway`. `SR_BASED_ROUTING` (and the network "
        "variants) route with the merchant's APOS learning policy; `PL_BASED_ROUTING` with "
        "its APOS rules and priority list. Errors use the engine's `ErrorResponse`. "
        "See docs/decision-engine-compat.md."
    ),
    openapi_extra=_body_doc(DecideGatewayRequest),
    responses={200: {"description": "The engine's DecidedGateway"}, **_ENGINE_ERRORS},
)
async def decide_gateway(request: Request, services: ServicesDep, principal: Operator) -> Response:
    started = time.perf_counter()
    try:
        body = parse_body(DecideGatewayRequest, await _body(request))
    except BadInput as exc:
        return invalid_input(exc.message)
    merchant = body.merchant_id
    if not principal.may_write(merchant):
        return forbidden_engine(merchant)
    compat = compat_of(request)
    entry = await compat.entry(merchant)
    if entry.config is None:
        return engine_error(
            error_message="Merchant not found",
            code="MERCHANT_NOT_FOUND",
            user_message="Merchant not found",
            developer_message="Merchant not found",
        )

    # Gateways keep the caller's spelling in the answer; APOS compares them in lower case.
    originals: dict[str, str] = {}
    for gateway in body.eligible_gateway_list or []:
        connector = gateway.strip().lower()
        if not TOKEN.match(connector):
            return invalid_input(  # the value is not quoted: it may be card data
                "eligibleGatewayList: a gateway may contain only letters, digits "
                "and _ . : - (at most 64)"
            )
        originals.setdefault(connector, gateway)
    eligible = list(originals)
    info = body.payment_info
    preferred = info.preferred_gateway.strip().lower() if info.preferred_gateway else None
    if not eligible or (len(eligible) == 1 and preferred not in (None, eligible[0])):
        message = "Gateway not found to process the transaction request."
        return engine_error(
            error_message="Can't find a suitable gateway to process the transaction",
            code="GATEWAY_NOT_FOUND",
            user_message=message,
            developer_message=message,
            routing_approach="NONE",
            priority_logic_output=_priority_logic_output([originals[c] for c in eligible]),
        )

    amount = minor_units(info.amount, info.currency)
    if amount > MAX_AMOUNT:  # the limit of /v1/events, at decide time as at feedback
        return invalid_input(
            f"paymentInfo.amount: at most {MAX_AMOUNT} minor units of the currency"
        )
    method, method_type = payment_methods(info.payment_method_type, info.payment_method)
    payment = Payment(
        payment_id=info.payment_id,
        merchant_id=merchant,
        amount=amount,
        currency=info.currency,
        payment_method=method,
        card_network=token(info.card_network or info.card_switch_provider),
        country=info.country,
        payment_method_type=method_type,
        eligible_connectors=tuple(eligible),
    )
    routing = services.routing
    await compat.ensure_policy(routing, merchant, entry)
    algorithm = body.ranking_algorithm or "SR_BASED_ROUTING"
    if len(eligible) == 1 and preferred is not None:
        # The engine routes to the merchant's preferred gateway when it is the only one.
        outcome = _Outcome(
            decided=eligible[0],
            scores=[(eligible[0], 1.0)],
            approach="MERCHANT_PREFERENCE",
            before_evaluation=eligible[0],
            gws=eligible,
            tag=None,
            dimension=None,
            dimension_level=None,
            apos={"decision_id": None, "policy": "preference", "reasons": ["preferred gateway"]},
        )
    elif algorithm == "PL_BASED_ROUTING":
        outcome = route_by_priority(routing, payment, eligible, preferred)
    else:
        try:
            outcome = route_by_success_rate(routing, payment, eligible)
        except ValueError as exc:
            return engine_error(
                error_message="Can't find a suitable gateway to process the transaction",
                code="GATEWAY_NOT_FOUND",
                user_message="Gateway not found to process the transaction request.",
                developer_message=str(exc),
                routing_approach="NONE",
            )

    context = {
        "amount": payment.amount,
        "currency": payment.currency,
        "payment_method": payment.payment_method,
        "payment_method_type": payment.payment_method_type,
        "card_network": payment.card_network,
        "country": payment.country,
        "decided_gateway": outcome.decided,
        "decision_id": outcome.apos.get("decision_id"),
    }
    decided_at = compat.remember(merchant, payment.payment_id, context)
    answer = {
        "decided_gateway": originals[outcome.decided],
        "gateway_priority_map": {originals[c]: s for c, s in outcome.scores},
        "filter_wise_gateways": None,
        "priority_logic_tag": outcome.tag,
        "routing_approach": outcome.approach,
        "gateway_before_evaluation": (
            originals[outcome.before_evaluation] if outcome.before_evaluation else None
        ),
        "priority_logic_output": _priority_logic_output(
            [originals[c] for c in outcome.gws], outcome.tag
        ),
        "debit_routing_output": None,
        "reset_approach": "NO_RESET",
        "routing_dimension": outcome.dimension,
        "routing_dimension_level": outcome.dimension_level,
        "is_scheduled_outage": False,
        "is_dynamic_mga_enabled": False,
        "gateway_mga_id_map": None,
        "is_rust_based_decider": False,
        "latency": int((time.perf_counter() - started) * 1000),
        "apos": {**outcome.apos, "ranking_algorithm": algorithm},
    }
    task = BackgroundTask(compat.persist, merchant, payment.payment_id, context, decided_at)
    return _json(answer, background=task)


# --------------------------------------------------------------------------- update-gateway-score


@router.post(
    "/update-gateway-score",
    summary="Report a payment's outcome at a gateway (decision-engine compatible)",
    description=(
        "Juspay decision-engine `/update-gateway-score`: becomes a canonical payment event "
        "(idempotent: the event id is derived from merchant, payment, gateway and status), "
        "stored and learnt from. Needs a prior `/decide-gateway` for the payment."
    ),
    openapi_extra=_body_doc(UpdateGatewayScoreRequest),
    responses={200: {"description": "The engine's UpdateScoreResponse"}, **_ENGINE_ERRORS},
)
async def update_gateway_score(
    request: Request, services: ServicesDep, principal: Operator
) -> Response:
    try:
        body = parse_body(UpdateGatewayScoreRequest, await _body(request))
    except BadInput as exc:
        return invalid_input(exc.message)
    merchant = body.merchant_id
    if not principal.may_write(merchant):
        return forbidden_engine(merchant)
    connector = body.gateway.strip().lower()
    if not TOKEN.match(connector):
        return invalid_input("gateway: may contain only letters, digits and _ . : - (at most 64)")
    compat = compat_of(request)
    context = compat.recall(merchant, body.payment_id) or await run_in_threadpool(
        compat.load_context, merchant, body.payment_id
    )
    if context is None:
        return engine_error(
            status="400",
            error_code="GATEWAY_SCORING_DATA_NOT_FOUND",
            error_message="GatewayScoringData is not found",
            code="GATEWAY_SCORING_DATA_NOT_FOUND",
            user_message="GatewayScoringData is not found. Please create the transaction.",
            developer_message=(
                f"no /decide-gateway call is known for payment {body.payment_id!r} of "
                f"merchant {merchant!r} in the last {CONTEXT_TTL.total_seconds() / 3600:g} hours"
            ),
        )
    status, error_code = outcome_of(body)
    first_attempt = connector == context.get("decided_gateway")
    event = {
        "event_id": event_id_for(body, connector),
        "payment_id": body.payment_id,
        # A gateway other than the decided one is a retry: keep it out of experiment counts.
        "attempt": 1 if first_attempt else 2,
        "merchant_id": merchant,
        "connector": connector,
        "status": status.value,
        "amount": context["amount"],
        "currency": context["currency"],
        "payment_method": context.get("payment_method") or "unknown",
        "payment_method_type": context.get("payment_method_type"),
        "card_network": context.get("card_network"),
        "issuer_country": context.get("country"),
        "latency_ms": body.latency_ms(),
        "error_code": error_code,
        "error_message": f"decision engine status {body.status}" if error_code else None,
        "decision_id": context.get("decision_id") if first_attempt else None,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    report = await run_in_threadpool(
        services.ingestor.ingest,
        [event],
        "decision_engine",
        principal.may_write,
        principal.merchant_id,
    )
    if report.rejected:
        rejection = report.rejected[0]
        if rejection.code == "forbidden_merchant":
            return forbidden_engine(merchant)
        return invalid_input("; ".join(f"{e.field}: {e.message}" for e in rejection.errors))
    return _json(
        {
            "message": "Gateway score updated successfully",
            "merchant_id": merchant,
            "gateway": body.gateway,
            "payment_id": body.payment_id,
            "apos": {
                "event_id": event["event_id"],
                "status": status.value,
                "duplicate": report.duplicates > 0,
                "learnt": status.is_final and report.accepted > 0,
            },
        }
    )


# --------------------------------------------------------------------------- merchant accounts


@router.post(
    "/merchant-account/create",
    summary="Create a decision-engine merchant account",
    openapi_extra=_body_doc(MerchantAccountCreate),
    responses=_CONFIG_BODY_ERRORS,
)
async def create_merchant_account(
    request: Request, services: ServicesDep, principal: Admin
) -> Response:
    try:
        body = parse_body(MerchantAccountCreate, await _body(request))
    except BadInput as exc:
        return config_bad_input(exc)
    merchant = body.merchant_id
    if not principal.may_write(merchant):
        return forbidden_config(merchant)
    compat = compat_of(request)
    created = await run_in_threadpool(
        compat.store.create_merchant,
        merchant,
        body.gateway_success_rate_based_decider_input,
        datetime.now(UTC),
    )
    if not created:
        return config_error(400, "TE_04", "Merchant account already exists")
    await _audit(services, principal, "merchant.create", merchant, body.model_dump())
    await compat.refresh(services.routing, merchant)
    return _json(
        {
            "message": "Merchant account created successfully",
            "merchant_id": merchant,
            "gateway_success_rate_based_decider_input": (
                body.gateway_success_rate_based_decider_input
            ),
            # The engine issues one of its own API keys here; APOS keys come from /v1/keys.
            "api_key": None,
        }
    )


def _refuse_create_path(merchant_id: str) -> None:
    """``/merchant-account/create`` is the create route, POST only (as in the engine, and as
    OpenAPI reads a concrete path before a templated one), not the account named "create"."""
    if merchant_id == "create":
        raise ApiError(405, "method_not_allowed", "Method Not Allowed", headers={"Allow": "POST"})


@router.get(
    "/merchant-account/{merchant_id}",
    summary="Get a decision-engine merchant account",
    responses=_CONFIG_ERRORS,
)
async def get_merchant_account(merchant_id: str, request: Request, principal: Viewer) -> Response:
    _refuse_create_path(merchant_id)
    if not principal.may_write(merchant_id):
        return forbidden_config(merchant_id)
    account = await run_in_threadpool(compat_of(request).store.get_merchant, merchant_id)
    if account is None:
        return merchant_not_found()
    return _json(
        {
            "merchant_id": account.merchant_id,
            "gateway_success_rate_based_decider_input": account.decider_input,
        }
    )


@router.delete(
    "/merchant-account/{merchant_id}",
    summary="Delete a decision-engine merchant account and its rule configurations",
    responses=_CONFIG_ERRORS,
)
async def delete_merchant_account(
    merchant_id: str, request: Request, services: ServicesDep, principal: Admin
) -> Response:
    _refuse_create_path(merchant_id)
    if not principal.may_write(merchant_id):
        return forbidden_config(merchant_id)
    compat = compat_of(request)
    if not await run_in_threadpool(compat.store.delete_merchant, merchant_id):
        return merchant_not_found()
    await _audit(services, principal, "merchant.delete", merchant_id, {})
    await compat.refresh(services.routing, merchant_id)
    return _json({"message": "Merchant account deleted successfully", "merchant_id": merchant_id})


# --------------------------------------------------------------------------- rule configurations


async def _rule_request(
    request: Request, principal: Principal, compat: DecisionEngineCompat
) -> tuple[RuleConfigRequest, dict[str, Any]] | Response:
    """Parse a create/update body; an error response if it is wrong or not the caller's."""
    try:
        body = parse_body(RuleConfigRequest, await _body(request))
    except BadInput as exc:
        return config_bad_input(exc)
    if not principal.may_write(body.merchant_id):
        return forbidden_config(body.merchant_id)
    try:
        data = rule_data(body.config)
    except BadInput as exc:
        return config_error(
            400, "TE_04", "Invalid routing rule configuration", {"errors": exc.errors}
        )
    if await run_in_threadpool(compat.store.get_merchant, body.merchant_id) is None:
        return merchant_not_found()
    return body, data


async def _write_rule(
    request: Request, services: Services, principal: Principal, verb: Literal["create", "update"]
) -> Response:
    compat = compat_of(request)
    parsed = await _rule_request(request, principal, compat)
    if isinstance(parsed, Response):
        return parsed
    body, data = parsed
    merchant, kind = body.merchant_id, body.config.type
    now = datetime.now(UTC)
    store = compat.store
    if kind == "elimination":
        # As in the engine: the elimination rule is the merchant's decider input, replaced
        # by create and update alike.
        done = await run_in_threadpool(
            store.set_decider_input, merchant, elimination_decider_input(data), now
        )
        if not done:
            return merchant_not_found()
    elif verb == "create":
        if not await run_in_threadpool(store.create_rule, merchant, kind, data, now):
            return config_error(400, "TE_04", "Rule configuration already exists")
    elif not await run_in_threadpool(store.update_rule, merchant, kind, data, now):
        return config_error(404, "TE_04", "Rule configuration not found")
    config = {"type": kind, "data": data}
    await _audit(services, principal, f"rule.{verb}", merchant, config)
    await compat.refresh(services.routing, merchant)
    past = "created" if verb == "create" else "updated"
    return _json(
        {
            "message": f"{RULE_LABELS[kind]} Configuration {past} successfully",
            "merchant_id": merchant,
            "config": config,
        }
    )


@router.post(
    "/rule/create",
    summary="Create a rule configuration (successRate, elimination, debitRouting)",
    openapi_extra=_body_doc(RuleConfigRequest),
    responses=_RULE_ERRORS,
)
async def create_rule(request: Request, services: ServicesDep, principal: Admin) -> Response:
    return await _write_rule(request, services, principal, "create")


@router.post(
    "/rule/update",
    summary="Replace a rule configuration",
    openapi_extra=_body_doc(RuleConfigRequest),
    responses=_RULE_ERRORS,
)
async def update_rule(request: Request, services: ServicesDep, principal: Admin) -> Response:
    return await _write_rule(request, services, principal, "update")


async def _fetch_request(request: Request, principal: Principal) -> RuleFetchRequest | Response:
    try:
        body = parse_body(RuleFetchRequest, await _body(request))
    except BadInput as exc:
        return config_bad_input(exc)
    if not principal.may_write(body.merchant_id):
        return forbidden_config(body.merchant_id)
    return body


@router.post(
    "/rule/get",
    summary="Get a rule configuration",
    openapi_extra=_body_doc(RuleFetchRequest),
    responses=_RULE_ERRORS,
)
async def get_rule(request: Request, principal: Viewer) -> Response:
    body = await _fetch_request(request, principal)
    if isinstance(body, Response):
        return body
    merchant, kind = body.merchant_id, body.algorithm
    config = await run_in_threadpool(compat_of(request).store.load_merchant, merchant)
    if config is None:
        return merchant_not_found()
    if kind == "elimination":
        data = elimination_from_decider_input(config.account.decider_input)
    else:
        data = config.rules.get(kind)
    if data is None:
        return config_error(404, "TE_04", "Rule configuration not found")
    return _json({"merchant_id": merchant, "config": {"type": kind, "data": data}})


@router.post(
    "/rule/delete",
    summary="Delete a rule configuration",
    openapi_extra=_body_doc(RuleFetchRequest),
    responses=_RULE_ERRORS,
)
async def delete_rule(request: Request, services: ServicesDep, principal: Admin) -> Response:
    body = await _fetch_request(request, principal)
    if isinstance(body, Response):
        return body
    merchant, kind = body.merchant_id, body.algorithm
    compat = compat_of(request)
    store = compat.store
    account = await run_in_threadpool(store.get_merchant, merchant)
    if account is None:
        return merchant_not_found()
    deleted: Callable[[], bool]
    if kind == "elimination":
        if elimination_from_decider_input(account.decider_input) is None:
            return config_error(404, "TE_04", "Rule configuration not found")

        def deleted() -> bool:
            # The engine empties the decider input rather than nulling it.
            return store.set_decider_input(merchant, "", datetime.now(UTC))
    else:

        def deleted() -> bool:
            return store.delete_rule(merchant, kind)

    if not await run_in_threadpool(deleted):
        return config_error(404, "TE_04", "Rule configuration not found")
    await _audit(services, principal, "rule.delete", merchant, {"algorithm": kind})
    await compat.refresh(services.routing, merchant)
    return _json(
        {
            "message": f"{RULE_LABELS[kind]} Configuration deleted successfully",
            "merchant_id": merchant,
        }
    )
