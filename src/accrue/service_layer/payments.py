"""Payment commands and queries: create one payment (API), read payments, batches and audit entries.

A new payment, its queue message and its audit entry are written in one transaction, so a payment
is never stored without the message that will drive it through the workflow, nor the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from accrue.domain.audit import SYSTEM_ACTOR, AuditEntry, AuditRecord, ChainReport, verify
from accrue.domain.commands import Command
from accrue.domain.errors import Conflict, InvalidInput, NotFound, RuleViolation
from accrue.domain.money import require_positive
from accrue.domain.payment_workflow import PAYMENT_WORKFLOW
from accrue.domain.payments import (
    API_FIELDS,
    BatchRowIssue,
    CreatePayment,
    FieldNames,
    NewPayment,
    Payment,
    PaymentBatch,
    PaymentStatus,
    rows_digest,
    validate_new_payment,
)
from accrue.ports import Page, PaymentGateway, Queue, UnitOfWork

if TYPE_CHECKING:  # these modules import this one
    from accrue.service_layer.batches import BatchWorker, PaymentBatches
    from accrue.service_layer.payment_workflow_runner import PaymentWorkflowRunner
    from accrue.service_layer.queue_worker import QueueWorker

Clock = Callable[[], datetime]

# The queue that drives payments through the workflow. A message body is {"paymentIds": [...]}:
# one id for a payment made through the API, up to MESSAGE_PAYMENTS for the rows of a batch file
# (one message per row would triple the rows a file writes). A message only says "move these
# payments on"; where each one is lives in its row.
PAYMENTS_QUEUE = "payments"
MESSAGE_PAYMENTS = 100


def queue_body(payment_ids: Sequence[str]) -> dict[str, list[str]]:
    return {"paymentIds": list(payment_ids)}


def payment_ids_of(body: Mapping[str, Any]) -> list[str]:
    """The payment ids a message names (``paymentIds``; a lone ``paymentId`` is accepted too)."""
    ids = body.get("paymentIds")
    if ids is None and isinstance(body.get("paymentId"), str):
        ids = [body["paymentId"]]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError("a payments message needs paymentIds: a non-empty list of ids")
    return ids


def audit(
    uow: UnitOfWork,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    now: datetime,
    details: Mapping[str, Any] | None = None,
) -> None:
    uow.audit.append([AuditRecord(actor or SYSTEM_ACTOR, action, subject_type, subject_id, now, details or {})])


def new_payment(
    new: NewPayment, now: datetime, *, batch_id: str | None = None, batch_line: int | None = None
) -> Payment:
    return Payment(
        payment_id=new.payment_id,
        amount_minor=new.amount_minor,
        currency=new.currency,
        user_id=new.user_id,
        status=PaymentStatus.PENDING,
        created_at=now,
        updated_at=now,
        batch_id=batch_id,
        batch_line=batch_line,
        workflow_step=PAYMENT_WORKFLOW.start,
    )


def require_members(uow: UnitOfWork, user_ids: set[str], fields: FieldNames) -> set[str]:
    """The ids among ``user_ids`` that name no (or an erased) member."""
    if not user_ids:
        return set()
    known = {m.user_id for m in uow.members.get_many(sorted(user_ids)) if not m.erased}
    return user_ids - known


@dataclass(frozen=True, slots=True)
class PaymentAccepted:
    payment_id: str
    status: str
    created: bool


def create_payment(cmd: CreatePayment, uow: UnitOfWork, clock: Clock) -> PaymentAccepted:
    require_positive(cmd.amount, API_FIELDS.amount)
    try:
        new = validate_new_payment(cmd.payment_id, cmd.amount, cmd.currency, cmd.user_id, API_FIELDS)
    except InvalidInput as exc:
        if exc.field != API_FIELDS.amount:
            raise
        # A positive amount is well formed; it is the pair (amount, currency) that a rule refuses
        # (more decimals than the currency has), as for orders.
        raise RuleViolation(exc.message, details=exc.details) from None
    existing = uow.payments.get(new.payment_id)
    if existing is not None:
        if existing.same_request(new.amount_minor, new.currency, new.user_id):
            # The same request again (a client retry): the same answer, nothing written.
            return PaymentAccepted(existing.payment_id, str(PaymentStatus.PENDING), created=False)
        raise Conflict(
            f"payment {new.payment_id} already exists with another amount, currency or userId",
            details={"field": "paymentId"},
        )
    if new.user_id is not None and require_members(uow, {new.user_id}, API_FIELDS):
        raise NotFound(f"user {new.user_id} not found", details={"field": "userId"})
    now = clock()
    payment = new_payment(new, now)
    uow.payments.add(payment)
    uow.queues.send_batch(PAYMENTS_QUEUE, [queue_body([payment.payment_id])])
    audit(
        uow,
        cmd.actor,
        "payment.created",
        "payment",
        payment.payment_id,
        now,
        {
            "source": "api",
            "amount": payment.amount_text,
            "currency": payment.currency,
            "userId": payment.user_id,
        },
    )
    uow.commit()
    return PaymentAccepted(payment.payment_id, str(payment.status), created=True)


COMMAND_HANDLERS: dict[type[Command], Any] = {CreatePayment: create_payment}


# -- queries (run with bus.query: a read-only unit of work) ---------------------------------------


def get_payment(uow: UnitOfWork, payment_id: str) -> Payment:
    payment = uow.payments.get(payment_id)
    if payment is None:
        raise NotFound(f"payment {payment_id} not found", details={"field": "paymentId"})
    return payment


def list_payments(
    uow: UnitOfWork,
    status: PaymentStatus | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[Payment]:
    if created_from is not None and created_to is not None and created_from >= created_to:
        return Page([], None)  # an empty window holds nothing (it is not a malformed request)
    return uow.payments.list(status, created_from, created_to, limit, cursor)


def payment_audit(uow: UnitOfWork, payment_id: str, limit: int, cursor: str | None) -> Page[AuditEntry]:
    """The payment's entries, oldest first; a payment from a file starts with the entry of the
    file chunk that created it (one entry vouches for all the rows of a chunk)."""
    payment = get_payment(uow, payment_id)
    page = uow.audit.for_subject("payment", payment_id, limit, cursor)
    if cursor is None and payment.batch_id is not None and payment.batch_line is not None:
        created = batch_entry_covering(uow, payment.batch_id, payment.batch_line)
        if created is not None:
            return Page([created, *page.items], page.next_cursor)
    return page


BATCH_ROWS_ACTION = "batch.rows_accepted"


def batch_entry_covering(uow: UnitOfWork, batch_id: str, line: int) -> AuditEntry | None:
    cursor: str | None = None
    while True:
        page = uow.audit.for_subject("batch", batch_id, 500, cursor)
        for entry in page.items:
            if entry.action == BATCH_ROWS_ACTION:
                details = entry.details_dict()
                if details["firstLine"] <= line <= details["lastLine"]:
                    return entry
        if page.next_cursor is None:
            return None
        cursor = page.next_cursor


@dataclass(frozen=True, slots=True)
class AuditVerification:
    chain: ChainReport
    # Chunks of batch files whose payments no longer match the digest their audit entry vouches for.
    changed_rows: list[str]

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.changed_rows


def verify_audit_log(uow: UnitOfWork) -> AuditVerification:
    """Walk the hash chain, then check that the payments each batch chunk created still hash to the
    digest in its entry (a payment row edited after ingestion shows up here)."""
    chunks: list[tuple[int, str, dict[str, Any]]] = []

    def entries() -> Iterator[AuditEntry]:
        for entry in uow.audit.iter_all():
            if entry.action == BATCH_ROWS_ACTION:
                chunks.append((entry.seq, entry.subject_id, entry.details_dict()))
            yield entry

    chain = verify(entries())
    changed: list[str] = []
    for seq, batch_id, details in chunks:
        if chain.broken is not None and seq >= chain.broken.seq:
            break
        rows = uow.payments.batch_rows(batch_id, int(details["firstLine"]), int(details["lastLine"]))
        if rows_digest(rows) != details.get("rowsSha256"):
            changed.append(
                f"entry {seq}: the payments batch {batch_id[:12]}... created from lines "
                f"{details['firstLine']}-{details['lastLine']} no longer match the digest it recorded"
            )
    return AuditVerification(chain, changed)


@dataclass(frozen=True, slots=True)
class BatchView:
    batch: PaymentBatch
    issues: Page[BatchRowIssue]


def get_batch(uow: UnitOfWork, batch_id: str, kind: str | None, limit: int, cursor: str | None) -> BatchView:
    batch = uow.payment_batches.get(batch_id)
    if batch is None:
        raise NotFound(f"batch {batch_id} not found", details={"field": "batchId"})
    return BatchView(batch, uow.payment_batches.issues(batch_id, kind, limit, cursor))


@dataclass(frozen=True, slots=True)
class PaymentComponents:
    """What the entrypoints need from the payments wiring (built once, in ``bootstrap``)."""

    queue: Queue
    gateway: PaymentGateway
    runner: PaymentWorkflowRunner
    worker: QueueWorker
    batches: PaymentBatches
    batch_worker: BatchWorker
