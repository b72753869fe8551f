"""Hyperswitch outgoing webhooks, accepted as Hyperswitch sends them.

Authentication: when ``hyperswitch_webhook_secret`` is set (the business profile's
``payment_response_hash_key``), the HMAC-SHA512 signature header is required and is the
credential. Without a secret, the caller needs an operator API key like any other write.
Webhooks that are not payment outcomes (refunds, disputes, ...) are acknowledged and ignored,
so Hyperswitch does not retry them forever.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from apos.adapters.hyperswitch import verify_signature, webhook_to_event
from apos.core.events import EventValidationError
from apos.service.api.deps import ServicesDep
from apos.service.api.events import read_body
from apos.service.auth import Role, require
from apos.service.errors import ApiError

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
_operator = require(Role.OPERATOR)


@router.post(
    "/hyperswitch",
    summary="Receive a Hyperswitch outgoing payment webhook",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "Hyperswitch OutgoingWebhook envelope",
                    }
                }
            },
        }
    },
)
async def hyperswitch_webhook(request: Request, services: ServicesDep) -> dict[str, Any]:
    body = await read_body(request, services.settings.max_body_bytes)
    secret = services.settings.hyperswitch_webhook_secret
    if secret is not None:
        if not verify_signature(body, dict(request.headers), secret.get_secret_value()):
            raise ApiError(401, "invalid_signature", "webhook signature is missing or wrong")
        scope = None  # the signature speaks for the whole profile, not one key's merchant
    else:
        scope = (await _operator(request)).merchant_id
    ingestor = services.ingestor
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        await run_in_threadpool(
            ingestor.dead_letter, body, f"invalid JSON: {exc}", "webhook.hyperswitch", scope
        )
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    try:
        event = webhook_to_event(payload, received_at=datetime.now(UTC))
    except EventValidationError as exc:
        await run_in_threadpool(
            ingestor.dead_letter, payload, str(exc), "webhook.hyperswitch", scope
        )
        raise ApiError(422, "validation_error", f"unusable webhook: {exc}", exc.errors) from None
    if event is None:
        return {"status": "ignored", "reason": "not a payment outcome"}
    principal = getattr(request.state, "principal", None)
    may_write = principal.may_write if principal is not None else None
    report = await run_in_threadpool(
        ingestor.ingest, [event.model_dump(mode="json")], "webhook.hyperswitch", may_write, scope
    )
    if report.rejected:
        rejection = report.rejected[0]
        raise ApiError(
            403 if rejection.code == "forbidden_merchant" else 422,
            rejection.code,
            "webhook not accepted",
            rejection.errors,
        )
    return {
        "status": "duplicate" if report.duplicates else "accepted",
        "event_id": event.event_id,
    }
