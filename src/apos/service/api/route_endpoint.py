"""``POST /v1/route``, the hot path, as a plain ASGI endpoint in front of FastAPI.

FastAPI's routing, dependency solving and middleware stack cost more per request than the
decision itself (profiled: ~40% of a worker's time under load against ~25% for parsing,
deciding and answering). This endpoint does only what the route needs: read the body
(at most :data:`MAX_BODY` bytes), check the key (:func:`~apos.service.auth.authenticate`,
the same check every FastAPI route uses), validate with :class:`RouteRequest`, ask the
in-memory engine, answer with orjson. It answers errors in the API's standard shape, is
wrapped in the same request-id middleware, and is documented in the OpenAPI document by
:func:`document`, since FastAPI never sees it.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from apos.core.events import field_errors
from apos.service.api.routing import RouteRequest, decision_json
from apos.service.auth import Role, authenticate, forbidden_merchant, token_in_headers
from apos.service.bootstrap import Services
from apos.service.errors import (
    UNAVAILABLE_ERRORS,
    UNAVAILABLE_MESSAGE,
    ApiError,
    error_json,
    is_unavailable,
)
from apos.service.logs import get_logger
from apos.service.openapi import API_KEY_SECURITY, COMPRESSED_BODY, error_responses, secure

__all__ = ["MAX_BODY", "PATH", "RouteEndpoint", "document"]

PATH = "/v1/route"
# A routing request is a few hundred bytes; anything near this is not one.
MAX_BODY = 64 * 1024

log = get_logger("api")

_JSON = (b"content-type", b"application/json")
_ALLOW = {"Allow": "POST"}


class RouteEndpoint:
    """The ASGI app answering :data:`PATH` (any method; only POST is allowed)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = scope.get("state", {}).get("request_id")
        try:
            body = await self._answer(scope, receive)
        except ApiError as exc:
            body = error_json(exc.code, exc.message, exc.errors, request_id)
            extra = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            await _respond(send, exc.status, body, extra)
            return
        except UNAVAILABLE_ERRORS as exc:
            if not is_unavailable(exc):
                await self._internal_error(send, request_id)
                return
            log.warning("dependency unavailable", path=PATH, error=type(exc).__name__)
            body = error_json("unavailable", UNAVAILABLE_MESSAGE, None, request_id)
            await _respond(send, 503, body, [(b"retry-after", b"1")])
            return
        except Exception:
            await self._internal_error(send, request_id)
            return
        await _respond(send, 200, body)

    @staticmethod
    async def _internal_error(send: Send, request_id: str | None) -> None:
        log.exception("unhandled error", path=PATH)
        body = error_json("internal_error", "internal error; see server logs", None, request_id)
        await _respond(send, 500, body)

    async def _answer(self, scope: Scope, receive: Receive) -> bytes:
        if scope["method"] != "POST":
            raise ApiError(405, "method_not_allowed", "Method Not Allowed", headers=_ALLOW)
        services = self._services
        token = token_in_headers(scope["headers"])
        principal = await authenticate(services.keys, token, Role.OPERATOR)
        try:
            request = RouteRequest.model_validate_json(await _read_body(scope, receive))
        except ValidationError as exc:
            errors = field_errors(exc)
            names = ", ".join(e.field for e in errors if e.field) or "body"
            raise ApiError(422, "validation_error", f"invalid {names}", errors) from None
        if not principal.may_write(request.merchant_id):
            raise forbidden_merchant(request.merchant_id)
        try:
            decision = services.routing.route(request.to_payment())
        except ValueError as exc:
            raise ApiError(422, "unroutable", str(exc)) from None
        return orjson.dumps(decision_json(decision))


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
            raise _too_large()
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "bad_request", "the client disconnected before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large() -> ApiError:
    return ApiError(413, "payload_too_large", f"a routing request is at most {MAX_BODY} bytes")


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def document(schema: dict[str, Any]) -> None:
    """Add :data:`PATH` to an OpenAPI document (FastAPI does not know the endpoint)."""

    operation: dict[str, Any] = {
        "tags": ["routing"],
        "summary": "Choose the connector for a payment",
        "description": (
            "Answers from in-memory state only. Send the attempt's outcome to "
            "`/v1/events` with `decision_id` so the decision is joined to it and the "
            "router learns. Needs an operator key; a merchant-scoped key may route only "
            "its merchant's payments."
        ),
        "operationId": "route_v1_route_post",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/RouteRequest"}}
            },
        },
        "responses": {
            "200": {
                "description": (
                    "The decision: connector, ranked alternatives with scores, "
                    "confidence, explored, propensity, policy, model_version, reasons, "
                    "fallback, experiment, decision_id"
                ),
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **error_responses(
                {
                    400: "the client disconnected before sending the whole body",
                    403: "role too low, or another merchant's payment for a scoped key",
                    413: f"body larger than {MAX_BODY} bytes",
                    415: COMPRESSED_BODY,
                    422: "invalid request (`errors` names each field) or no connector left",
                }
            ),
        },
    }
    secure(operation, Role.OPERATOR, API_KEY_SECURITY)
    schema.setdefault("paths", {})[PATH] = {"post": operation}
