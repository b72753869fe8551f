"""Routing: decide a payment's connector, inspect decisions, connectors and A/B experiments.

``POST /v1/route`` is the hot path and bypasses FastAPI (:mod:`.route_endpoint`); this
module defines its request model and the decision's JSON shape.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from apos.core.config import PolicyConfig
from apos.core.decision import Decision
from apos.core.events import (
    CARD_NUMBER_REFUSED,
    MAX_AMOUNT,
    UNSTORABLE_REFUSED,
    Identifier,
    Token,
    refuse_card_number,
    unstorable_path,
)
from apos.core.experiments import Experiment, ExperimentResult
from apos.core.iso import COUNTRIES, CURRENCIES, card_number_path, redact_card_numbers
from apos.core.payment import Payment
from apos.service.api.deps import Admin, ServicesDep, Viewer, audit
from apos.service.api.events import _paged
from apos.service.auth import forbidden_merchant
from apos.service.errors import RETRY_AFTER, ApiError
from apos.service.openapi import error_responses

router = APIRouter(prefix="/v1", tags=["routing"])

_SCOPED_READ = {
    403: "`merchant_id` names another merchant than the key's (`forbidden_merchant`)",
    422: "a query parameter is wrong, or `cursor` was not issued here (`invalid_cursor`)",
}


class RouteRequest(BaseModel):
    """A payment to route: the context the router may base its choice on."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    # The rules of /v1/events (apos.core.events): what is routed is written to the decision
    # log, so what /v1/events would refuse is refused here too.
    payment_id: Identifier
    merchant_id: Identifier
    amount: int = Field(ge=0, le=MAX_AMOUNT, description="minor units of currency")
    currency: str = Field(min_length=3, max_length=3)
    payment_method: Token = "card"
    card_network: Token | None = None
    country: str | None = Field(
        default=None, min_length=2, max_length=2, description="issuer country, ISO 3166-1 alpha-2"
    )
    payment_method_type: Token | None = None
    eligible_connectors: list[Token] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="connectors the switch can use for this payment; omit for all",
    )

    @field_validator("amount", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # as in /v1/events: true is not one cent
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if value.upper() not in CURRENCIES:
            raise ValueError("unknown ISO 4217 currency code")
        return value.upper()

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in COUNTRIES:
            raise ValueError("unknown ISO 3166-1 alpha-2 country code")
        return None if value is None else value.upper()

    def to_payment(self) -> Payment:
        return Payment(
            payment_id=self.payment_id,
            merchant_id=self.merchant_id,
            amount=self.amount,
            currency=self.currency,
            payment_method=self.payment_method.lower(),
            card_network=self.card_network.lower() if self.card_network else None,
            country=self.country,
            payment_method_type=self.payment_method_type.lower()
            if self.payment_method_type
            else None,
            eligible_connectors=tuple(c.lower() for c in self.eligible_connectors)
            if self.eligible_connectors
            else None,
        )


def decision_json(decision: Decision) -> dict[str, Any]:
    """The public shape of a decision (also what ``GET /v1/decisions/{id}`` builds on)."""
    return {
        "decision_id": decision.decision_id,
        "payment_id": decision.payment_id,
        "merchant_id": decision.merchant_id,
        "connector": decision.connector,
        "alternatives": [{"connector": c, "score": s} for c, s in decision.alternatives],
        "confidence": decision.confidence,
        "explored": decision.explored,
        "propensity": decision.propensity,
        "policy": decision.policy,
        "model_version": decision.model_version,
        "reasons": list(decision.reasons),
        "fallback": decision.fallback,
        "experiment": None
        if decision.experiment_id is None
        else {"id": decision.experiment_id, "arm": decision.experiment_arm},
    }


@router.get(
    "/decisions",
    summary="Routing decisions, newest first, with joined outcomes",
    responses=error_responses(_SCOPED_READ),
)
async def list_decisions(
    services: ServicesDep,
    principal: Viewer,
    merchant_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    merchant = principal.merchant_filter(merchant_id)
    page = await _paged(services.decisions.list, merchant, limit, cursor)
    return {"items": [d.as_dict() for d in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/decisions/{decision_id}",
    summary="One decision and its outcome",
    responses=error_responses(
        {404: "no such decision (or not yet written, or another merchant's)"}
    ),
)
async def get_decision(
    decision_id: str, services: ServicesDep, principal: Viewer
) -> dict[str, Any]:
    row = await run_in_threadpool(services.decisions.get, decision_id)
    if row is None or (
        principal.merchant_id is not None and row.merchant_id != principal.merchant_id
    ):
        raise ApiError(
            404,
            "not_found",
            f"no decision {redact_card_numbers(decision_id)!r} (recent decisions are written "
            "within a second)",
        )
    return row.as_dict()


@router.get(
    "/connectors",
    summary="Connectors, their breaker states and learnt volume",
    responses=error_responses(_SCOPED_READ),
)
async def connectors(
    services: ServicesDep,
    principal: Viewer,
    merchant_id: Annotated[
        str | None,
        Query(description="one merchant's connectors and breakers (scoped keys: theirs)"),
    ] = None,
) -> dict[str, Any]:
    merchant = principal.merchant_id or merchant_id
    if principal.merchant_id and merchant_id and merchant_id != principal.merchant_id:
        raise forbidden_merchant(merchant_id)
    routing = services.routing
    now = routing.now().timestamp()
    with routing.lock:
        engine = routing.engine
        names = engine.connectors_for(merchant) if merchant else engine.connectors
        items = [
            {"connector": c, "state": engine.breaker_state(c, merchant, now).value} for c in names
        ]
    answer: dict[str, Any] = {"items": items}
    if principal.merchant_id is None:  # a count over every merchant's events
        answer["events_learned"] = routing.events_learned
    return answer


class ExperimentCreate(BaseModel):
    """An A/B test between two policy configurations."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: Annotated[
        str,
        Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$"),
        AfterValidator(refuse_card_number),
    ]
    control: PolicyConfig
    treatment: PolicyConfig
    treatment_share: float = Field(default=0.5, gt=0.0, lt=1.0)
    merchant_id: Identifier | None = None

    @field_validator("control", "treatment")
    @classmethod
    def _no_card_numbers(cls, value: PolicyConfig) -> PolicyConfig:
        # Kept in the audit log and every engine snapshot: no card number in a rule's name,
        # a connector or anywhere else.
        document = value.model_dump(mode="json")
        path = card_number_path(document)
        if path is not None:
            raise ValueError(f"{path}: {CARD_NUMBER_REFUSED}")
        # Kept in the audit log, every snapshot and the shared stream: storable throughout.
        path = unstorable_path(document)
        if path is not None:
            raise ValueError(f"{path or 'a key'}: {UNSTORABLE_REFUSED} (or integers over 64 bits)")
        return value


def result_json(result: ExperimentResult, experiment: Experiment | None = None) -> dict[str, Any]:
    def arm(a: Any) -> dict[str, Any]:
        return {
            "policy": a.policy,
            "attempts": a.attempts,
            "successes": a.successes,
            "success_rate": a.success_rate,
        }

    out: dict[str, Any] = {
        "experiment_id": result.experiment_id,
        "running": result.running,
        "control": arm(result.control),
        "treatment": arm(result.treatment),
        "difference": result.difference,
        "ci95": [result.ci_low, result.ci_high],
        "significant": result.significant,
    }
    if experiment is not None:
        out["merchant_id"] = experiment.merchant_id
        out["treatment_share"] = experiment.treatment_share
    return out


def _experiment(services: Any, experiment_id: str, merchant: str | None) -> Experiment:
    for experiment in services.routing.engine.experiments:
        if experiment.experiment_id == experiment_id and (
            merchant is None or experiment.merchant_id == merchant
        ):
            return experiment  # type: ignore[no-any-return]
    raise ApiError(404, "not_found", f"no experiment {redact_card_numbers(experiment_id)!r}")


@router.post(
    "/experiments",
    status_code=201,
    summary="Start an A/B test between two policies",
    responses={
        202: {"description": "shared with every instance, not yet applied here"},
        **error_responses(
            {
                403: "role too low, or a scoped key naming another merchant",
                409: "an experiment with this id exists (`conflict`)",
            }
        ),
    },
)
async def start_experiment(body: ExperimentCreate, services: ServicesDep, principal: Admin) -> Any:
    merchant = body.merchant_id
    if principal.merchant_id is not None:
        if merchant not in (None, principal.merchant_id):
            raise forbidden_merchant(merchant or "")
        merchant = principal.merchant_id
    routing = services.routing
    experiment = Experiment(
        body.experiment_id,
        body.control,
        body.treatment,
        started_at=routing.now().timestamp(),
        treatment_share=body.treatment_share,
        merchant_id=merchant,
    )
    with routing.lock:
        if any(e.experiment_id == experiment.experiment_id for e in routing.engine.experiments):
            raise ApiError(409, "conflict", f"experiment {body.experiment_id!r} already exists")
    message = {"control": "experiment.start", "experiment": experiment.to_dict()}
    applied = await _control(routing, message)
    details = body.model_dump(mode="json")
    await audit(services, principal, "experiment.start", body.experiment_id, merchant, details)
    if not applied:
        return _pending(body.experiment_id)
    with routing.lock:
        started = _experiment(services, body.experiment_id, merchant)
        return result_json(started.result(), started)


async def _control(routing: Any, message: dict[str, Any]) -> bool:
    """Apply an experiment change on every instance (see ``RoutingService.control``); False
    if it is on the shared stream but this instance has not applied it yet (it will)."""
    try:
        await run_in_threadpool(routing.control, message)
    except ValueError as exc:  # another instance started the same id first
        raise ApiError(409, "conflict", str(exc)) from None
    except KeyError as exc:
        raise ApiError(404, "not_found", f"no experiment {exc}") from None
    except TimeoutError:
        return False
    return True


def _pending(experiment_id: str) -> JSONResponse:
    """202: the change is on the shared stream and will apply; GET the experiment to see it."""
    body = {"experiment_id": experiment_id, "status": "pending"}
    return JSONResponse(body, status_code=202, headers=RETRY_AFTER)


@router.get("/experiments", summary="Experiments with their current results")
async def list_experiments(services: ServicesDep, principal: Viewer) -> dict[str, Any]:
    with services.routing.lock:
        items = [
            result_json(e.result(), e)
            for e in services.routing.engine.experiments
            if principal.merchant_id is None or e.merchant_id == principal.merchant_id
        ]
    return {"items": items}


@router.get(
    "/experiments/{experiment_id}",
    summary="One experiment's per-arm results",
    responses=error_responses({404: "no such experiment (or another merchant's)"}),
)
async def get_experiment(
    experiment_id: str, services: ServicesDep, principal: Viewer
) -> dict[str, Any]:
    with services.routing.lock:
        experiment = _experiment(services, experiment_id, principal.merchant_id)
        return result_json(experiment.result(), experiment)


@router.post(
    "/experiments/{experiment_id}/stop",
    summary="Stop an experiment; final result",
    responses={
        202: {"description": "shared with every instance, not yet applied here"},
        **error_responses({404: "no such experiment (or another merchant's)"}),
    },
)
async def stop_experiment(experiment_id: str, services: ServicesDep, principal: Admin) -> Any:
    routing = services.routing
    with routing.lock:
        experiment = _experiment(services, experiment_id, principal.merchant_id)
    at = routing.now().timestamp()
    stop = {"control": "experiment.stop", "experiment_id": experiment_id, "at": at}
    if not await _control(routing, stop):
        details = {"at": at, "applied_here": False}
        await audit(
            services, principal, "experiment.stop", experiment_id, experiment.merchant_id, details
        )
        return _pending(experiment_id)
    with routing.lock:
        result = routing.engine.experiment_result(experiment_id)
    await audit(
        services,
        principal,
        "experiment.stop",
        experiment_id,
        experiment.merchant_id,
        result_json(result),
    )
    return result_json(result, experiment)
