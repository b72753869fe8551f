"""Hyperswitch outgoing webhooks, accepted as Hyperswitch sends them.

Authentication: when ``hyperswitch_webhook_secret`` is set (the business profile's
``payment_response_hash_key``), the HMAC-SHA512 signature header is required and is the
credential. Without a secret, the caller needs an operator API key like any other write.
Webhooks that are not payment outcomes (refunds, disputes, ...) are acknowledged and ignored,
so Hyperswitch does not retry them forever. A payment webhook APOS cannot use (a failed
payment with no connector, a status it does not know, ...) is acknowledged too, and kept in
the dead-letter store once per Hyperswitch ``event_id``: Hyperswitch retries anything but a
2xx for about a day, and each retry would otherwise add another letter and change nothing.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from apos.adapters.hyperswitch import (
    scrub_customer_data,
    scrub_customer_text,
    verify_signature,
    webhook_to_event,
)
from apos.core.events import EventValidationError, FieldError
from apos.service.api.deps import ServicesDep
from apos.service.api.events import read_body
from apos.service.auth import Role, require
from apos.service.errors import ApiError
from apos.service.openapi import error_responses

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
    responses=error_responses(
        {
            400: "the body is not JSON (`invalid_json`; kept in the dead-letter store)",
            401: "signature missing or wrong (`invalid_signature`), or no valid key",
            403: "role too low, or a scoped key's webhook of another merchant",
            413: "body over `max_body_bytes`",
        }
    ),
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
            ingestor.dead_letter,
            scrub_customer_text(body.decode("utf-8", errors="replace")),
            f"invalid JSON: {exc}",
            "webhook.hyperswitch",
            scope,
        )
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    try:
        event = webhook_to_event(payload, received_at=datetime.now(UTC))
    except EventValidationError as exc:
        await run_in_threadpool(
            ingestor.dead_letter,
            scrub_customer_data(payload),  # kept for people to read: no customer data
            str(exc),
            "webhook.hyperswitch",
            scope,
            _dedupe_key(payload, body, scope),
        )
        return _dead_lettered(exc.errors)
    if event is None:
        return {"status": "ignored", "reason": "not a payment outcome"}
    principal = getattr(request.state, "principal", None)
    may_write = principal.may_write if principal is not None else None
    report = await run_in_threadpool(
        ingestor.ingest,
        [event.model_dump(mode="json")],
        "webhook.hyperswitch",
        may_write,
        scope,
        _dedupe_key(payload, body, scope),
    )
    if report.rejected:
        rejection = report.rejected[0]
        if rejection.code == "forbidden_merchant":
            raise ApiError(403, rejection.code, "webhook not accepted", rejection.errors)
        # Dead-lettered by the ingestor (refused by validation or by the database).
        return _dead_lettered(rejection.errors)
    return {
        "status": "duplicate" if report.duplicates else "accepted",
        "event_id": event.event_id,
    }


def _dedupe_key(payload: Any, body: bytes, scope: str | None) -> str:
    """What identifies this webhook across Hyperswitch's retries: its ``event_id`` (a retry
    resends the same one), else the body itself; within the key's merchant scope, so one
    merchant's key cannot pre-empt another's letter. A digest, so the column holds no input
    (the id is whatever the sender put there)."""
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    if isinstance(event_id, str):
        basis = f"event_id:{event_id}".encode("utf-8", "surrogatepass")
    else:
        basis = b"body:" + body
    return hashlib.sha256(f"{scope or ''}\x1f".encode() + basis).hexdigest()


def _dead_lettered(errors: list[FieldError]) -> dict[str, Any]:
    """The 200 for a webhook APOS cannot use: acknowledged (so not retried), and kept."""
    return {"status": "dead_lettered", "errors": [error.model_dump() for error in errors]}
