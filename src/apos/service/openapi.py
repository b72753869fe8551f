"""The OpenAPI document, completed with what FastAPI cannot see.

FastAPI documents a route's parameters and its success answer. It does not know that
authentication happens in a dependency of ours (:func:`apos.service.auth.require`), that
every error uses the body of :mod:`apos.service.errors` rather than its
``HTTPValidationError``, nor which statuses a handler raises. :func:`complete` adds:

- the security schemes (an API key as ``Authorization: Bearer``, ``X-API-Key`` or
  ``api-key``; the Hyperswitch webhook signature) and, per operation, which one applies and
  the role it needs;
- the answers every authenticated operation can give: 401 (no, unknown or revoked key),
  403 (role too low: operator and admin operations), 503 (the key is checked against the
  database, which may be down);
- the standard error schema on every error answer, FastAPI's own 422 included.

Statuses specific to one operation are declared where it is defined, with
:func:`error_responses` (or the decision-engine shapes of :func:`engine_responses`).
``tests/service/test_openapi_fuzz.py`` holds the document to what the service answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, get_args

from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from apos.core.events import FieldError
from apos.service.auth import Role

__all__ = [
    "API_KEY_SECURITY",
    "ERROR_REF",
    "INGEST_REPORT_REF",
    "complete",
    "engine_responses",
    "error_responses",
]

_COMPONENTS = "#/components/schemas/"
ERROR_REF = {"$ref": f"{_COMPONENTS}Error"}
ENGINE_ERROR_REF = {"$ref": f"{_COMPONENTS}DecisionEngineError"}
CONFIG_ERROR_REF = {"$ref": f"{_COMPONENTS}DecisionEngineConfigError"}

# Any one of these carries the key (OpenAPI: a list of alternatives).
API_KEY_SECURITY: list[dict[str, list[str]]] = [
    {"ApiKeyBearer": []},
    {"ApiKeyHeader": []},
    {"ApiKeyHeaderHyperswitch": []},
]
_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKeyBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "apos_key_<12 hex>_<secret>",
        "description": "An APOS API key (`apos keys create` or `POST /v1/keys`).",
    },
    "ApiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key, in a header of its own.",
    },
    "ApiKeyHeaderHyperswitch": {
        "type": "apiKey",
        "in": "header",
        "name": "api-key",
        "description": "The same API key, in the header Hyperswitch sends.",
    },
    "HyperswitchSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Webhook-Signature-512",
        "description": (
            "Hex HMAC-SHA512 of the raw body keyed by the business profile's "
            "`payment_response_hash_key`. When `hyperswitch_webhook_secret` is set it is "
            "required and is the credential; without it the webhook needs an operator key."
        ),
    },
}


class ErrorBody(BaseModel):
    """The body of every APOS error (see :mod:`apos.service.errors`)."""

    code: str = Field(description="stable machine code, e.g. `validation_error`")
    message: str = Field(description="for people; never echoes a rejected value")
    errors: list[FieldError] = Field(
        default_factory=list, description="one entry per wrong field (input errors only)"
    )
    request_id: str | None = Field(default=None, description="also in `X-Request-ID`")


class DecisionEngineErrorInfo(BaseModel):
    code: str
    user_message: str
    developer_message: str


class DecisionEngineError(BaseModel):
    """The decision engine's ``ErrorResponse`` (``/decide-gateway``, ``/update-gateway-score``)."""

    status: str
    error_code: str
    error_message: str
    priority_logic_tag: str | None
    routing_approach: str | None
    filter_wise_gateways: Any
    error_info: DecisionEngineErrorInfo
    priority_logic_output: dict[str, Any] | None
    is_dynamic_mga_enabled: bool


class DecisionEngineConfigError(BaseModel):
    """The decision engine's ``ApiErrorResponse`` (merchant-account and rule endpoints)."""

    code: str
    message: str
    data: Any = None


class IngestRejection(BaseModel):
    """One event of a batch that was not accepted."""

    index: int = Field(description="its position in the batch")
    code: str = Field(description="`invalid_event` or `forbidden_merchant`")
    event_id: str | None
    errors: list[FieldError]


class IngestReport(BaseModel):
    """What ``POST /v1/events`` did with a batch (see :class:`apos.service.ingest.IngestReport`)."""

    received: int
    accepted: int
    duplicates: int
    rejected: list[IngestRejection]


INGEST_REPORT_REF = {"$ref": f"{_COMPONENTS}IngestReport"}

# The methods whose requests apos.service.api.encoding refuses when compressed (415).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
COMPRESSED_BODY = "a compressed body (`Content-Encoding` other than identity)"
_UNPARSABLE = "the body cannot be parsed (not JSON, not UTF-8: `bad_request`, `invalid_json`)"
_STANDARD = {
    401: "no API key, or an unknown or revoked one (`unauthorized`, `invalid_api_key`)",
    403: "the key's role is too low (`insufficient_role`)",
    503: "the database or Redis cannot be reached (checking the key); retry after `Retry-After`",
}


def error_responses(statuses: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with its description and the error schema."""
    return {
        str(status): {"description": text, "content": {"application/json": {"schema": ERROR_REF}}}
        for status, text in statuses.items()
    }


def engine_responses(
    statuses: Mapping[int, str], config: bool = False
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a decision-engine route: the engine's own error shape (``config``:
    ``ApiErrorResponse``, else ``ErrorResponse``) or APOS's (authentication, body size)."""
    engine = CONFIG_ERROR_REF if config else ENGINE_ERROR_REF
    schema = {"anyOf": [engine, ERROR_REF]}
    return {
        str(status): {"description": text, "content": {"application/json": {"schema": schema}}}
        for status, text in statuses.items()
    }


def _roles() -> dict[Any, Role]:
    """The dependency callables of :mod:`apos.service.api.deps` and the role each demands."""
    from apos.service.api import deps

    return {
        get_args(alias)[1].dependency: role
        for alias, role in (
            (deps.Viewer, Role.VIEWER),
            (deps.Operator, Role.OPERATOR),
            (deps.Admin, Role.ADMIN),
        )
    }


def _role_of(route: APIRoute, roles: Mapping[Any, Role]) -> Role | None:
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call in roles:
            return roles[dependant.call]
        pending.extend(dependant.dependencies)
    return None


# Operations that authenticate inside the handler rather than with a dependency.
_HANDLER_AUTH: dict[str, tuple[Role, list[dict[str, list[str]]]]] = {
    "/v1/webhooks/hyperswitch": (
        Role.OPERATOR,
        [{"HyperswitchSignature": []}, *API_KEY_SECURITY],
    ),
}


def _add(operation: dict[str, Any], extra: Mapping[int | str, dict[str, Any]]) -> None:
    responses = operation.setdefault("responses", {})
    for status, answer in extra.items():
        responses.setdefault(str(status), answer)


def secure(operation: dict[str, Any], role: Role, security: list[dict[str, list[str]]]) -> None:
    """Declare that ``operation`` needs a key of ``role`` (401, 403, 503 follow)."""
    operation["security"] = security
    note = f"Needs a key of role `{role.name.lower()}` or higher."
    description = operation.get("description")
    operation["description"] = f"{description}\n\n{note}" if description else note
    standard = {s: t for s, t in _STANDARD.items() if s != 403 or role > Role.VIEWER}
    _add(operation, error_responses(standard))


def complete(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    """Complete FastAPI's ``schema`` (in place) for the app's ``routes``."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: dict[str, type[BaseModel]] = {
        "Error": ErrorBody,
        "DecisionEngineError": DecisionEngineError,
        "DecisionEngineConfigError": DecisionEngineConfigError,
        "IngestReport": IngestReport,
    }
    for name, model in models.items():
        body = model.model_json_schema(ref_template=_COMPONENTS + "{model}")
        schemas.update(body.pop("$defs", {}))
        schemas[name] = body
    components.setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)

    roles = _roles()
    paths = schema.get("paths", {})
    # FastAPI keeps included routers nested; this walks the routes as they are served.
    for context in iter_route_contexts(list(routes)):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        path = context.path_format or route.path_format
        role = _role_of(route, roles)
        security = API_KEY_SECURITY
        if role is None and path in _HANDLER_AUTH:
            role, security = _HANDLER_AUTH[path]
        for method in context.methods or route.methods or ():
            operation = paths.get(path, {}).get(method.lower())
            if operation is None:
                continue
            if role is None:
                operation["security"] = []  # open: liveness, readiness, metrics
            else:
                secure(operation, role, security)
            if "requestBody" in operation:
                _add(operation, error_responses({400: _UNPARSABLE}))
            if method in _BODY_METHODS:  # refused before the endpoint, body or not
                _add(operation, error_responses({415: COMPRESSED_BODY}))

    # FastAPI's 422 body is not ours: every error uses the standard body.
    for item in paths.values():
        for operation in item.values():
            answer = operation.get("responses", {}).get("422")
            if answer is not None and "HTTPValidationError" in str(answer):
                answer["content"] = {"application/json": {"schema": ERROR_REF}}
                answer["description"] = "a field is wrong (`validation_error`); `errors` names it"
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
