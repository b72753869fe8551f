"""The OpenAPI document declares what the service does: security, error statuses, ``Allow``.

Fast, deterministic checks; ``test_openapi_fuzz.py`` holds the whole document to the running
service with schemathesis.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.conftest import Api

OPEN = {("/health", "get"), ("/ready", "get"), ("/metrics", "get")}
KEY_SCHEMES = {"ApiKeyBearer", "ApiKeyHeader", "ApiKeyHeaderHyperswitch"}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_every_operation_says_whether_it_needs_a_key(api: Api, document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        names = {name for requirement in operation["security"] for name in requirement}
        if (path, method) in OPEN:
            assert names == set(), path
            continue
        assert names >= KEY_SCHEMES, (method, path)
        assert {"401", "503"} <= set(operation["responses"]), (method, path)
        # What the document claims, the service does: no key, 401.
        if "{" not in path:
            assert api.client.request(method, path).status_code == 401, (method, path)
    webhook = document["paths"]["/v1/webhooks/hyperswitch"]["post"]
    assert {"HyperswitchSignature": []} in webhook["security"]


def test_the_documented_role_is_the_one_enforced(api: Api, document: dict[str, Any]) -> None:
    viewer = api.as_("viewer")
    checked = 0
    for path, method, operation in _operations(document):
        if (path, method) in OPEN:
            continue
        url = path.replace("{", "").replace("}", "")  # any value: the role is checked first
        status = api.client.request(method, url, headers=viewer, json={}).status_code
        if "role `viewer`" in operation["description"]:
            assert status != 403, (method, path)
        else:
            assert (
                "role `operator`" in operation["description"]
                or "role `admin`" in (operation["description"])
            ), (method, path)
            assert status == 403, (method, path)
            assert "403" in operation["responses"], (method, path)
            checked += 1
    assert checked >= 15


def test_document_declares_security_schemes_and_the_error_body(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyBearer"] == {
        **schemes["ApiKeyBearer"],
        "type": "http",
        "scheme": "bearer",
    }
    assert (schemes["ApiKeyHeader"]["in"], schemes["ApiKeyHeader"]["name"]) == (
        "header",
        "X-API-Key",
    )
    assert schemes["ApiKeyHeaderHyperswitch"]["name"] == "api-key"
    assert schemes["HyperswitchSignature"]["name"] == "X-Webhook-Signature-512"
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Error"]["required"]) == {"code", "message"}
    for path, method, operation in _operations(document):
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")) and (path, status) != ("/ready", "503"):
                text = str(answer["content"]["application/json"]["schema"])
                assert "#/components/schemas/Error" in text, (method, path, status)


# Paths served by several routes, a literal path beside a templated one, the plain-ASGI
# /v1/route: Starlette alone would name the methods of the first route matched.
ALLOW = [
    ("PUT", "/v1/keys", "GET, POST"),
    ("PATCH", "/v1/events", "GET, POST"),
    ("DELETE", "/v1/experiments", "GET, POST"),
    ("PUT", "/merchant-account/m_alpha", "DELETE, GET"),
    ("GET", "/merchant-account/create", "POST"),
    ("OPTIONS", "/merchant-account/create", "POST"),
    ("PUT", "/v1/keys/key_0123456789ab", "DELETE"),
    ("GET", "/v1/route", "POST"),
    ("POST", "/health", "GET"),
]


def test_405_allow_lists_every_method_of_the_path(api: Api, document: dict[str, Any]) -> None:
    for method, path, allow in ALLOW:
        response = api.client.request(method, path, headers=api.as_("admin"))
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allow, (method, path)
        assert response.json()["code"] == "method_not_allowed"
        documented = {m.upper() for m in document["paths"].get(path, {})}
        assert not documented or documented == set(allow.split(", ")), path
