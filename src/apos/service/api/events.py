"""Payment events: ingest (one or a batch), list, fetch; and the dead-letter store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime

from apos.adapters.db import InvalidCursorError
from apos.adapters.ports import EventQuery, Page
from apos.core.events import FieldError, PaymentEvent, PaymentStatus
from apos.core.iso import redact_card_numbers
from apos.service.api.deps import Operator, ServicesDep, Viewer
from apos.service.errors import ApiError, error_response
from apos.service.openapi import ERROR_REF, INGEST_REPORT_REF, error_responses

router = APIRouter(prefix="/v1", tags=["events"])

_EVENT_SCHEMA = {"$ref": "#/components/schemas/PaymentEvent"}
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA}]}
            }
        },
    }
}


# A scoped key asking for another merchant's rows; a query parameter or cursor that is wrong.
_SCOPED_READ = {
    403: "`merchant_id` names another merchant than the key's (`forbidden_merchant`)",
    422: "a query parameter is wrong, or `cursor` was not issued here (`invalid_cursor`)",
}


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/events",
    summary="Ingest one payment event or a batch",
    description=(
        "Body: one `PaymentEvent` object or an array of them (at most `max_batch_events`, "
        "5,000 by default). Idempotent by `event_id`: a duplicate is counted, never applied "
        "twice. Valid events are durably stored before the answer; invalid ones are listed "
        "in `rejected` with the fields at fault and kept in the dead-letter store. "
        "Status: 200 when nothing was rejected or some events were accepted; 422 when "
        "every event was rejected; 400 for a body that is not JSON; 413 for a batch over "
        "the limit."
    ),
    openapi_extra=_BODY_DOC,
    responses={
        200: {
            "description": "Ingest report",
            "content": {"application/json": {"schema": INGEST_REPORT_REF}},
        },
        **error_responses(
            {
                400: "the body is not JSON (`invalid_json`; kept in the dead-letter store)",
                403: "role too low, or a scoped key's single event of another merchant",
                413: "body over `max_body_bytes` or more events than `max_batch_events`",
            }
        ),
        422: {
            "description": (
                "every event was rejected: the ingest report, or for a single event the "
                "standard error with `errors` naming each field"
            ),
            "content": {"application/json": {"schema": {"anyOf": [INGEST_REPORT_REF, ERROR_REF]}}},
        },
    },
)
async def post_events(request: Request, services: ServicesDep, principal: Operator) -> Response:
    settings = services.settings
    body = await read_body(request, settings.max_body_bytes)
    ingestor = services.ingestor
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        await run_in_threadpool(
            ingestor.dead_letter, body, f"invalid JSON: {exc}", "http", principal.merchant_id
        )
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if isinstance(decoded, dict):
        payloads: list[Any] = [decoded]
    elif isinstance(decoded, list):
        payloads = decoded
    else:
        await run_in_threadpool(
            ingestor.dead_letter, body, "not an object or array", "http", principal.merchant_id
        )
        raise ApiError(
            422,
            "validation_error",
            "body must be an event object or an array",
            [FieldError(field="", message="expected an object or an array")],
        )
    if not payloads:
        raise ApiError(
            422,
            "validation_error",
            "empty batch",
            [FieldError(field="", message="send at least one event")],
        )
    if len(payloads) > settings.max_batch_events:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(payloads)} events in one call; the limit is {settings.max_batch_events}",
        )
    report = await run_in_threadpool(
        ingestor.ingest, payloads, "http", principal.may_write, principal.merchant_id
    )
    status = 422 if report.rejected and not (report.accepted or report.duplicates) else 200
    if status == 422 and len(payloads) == 1:
        rejection = report.rejected[0]
        return error_response(
            request,
            422 if rejection.code != "forbidden_merchant" else 403,
            rejection.code if rejection.code != "invalid_event" else "validation_error",
            "invalid event: " + ", ".join(e.field for e in rejection.errors),
            rejection.errors,
        )
    return Response(
        orjson.dumps(report.as_dict()), status_code=status, media_type="application/json"
    )


async def _paged(listing: Callable[..., Page[Any]], *args: Any) -> Page[Any]:
    """Run a store listing; a cursor it did not issue is the caller's error (422)."""
    try:
        return await run_in_threadpool(listing, *args)
    except InvalidCursorError as exc:
        raise ApiError(
            422, "invalid_cursor", str(exc), [FieldError(field="cursor", message=str(exc))]
        ) from None


def _event_json(event: PaymentEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


@router.get(
    "/events",
    summary="List stored events, newest first",
    responses=error_responses(_SCOPED_READ),
)
async def list_events(
    services: ServicesDep,
    principal: Viewer,
    merchant_id: str | None = None,
    connector: str | None = None,
    status: PaymentStatus | None = None,
    payment_id: str | None = None,
    # AwareDatetime: a time without an offset is ambiguous, a 422 naming the parameter.
    since: Annotated[AwareDatetime | None, Query(description="occurred_at >= since")] = None,
    until: Annotated[AwareDatetime | None, Query(description="occurred_at < until")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    query = EventQuery(
        merchant_id=principal.merchant_filter(merchant_id),
        connector=connector.lower() if connector else None,
        status=status,
        payment_id=payment_id,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    page = await _paged(services.store.list_events, query)
    return {"items": [_event_json(e) for e in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/events/{event_id}",
    summary="One stored event",
    responses=error_responses({404: "no such event (or another merchant's, for a scoped key)"}),
)
async def get_event(event_id: str, services: ServicesDep, principal: Viewer) -> dict[str, Any]:
    event = await run_in_threadpool(services.store.get_event, event_id)
    # A scoped key gets the same 404 for another merchant's event: no existence oracle.
    if event is None or not principal.may_write(event.merchant_id):
        raise ApiError(404, "not_found", f"no event {redact_card_numbers(event_id)!r}")
    return _event_json(event)


@router.get(
    "/dead-letters",
    summary="Inputs that could not be ingested, with the reason",
    responses=error_responses(_SCOPED_READ),
)
async def list_dead_letters(
    services: ServicesDep,
    principal: Viewer,
    merchant_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    merchant = principal.merchant_filter(merchant_id)
    page = await _paged(services.store.list_dead_letters, merchant, limit, cursor)
    return {
        "items": [
            {
                "id": d.id,
                "source": d.source,
                "reason": d.reason,
                "merchant_id": d.merchant_id,
                "received_at": d.received_at.isoformat(),
                "raw": d.raw,
            }
            for d in page.items
        ],
        "next_cursor": page.next_cursor,
    }


@router.get(
    "/audit",
    summary="The append-only audit log, newest first",
    responses=error_responses(_SCOPED_READ),
)
async def list_audit(
    services: ServicesDep,
    principal: Viewer,
    merchant_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    merchant = principal.merchant_filter(merchant_id)
    page = await _paged(services.store.list_audit, merchant, limit, cursor)
    return {
        "items": [
            {
                "id": a.id,
                "at": a.at.isoformat() if a.at else None,
                "actor": a.actor,
                "action": a.action,
                "target": a.target,
                "merchant_id": a.merchant_id,
                "details": a.details,
            }
            for a in page.items
        ],
        "next_cursor": page.next_cursor,
    }
