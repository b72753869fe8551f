"""API errors: JSON bodies with a stable machine ``code`` and a message for people.

Shape: ``{"code": "validation_error", "message": "...", "errors": [{"field", "message"}],
"request_id": "..."}``. Codes are part of the API contract; add new ones, never rename.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson
import redis
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from apos.core.events import FieldError
from apos.core.iso import redact_card_numbers
from apos.service.logs import get_logger

log = get_logger("api")


class ApiError(Exception):
    """Raise anywhere in a request to answer with ``status`` and a stable ``code``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []
        self.headers = headers


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Render the standard error body."""
    request_id = request.scope.get("state", {}).get("request_id")
    return Response(
        error_json(code, message, errors, request_id),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_json(
    code: str,
    message: str,
    errors: list[FieldError] | None = None,
    request_id: str | None = None,
) -> bytes:
    """The standard error body, serialised.

    Card numbers are masked in the message and in every field name and message: the last
    guard, should any of them quote the sender's input (an unknown field's name, an id).
    """
    body: dict[str, Any] = {"code": code, "message": redact_card_numbers(message)}
    if errors:
        body["errors"] = [
            {"field": redact_card_numbers(e.field), "message": redact_card_numbers(e.message)}
            for e in errors
        ]
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


# A dependency (database, Redis) that cannot be reached or timed out: the request may succeed
# later, so it is a 503 the caller can retry, not a 500 bug (see ``is_unavailable``).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
UNAVAILABLE_MESSAGE = "a dependency (database or Redis) is unavailable; retry shortly"
RETRY_AFTER = {"Retry-After": "1"}
# SQLite reports its own bugs-or-setup errors ("no such table", syntax) as OperationalError
# too; of those, only these are transient.
_SQLITE_TRANSIENT = ("database is locked", "unable to open database", "disk i/o error")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (one of ``UNAVAILABLE_ERRORS``) means "down, retry", not "bug"."""
    if not isinstance(exc, UNAVAILABLE_ERRORS):
        return False
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and isinstance(exc.orig, sqlite3.Error):
        text = str(exc.orig).lower()
        return any(marker in text for marker in _SQLITE_TRANSIENT)
    return True


def allowed_methods(request: Request) -> str:
    """Every method the request's path takes, for a 405's ``Allow`` header.

    Starlette answers 405 with the methods of the first route whose path matched; a path
    served by several routes (``GET`` and ``POST /v1/keys``) would list only one of them.
    A route with this literal path wins over templated ones (OpenAPI's rule): handlers of a
    templated path refuse the literal one themselves (``/merchant-account/create``).
    """
    path: str = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    concrete: set[str] = set()
    templated: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            literal = "{" not in (route.path_format or "")
            (concrete if literal else templated).update(route.methods or ())
    # A concrete path wins over a templated one (OpenAPI's rule): `/merchant-account/create`
    # is not the account named "create".
    return ", ".join(sorted(concrete or templated))


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, including FastAPI's own, use the standard body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(request, exc.status, exc.code, exc.message, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            errors.append(FieldError(field=".".join(loc), message=str(err.get("msg", ""))))
        names = ", ".join(e.field for e in errors if e.field) or "request"
        return error_response(request, 422, "validation_error", f"invalid {names}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(request, exc.status_code, code, str(exc.detail), None, headers)

    async def _unavailable(request: Request, exc: Exception) -> Response:
        if not is_unavailable(exc):
            return await _unexpected(request, exc)
        log.warning("dependency unavailable", path=request.url.path, error=type(exc).__name__)
        return error_response(request, 503, "unavailable", UNAVAILABLE_MESSAGE, None, RETRY_AFTER)

    for error_type in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_type, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Starlette runs this handler outside the request-id middleware, whose log binding
        # is gone by now: name the request id explicitly.
        request_id = request.scope.get("state", {}).get("request_id")
        log.exception("unhandled error", path=request.url.path, request_id=request_id)
        return error_response(request, 500, "internal_error", "internal error; see server logs")
