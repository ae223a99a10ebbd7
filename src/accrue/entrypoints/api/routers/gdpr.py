"""GDPR: a member's data in one document (admin or the member), and erasure (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import ConfigDict, Field

from accrue.bootstrap import Application
from accrue.domain.errors import NotFound
from accrue.domain.gdpr import EraseMember
from accrue.entrypoints.api.routing import application, router
from accrue.entrypoints.api.schemas import ID_PATTERN, Envelope, ResponseModel, ok
from accrue.entrypoints.api.security import Admin, AdminOrMember
from accrue.service_layer.gdpr import ErasureReport, export_member

api = router(tags=["gdpr"])
App = Annotated[Application, Depends(application)]
UserIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN, alias="userId")]
Records = list[dict[str, Any]]


class MemberExport(ResponseModel):
    """Every section is present (empty when the member has nothing there); features may add more."""

    model_config = ConfigDict(extra="allow")

    format: str = Field(description="accrue.member-export/1")
    user_id: str
    exported_at: str
    profile: dict[str, Any]
    preferences: Records
    ledger: Records = Field(description="Every posting, newest first")
    orders: Records
    referrals: Records = Field(description="As referrer and as referred member")
    notifications: Records
    payments: Records


class ErasureOut(ResponseModel):
    user_id: str
    erased: bool = True
    already_erased: bool
    records: dict[str, int] = Field(description="Records changed, by table or eraser")
    blobs_deleted: int = Field(description="Archived payloads that mentioned the member")
    retained: list[str] = Field(
        description="table.column where a personal value is still stored (empty unless something is wrong)"
    )
    storage_purged: bool = Field(
        description="false when open readers delayed dropping the old copies from disk to the next checkpoint"
    )


@api.get("/users/{userId}/export", response_model=Envelope[MemberExport])
def export(user_id: UserIdPath, app: App, principal: AdminOrMember) -> dict[str, object]:
    """Everything stored about the member: profile, preferences, ledger, orders, referrals,
    notifications, payments (and any section another feature registers)."""
    if not principal.can_see(user_id):
        raise NotFound(f"user {user_id} not found")
    document = app.bus.query(lambda uow: export_member(uow, user_id, app.clock()))
    return ok(document)


@api.delete("/users/{userId}", response_model=Envelope[ErasureOut])
def erase(user_id: UserIdPath, app: App, principal: Admin) -> dict[str, object]:
    """Erase the member's personal data (email, name, phone, texts and payloads that name them).
    The id, balance and ledger stay, anonymous and balanced. Erasing twice changes nothing."""
    report: ErasureReport = app.bus.handle(EraseMember(user_id=user_id, requested_by=principal.sub))
    return ok(
        ErasureOut(
            user_id=report.user_id,
            already_erased=report.already_erased,
            records=report.records,
            blobs_deleted=report.blobs_deleted,
            retained=report.retained,
            storage_purged=report.storage_purged,
        )
    )
