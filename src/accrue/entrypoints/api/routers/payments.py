"""Payments (seed 004): create and read payments, upload batch files, read the audit trail."""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from accrue.bootstrap import Application
from accrue.domain.audit import AuditEntry
from accrue.domain.errors import InvalidInput, NotFound
from accrue.domain.payments import HEADERS, CreatePayment, Payment, PaymentBatch, PaymentStatus
from accrue.entrypoints.api.errors import ApiError
from accrue.entrypoints.api.routing import application, router
from accrue.entrypoints.api.schemas import (
    ApiModel,
    ClientId,
    CurrencyCode,
    DateTimeText,
    Envelope,
    PositiveAmount,
    ResponseModel,
    ok,
)
from accrue.entrypoints.api.security import Reader, Role, Writer
from accrue.service_layer import payments as service
from accrue.service_layer.payments import PaymentComponents

api = router()
App = Annotated[Application, Depends(application)]
BATCH_UPLOAD_PATH = "/payments/batches"
PAYMENT_ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
PaymentIdPath = Annotated[str, Path(alias="paymentId", min_length=1, max_length=128, pattern=PAYMENT_ID_PATTERN)]
BatchIdPath = Annotated[str, Path(alias="batchId", pattern=r"^[0-9a-f]{64}$", description="The file's SHA-256")]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
StatusName = Literal["pending", "processing", "processed", "failed"]
# What the upload accepts, for the OpenAPI document: a header line, then any lines (each row is
# checked on its own and a bad one is reported, not refused).
CSV_BODY_PATTERN = "^\ufeff?payment_id,amount,currency(,user_id)?\r?(\n[^\n]*)*$"


def components(app: Application) -> PaymentComponents:
    found: PaymentComponents = app.services["payments"]
    return found


# -- models ---------------------------------------------------------------------------------------


class CreatePaymentRequest(ApiModel):
    payment_id: str = Field(min_length=1, max_length=128, pattern=PAYMENT_ID_PATTERN, examples=["pay_123456"])
    amount: PositiveAmount
    currency: CurrencyCode = "USD"
    user_id: ClientId | None = Field(default=None, description="The member who earns purchase points")


class PaymentAcceptedOut(ResponseModel):
    payment_id: str
    status: StatusName


class PaymentOut(ResponseModel):
    payment_id: str
    amount: str = Field(description="Decimal string with the currency's number of decimals")
    currency: str
    status: StatusName
    user_id: str | None = None
    attempts: int = Field(description="Attempts at the gateway, retries included")
    failure_reason: str | None = None
    points_earned: int
    batch_id: str | None = None
    batch_line: int | None = None
    created_at: datetime
    updated_at: datetime


class PaymentPage(ResponseModel):
    payments: list[PaymentOut]
    next_cursor: str | None = None


class AuditEntryOut(ResponseModel):
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(ResponseModel):
    entries: list[AuditEntryOut]
    next_cursor: str | None = None


class BatchAcceptedOut(ResponseModel):
    batch_id: str
    status: Literal["processing", "completed", "failed"]
    created: bool = Field(description="False when this file was uploaded before (nothing new was created)")


class BatchIssueOut(ResponseModel):
    line: int
    kind: Literal["invalid", "duplicate"]
    reason: str


class BatchOut(ResponseModel):
    batch_id: str
    status: Literal["processing", "completed", "failed"]
    source: str
    file_name: str | None = None
    size_bytes: int
    total_rows: int
    accepted_rows: int
    rejected_rows: int
    duplicate_rows: int
    error: str | None = None
    errors: list[BatchIssueOut] = Field(description="Rejected and duplicate rows, in line order (paginated)")
    next_cursor: str | None = None
    created_at: datetime
    completed_at: datetime | None = None


def _payment(p: Payment) -> PaymentOut:
    return PaymentOut(
        payment_id=p.payment_id,
        amount=p.amount_text,
        currency=p.currency,
        status=p.status.value,
        user_id=p.user_id,
        attempts=p.attempts,
        failure_reason=p.failure_reason,
        points_earned=p.points_earned,
        batch_id=p.batch_id,
        batch_line=p.batch_line,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def _entry(e: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        seq=e.seq,
        occurred_at=datetime.fromisoformat(e.occurred_at.replace("Z", "+00:00")),
        actor=e.actor,
        action=e.action,
        subject_type=e.subject_type,
        subject_id=e.subject_id,
        details=e.details_dict(),
        prev_hash=e.prev_hash,
        hash=e.hash,
    )


# -- payments -------------------------------------------------------------------------------------


@api.post("/payments", status_code=201, response_model=Envelope[PaymentAcceptedOut], tags=["payments"])
def create_payment(body: CreatePaymentRequest, app: App, principal: Writer) -> dict[str, object]:
    """A payment, processed in the background. The same paymentId with the same body answers the
    same again (nothing new is created); with another body, 409."""
    accepted = app.bus.handle(
        CreatePayment(
            payment_id=body.payment_id,
            amount=body.amount,
            currency=body.currency,
            user_id=body.user_id,
            actor=principal.sub,
        )
    )
    return ok(PaymentAcceptedOut(payment_id=accepted.payment_id, status=accepted.status))


@api.get("/payments", response_model=Envelope[PaymentPage], tags=["payments"])
def list_payments(
    app: App,
    principal: Writer,
    status: Annotated[StatusName | None, Query()] = None,
    created_from: Annotated[DateTimeText | None, Query(alias="from", description="Created at or after")] = None,
    created_to: Annotated[DateTimeText | None, Query(alias="to", description="Created before")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> dict[str, object]:
    page = app.bus.query(
        service.list_payments,
        PaymentStatus(status) if status else None,
        _aware(created_from, "from"),
        _aware(created_to, "to"),
        limit,
        cursor,
    )
    return ok(PaymentPage(payments=[_payment(p) for p in page.items], next_cursor=page.next_cursor))


def _aware(moment: datetime | None, field: str) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise InvalidInput(field, "must carry a time zone (e.g. 2026-03-01T00:00:00Z)")
    return moment


@api.get("/payments/{paymentId}", response_model=Envelope[PaymentOut], tags=["payments"])
def get_payment(payment_id: PaymentIdPath, app: App, principal: Reader) -> dict[str, object]:
    payment: Payment = app.bus.query(service.get_payment, payment_id)
    if principal.role is Role.MEMBER and payment.user_id != principal.sub:
        raise NotFound(f"payment {payment_id} not found", details={"field": "paymentId"})
    return ok(_payment(payment))


@api.get("/payments/{paymentId}/audit", response_model=Envelope[AuditPage], tags=["payments"])
def get_payment_audit(
    payment_id: PaymentIdPath, app: App, principal: Writer, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, object]:
    """The audit entries of one payment, oldest first (each with its link in the hash chain)."""
    page = app.bus.query(service.payment_audit, payment_id, limit, cursor)
    return ok(AuditPage(entries=[_entry(e) for e in page.items], next_cursor=page.next_cursor))


# -- batch files ----------------------------------------------------------------------------------


async def upload_batch(request: Request, response: Response, app: App, principal: Writer) -> dict[str, object]:
    """A CSV file (``payment_id,amount,currency`` and optionally ``,user_id``) as the request body.

    The body is streamed to disk while its SHA-256 is computed - it is never held in memory - and
    the batch id is that hash: uploading the same file again answers 200 with the existing batch and
    creates nothing. A new file answers 202 and is ingested in the background; poll
    ``GET /payments/batches/{batchId}``. A bad row never sinks the file: it is reported by line.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/csv":
        raise ApiError(415, "Content-Type must be text/csv", details={"field": "Content-Type", "rule": "text/csv"})
    parts = components(app)
    settings = app.settings
    limit = settings.payment_batch_max_bytes
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    fd, spooled = tempfile.mkstemp(dir=settings.spool_dir, prefix="upload-", suffix=".csv")
    path = FilePath(spooled)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"body larger than {limit} bytes", details={"limitBytes": limit})
                digest.update(chunk)
                fh.write(chunk)
        if size == 0:
            raise InvalidInput("body", f"is required: a CSV file whose first line is {HEADERS[0]}")
        registered = await run_in_threadpool(
            parts.batches.register_file,
            path,
            source="api",
            actor=principal.sub,
            sha256=digest.hexdigest(),
            size_bytes=size,
        )
    finally:
        path.unlink(missing_ok=True)
    batch = registered.batch
    if batch.status.value == "processing":
        parts.batch_worker.submit(batch.batch_id)
    if not registered.created:
        response.status_code = 200
    return ok(BatchAcceptedOut(batch_id=batch.batch_id, status=batch.status.value, created=registered.created))


api.add_api_route(
    BATCH_UPLOAD_PATH,
    upload_batch,
    methods=["POST"],
    status_code=202,
    response_model=Envelope[BatchAcceptedOut],
    tags=["payments"],
    summary="Upload a batch file",
    # The file itself is the idempotency key (its SHA-256); the Idempotency-Key wrapper would read
    # the whole body into memory, so this route streams it instead.
    route_class_override=APIRoute,
    responses={
        200: {"model": Envelope[BatchAcceptedOut], "description": "This file was uploaded before: its batch"},
        415: {"description": "The body is not text/csv"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string", "pattern": CSV_BODY_PATTERN, "minLength": len(HEADERS[0])},
                    "example": "payment_id,amount,currency\npay_001,100.00,USD\npay_002,50.00,EUR\n",
                }
            },
        }
    },
)


@api.get("/payments/batches/{batchId}", response_model=Envelope[BatchOut], tags=["payments"])
def get_batch(
    batch_id: BatchIdPath,
    app: App,
    principal: Writer,
    kind: Annotated[Literal["invalid", "duplicate"] | None, Query(description="Only this kind of row")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, object]:
    view: service.BatchView = app.bus.query(service.get_batch, batch_id, kind, limit, cursor)
    return ok(_batch(view.batch, view))


def _batch(b: PaymentBatch, view: service.BatchView) -> BatchOut:
    return BatchOut(
        batch_id=b.batch_id,
        status=b.status.value,
        source=b.source,
        file_name=b.file_name,
        size_bytes=b.size_bytes,
        total_rows=b.total_rows,
        accepted_rows=b.accepted_rows,
        rejected_rows=b.rejected_rows,
        duplicate_rows=b.duplicate_rows,
        error=b.error,
        errors=[BatchIssueOut(line=i.line, kind=i.kind, reason=i.reason) for i in view.issues.items],
        next_cursor=view.issues.next_cursor,
        created_at=b.created_at,
        completed_at=b.completed_at,
    )
