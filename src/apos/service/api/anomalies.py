"""Anomalies: list and read incidents with their evidence and series; acknowledge, resolve.

Records are written by :mod:`apos.service.detection` (one per incident). A merchant-scoped
key sees and acts only on records of its merchant (an entity-wide record, such as a
connector across merchants, is not its merchant's). Every acknowledgement and resolution is
appended to the audit log with who and why.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, Field

from apos.adapters.db import InvalidCursorError
from apos.adapters.db.anomalies import (
    AnomalyQuery,
    AnomalyRecord,
    AnomalyStatus,
    AnomalyStore,
    InvalidTransitionError,
)
from apos.core.detect.findings import AnomalyType, Severity
from apos.core.events import FieldError
from apos.service.api.deps import Operator, ServicesDep, Viewer, audit
from apos.service.auth import Principal
from apos.service.bootstrap import Services
from apos.service.errors import ApiError
from apos.service.openapi import error_responses

router = APIRouter(prefix="/v1", tags=["anomalies"])

_NOT_FOUND = "no such anomaly (or another merchant's, for a scoped key) (`not_found`)"
_CONFLICT = "the anomaly's status does not allow it, e.g. it is resolved (`invalid_transition`)"


class AnomalyAction(BaseModel):
    """Why an operator acknowledges or resolves an anomaly (kept in the audit log)."""

    model_config = {"extra": "forbid"}

    reason: str = Field(min_length=1, max_length=1000, description="why; audited")
    actions: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list,
        max_length=50,
        description="resolve only: what was done, appended to `resolution_actions`",
    )


def _store(services: Services) -> AnomalyStore:
    if services.anomalies is None:  # built by bootstrap; absent only in hand-made Services
        raise ApiError(503, "unavailable", "anomaly records are not available here")
    return services.anomalies


async def _visible(services: Services, principal: Principal, anomaly_id: str) -> AnomalyRecord:
    record = await run_in_threadpool(_store(services).get, anomaly_id)
    # The same 404 for another merchant's record: no existence oracle.
    if record is None or (
        principal.merchant_id is not None and record.merchant_id != principal.merchant_id
    ):
        raise ApiError(404, "not_found", "no such anomaly")
    return record


@router.get(
    "/anomalies",
    summary="List anomalies, newest detected first",
    description=(
        "Filters: `status`, `anomaly_type`, `merchant_id`, `connector`, `severity`, and "
        "`since` <= `detected_at` < `until` (event time the incident was flagged). Paged "
        "with `limit` and the opaque `next_cursor`."
    ),
    responses=error_responses(
        {
            403: "`merchant_id` names another merchant than the key's (`forbidden_merchant`)",
            422: "a query parameter is wrong, or `cursor` was not issued here",
        }
    ),
)
async def list_anomalies(
    services: ServicesDep,
    principal: Viewer,
    status: AnomalyStatus | None = None,
    anomaly_type: AnomalyType | None = None,
    merchant_id: str | None = None,
    connector: str | None = None,
    severity: Severity | None = None,
    since: Annotated[AwareDatetime | None, Query(description="detected_at >= since")] = None,
    until: Annotated[AwareDatetime | None, Query(description="detected_at < until")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    query = AnomalyQuery(
        status=status.value if status else None,
        anomaly_type=anomaly_type.value if anomaly_type else None,
        merchant_id=principal.merchant_filter(merchant_id),
        connector=connector.lower() if connector else None,
        severity=severity.value if severity else None,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    try:
        page = await run_in_threadpool(_store(services).list_anomalies, query)
    except InvalidCursorError as exc:
        raise ApiError(
            422, "invalid_cursor", str(exc), [FieldError(field="cursor", message=str(exc))]
        ) from None
    return {"items": [r.to_dict() for r in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/anomalies/{anomaly_id}",
    summary="One anomaly, its evidence and the entity's per-minute series around it",
    description=(
        "`series`: per UTC minute from `metric_rollups`, over the incident ± 30 minutes "
        "(the newest 24 hours of a longer one; `series_truncated` says so): attempts, "
        "successes, failures, success rate and mean latency of the anomaly's merchant "
        "and/or connector (the whole system for an entity with neither)."
    ),
    responses=error_responses({404: _NOT_FOUND}),
)
async def get_anomaly(anomaly_id: str, services: ServicesDep, principal: Viewer) -> dict[str, Any]:
    record = await _visible(services, principal, anomaly_id)
    points, truncated = await run_in_threadpool(_store(services).series, record)
    return {
        **record.to_dict(),
        "series": [p.to_dict() for p in points],
        "series_truncated": truncated,
    }


_ACTION_ERRORS = {
    404: _NOT_FOUND,
    409: _CONFLICT,
    422: "`reason` missing or too long, or an unknown field (`validation_error`)",
}


@router.post(
    "/anomalies/{anomaly_id}/acknowledge",
    summary="Acknowledge an open anomaly (someone is on it)",
    responses=error_responses(_ACTION_ERRORS),
)
async def acknowledge_anomaly(
    anomaly_id: str, body: AnomalyAction, services: ServicesDep, principal: Operator
) -> dict[str, Any]:
    record = await _visible(services, principal, anomaly_id)
    try:
        updated = await run_in_threadpool(_store(services).acknowledge, record.id, principal.actor)
    except InvalidTransitionError as exc:
        raise ApiError(409, "invalid_transition", str(exc)) from None
    await _audit(services, principal, "anomaly.acknowledge", updated, body)
    return updated.to_dict()


@router.post(
    "/anomalies/{anomaly_id}/resolve",
    summary="Resolve an open or acknowledged anomaly",
    description=(
        "The record ends at its last evaluation (`ended_at`); `actions` are appended to "
        "`resolution_actions`. The detector firing on about the same occurrence does not "
        "reopen it; a new occurrence (one that starts later) opens a new record."
    ),
    responses=error_responses(_ACTION_ERRORS),
)
async def resolve_anomaly(
    anomaly_id: str, body: AnomalyAction, services: ServicesDep, principal: Operator
) -> dict[str, Any]:
    record = await _visible(services, principal, anomaly_id)
    try:
        updated = await run_in_threadpool(
            _store(services).resolve, record.id, principal.actor, body.actions
        )
    except InvalidTransitionError as exc:
        raise ApiError(409, "invalid_transition", str(exc)) from None
    await _audit(services, principal, "anomaly.resolve", updated, body)
    return updated.to_dict()


async def _audit(
    services: Services,
    principal: Principal,
    action: str,
    record: AnomalyRecord,
    body: AnomalyAction,
) -> None:
    details: dict[str, Any] = {
        "reason": body.reason,
        "anomaly_type": record.anomaly_type,
        "incident_key": record.incident_key,
        "status": record.status,
    }
    if body.actions:
        details["actions"] = body.actions
    await audit(services, principal, action, f"anomaly:{record.id}", record.merchant_id, details)
