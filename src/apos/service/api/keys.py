"""API key management (admin only). The secret is shown once, at creation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, Field

from apos.adapters.ports import ApiKeyRecord, AuditEntry
from apos.core.events import Identifier, refuse_card_number, refuse_unstorable
from apos.core.iso import redact_card_numbers
from apos.service.api.deps import Admin, ServicesDep
from apos.service.auth import Role, issue_key
from apos.service.errors import ApiError
from apos.service.openapi import error_responses

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyCreate(BaseModel):
    """A key to create."""

    # Names and scopes are listed and audited in the clear: no card numbers in them.
    name: Annotated[
        str,
        Field(min_length=1, max_length=128),
        AfterValidator(refuse_card_number),
        AfterValidator(refuse_unstorable),
    ]
    role: str = Field(pattern="^(viewer|operator|admin)$")
    # A merchant id as /v1/events accepts it: a key scoped to any other could never write.
    merchant_id: Identifier | None = None


def key_json(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "merchant_id": record.merchant_id,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "last_used_at": record.last_used_at.isoformat() if record.last_used_at else None,
    }


@router.post(
    "",
    status_code=201,
    summary="Create a key; the secret is returned only here",
    responses=error_responses(
        {403: "role too low, or a scoped admin creating a key for another merchant"}
    ),
)
async def create_key(body: KeyCreate, services: ServicesDep, principal: Admin) -> dict[str, Any]:
    if principal.merchant_id is not None and body.merchant_id != principal.merchant_id:
        raise ApiError(
            403,
            "forbidden_merchant",
            "a merchant-scoped admin may only create keys for its own merchant",
        )
    issued = issue_key(body.name, Role.parse(body.role), body.merchant_id, datetime.now(UTC))

    def save() -> None:
        services.store.create_api_key(issued.record)
        services.store.append_audit(
            [
                AuditEntry(
                    actor=principal.actor,
                    action="api_key.create",
                    target=issued.record.id,
                    details={"role": body.role, "name": body.name},
                    merchant_id=body.merchant_id,
                )
            ]
        )

    await run_in_threadpool(save)
    return {**key_json(issued.record), "key": issued.token}


@router.get("", summary="List keys (never their secrets)")
async def list_keys(services: ServicesDep, principal: Admin) -> dict[str, Any]:
    records = await run_in_threadpool(services.store.list_api_keys)
    visible = [
        r
        for r in records
        if principal.merchant_id is None or r.merchant_id == principal.merchant_id
    ]
    return {"items": [key_json(r) for r in visible]}


@router.delete(
    "/{key_id}",
    summary="Revoke a key (takes effect within 5 s everywhere)",
    responses=error_responses({404: "no such key (or another merchant's, for a scoped key)"}),
)
async def revoke_key(key_id: str, services: ServicesDep, principal: Admin) -> dict[str, Any]:
    record = await run_in_threadpool(services.store.get_api_key, key_id)
    if record is None or (
        principal.merchant_id is not None and record.merchant_id != principal.merchant_id
    ):
        raise ApiError(404, "not_found", f"no key {redact_card_numbers(key_id)!r}")

    def revoke() -> bool:
        done = services.store.revoke_api_key(key_id, datetime.now(UTC))
        if done:
            services.store.append_audit(
                [
                    AuditEntry(
                        actor=principal.actor,
                        action="api_key.revoke",
                        target=key_id,
                        merchant_id=record.merchant_id,
                    )
                ]
            )
        return done

    revoked = await run_in_threadpool(revoke)
    services.keys.forget()
    return {"id": key_id, "revoked": True, "changed": revoked}
