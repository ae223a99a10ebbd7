"""Payments (seed 004): the aggregate, its states, its events and the validation of one CSV row.

A payment moves ``pending -> processing -> processed | failed`` and never back. Amounts are
integers in the currency's minor units; the decimal text is only ever an input.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from accrue.domain.commands import Command
from accrue.domain.currencies import MINOR_UNITS
from accrue.domain.errors import Conflict, InvalidInput
from accrue.domain.events import Event
from accrue.domain.money import format_minor_units
from accrue.domain.payment_workflow import DECLINED, TRANSIENT_ERROR, VALIDATION_FAILED

PAYMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")
# Minor units must fit a signed 64-bit integer (SQLite, DynamoDB numbers are wider): 18 digits.
MAX_AMOUNT_MINOR = 10**18 - 1
DEFAULT_CURRENCY = "USD"


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (PaymentStatus.PROCESSED, PaymentStatus.FAILED)


_ALLOWED = {
    PaymentStatus.PENDING: {PaymentStatus.PROCESSING, PaymentStatus.FAILED},
    PaymentStatus.PROCESSING: {PaymentStatus.PROCESSED, PaymentStatus.FAILED},
    PaymentStatus.PROCESSED: set(),
    PaymentStatus.FAILED: set(),
}


# -- workflow errors (their names are the Step Functions ErrorEquals names) -------------------------


class PaymentWorkflowError(Exception):
    """An error a workflow task raises on purpose; matched by name against Retry and Catch."""

    error_name = "States.TaskFailed"

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        # A short, stable code shown as the payment's failureReason (e.g. ``card_declined``).
        self.reason = reason


class PaymentValidationFailed(PaymentWorkflowError):
    error_name = VALIDATION_FAILED


class TransientPaymentError(PaymentWorkflowError):
    error_name = TRANSIENT_ERROR


class PaymentDeclined(PaymentWorkflowError):
    error_name = DECLINED


# -- the aggregate --------------------------------------------------------------------------------


@dataclass(slots=True)
class Payment:
    payment_id: str
    amount_minor: int
    currency: str
    status: PaymentStatus
    created_at: datetime
    updated_at: datetime
    user_id: str | None = None
    # Attempts at the gateway (the ProcessPayment step), retries included.
    attempts: int = 0
    failure_reason: str | None = None
    last_error: str | None = None
    gateway_reference: str | None = None
    points_earned: int = 0
    batch_id: str | None = None
    batch_line: int | None = None
    # The workflow cursor: the next step to run (None once the workflow ended), how many times the
    # current step was tried, when it may run again, and until when a worker holds it.
    workflow_step: str | None = None
    step_attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    # Optimistic concurrency guard: every save checks and bumps it.
    version: int = 0

    @property
    def amount(self) -> Decimal:
        return Decimal(format_minor_units(self.amount_minor, self.currency))

    @property
    def amount_text(self) -> str:
        return format_minor_units(self.amount_minor, self.currency)

    def same_request(self, amount_minor: int, currency: str, user_id: str | None) -> bool:
        """Whether a create request describes this very payment (then it is a harmless retry)."""
        return (self.amount_minor, self.currency, self.user_id) == (amount_minor, currency, user_id)

    def move_to(self, status: PaymentStatus, now: datetime) -> None:
        if status == self.status:
            return
        if status not in _ALLOWED[self.status]:
            raise Conflict(
                f"payment {self.payment_id} cannot go from {self.status} to {status}",
                details={"field": "status", "from": str(self.status), "to": str(status)},
            )
        self.status = status
        self.updated_at = now


@dataclass(frozen=True, kw_only=True)
class CreatePayment(Command):
    payment_id: str
    amount: Decimal
    currency: str = DEFAULT_CURRENCY
    user_id: str | None = None
    actor: str = "system"


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A validated request to create a payment (from the API or a CSV row)."""

    payment_id: str
    amount_minor: int
    currency: str
    user_id: str | None = None


# -- events (handled after commit: outbound webhooks, campaigns, notifications) --------------------


@dataclass(frozen=True, kw_only=True)
class PaymentProcessed(Event):
    payment_id: str
    amount: str
    currency: str
    amount_minor: int
    user_id: str | None = None
    attempts: int = 0
    gateway_reference: str | None = None
    points_earned: int = 0


@dataclass(frozen=True, kw_only=True)
class PaymentFailed(Event):
    payment_id: str
    amount: str
    currency: str
    amount_minor: int
    user_id: str | None = None
    attempts: int = 0
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class PaymentBatchCompleted(Event):
    batch_id: str
    status: str
    total_rows: int
    accepted_rows: int
    rejected_rows: int
    duplicate_rows: int


# -- validation, shared by the API and CSV rows ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldNames:
    payment_id: str
    amount: str
    currency: str
    user_id: str


API_FIELDS = FieldNames("paymentId", "amount", "currency", "userId")
CSV_FIELDS = FieldNames("payment_id", "amount", "currency", "user_id")

# Plain decimals (the overwhelmingly common case) are converted without Decimal arithmetic.
_PLAIN_AMOUNT = re.compile(r"(\d{1,18})(?:\.(\d{0,18}))?")
_POW10 = tuple(int("1" + "0" * e) for e in range(8))


def amount_to_minor(text: str, currency: str, field: str) -> int:
    """Decimal text -> minor units of ``currency``; refuses missing, non-finite, <= 0, over-precise."""
    exponent = MINOR_UNITS[currency]
    match = _PLAIN_AMOUNT.fullmatch(text)
    if match is not None:
        whole, fraction = match.group(1), match.group(2) or ""
        if len(fraction) > exponent:
            if fraction[exponent:].strip("0"):
                raise InvalidInput(field, f"has more than {exponent} decimal places allowed for {currency}")
            fraction = fraction[:exponent]
        minor = int(whole) * _POW10[exponent] + (int(fraction.ljust(exponent, "0")) if exponent else 0)
    else:
        minor = _amount_to_minor_slow(text, currency, exponent, field)
    if minor <= 0:
        raise InvalidInput(field, "must be greater than 0")
    if minor > MAX_AMOUNT_MINOR:
        raise InvalidInput(field, f"must be at most {format_minor_units(MAX_AMOUNT_MINOR, currency)}")
    return minor


def _amount_to_minor_slow(text: str, currency: str, exponent: int, field: str) -> int:
    if not text:
        raise InvalidInput(field, "is required")
    try:
        amount = Decimal(text)
    except (InvalidOperation, ValueError):
        raise InvalidInput(field, "must be a decimal number") from None
    if not amount.is_finite():
        raise InvalidInput(field, "must be a finite decimal number")
    if amount <= 0:
        raise InvalidInput(field, "must be greater than 0")
    if amount.adjusted() >= 18:
        raise InvalidInput(field, f"must be at most {format_minor_units(MAX_AMOUNT_MINOR, currency)}")
    scaled = amount.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(field, f"has more than {exponent} decimal places allowed for {currency}")
    return int(scaled)


def validate_currency(code: str, field: str) -> str:
    if not code:
        return DEFAULT_CURRENCY
    if code in MINOR_UNITS:
        return code
    upper = code.upper()
    if upper not in MINOR_UNITS:
        raise InvalidInput(field, f"'{code}' is not an ISO 4217 currency code")
    return upper


def validate_payment_id(value: str | None, field: str) -> str:
    if not value:
        raise InvalidInput(field, "is required")
    if not PAYMENT_ID_PATTERN.fullmatch(value):
        raise InvalidInput(field, "must be 1 to 128 letters, digits or _ . : -")
    return value


def validate_user_id(value: str | None, field: str) -> str | None:
    if not value:
        return None
    if not USER_ID_PATTERN.fullmatch(value):
        raise InvalidInput(field, "must be 1 to 128 letters, digits or _ . : @ -")
    return value


def validate_new_payment(
    payment_id: str | None,
    amount: object,
    currency: str | None,
    user_id: str | None,
    fields: FieldNames = API_FIELDS,
) -> NewPayment:
    """Every rule a payment must pass to be accepted, field by field, in the order a person reads."""
    pid = validate_payment_id(payment_id.strip() if payment_id else payment_id, fields.payment_id)
    code = validate_currency((currency or "").strip(), fields.currency)
    if amount is None or (isinstance(amount, str) and not amount.strip()):
        raise InvalidInput(fields.amount, "is required")
    if isinstance(amount, bool | float):
        # A binary float has already lost the exact amount; JSON parsers here hand us Decimal or str.
        raise InvalidInput(fields.amount, "must be a decimal number, not a binary float")
    text = str(amount).strip() if not isinstance(amount, Decimal) else _decimal_text(amount, fields.amount)
    minor = amount_to_minor(text, code, fields.amount)
    uid = validate_user_id(user_id.strip() if user_id else user_id, fields.user_id)
    return NewPayment(pid, minor, code, uid)


def _decimal_text(amount: Decimal, field: str) -> str:
    if not amount.is_finite():
        raise InvalidInput(field, "must be a finite decimal number")
    return format(amount, "f")


def check_processable(payment: Payment, max_amount: Decimal | None) -> None:
    """The workflow's validation step: the stored payment must still satisfy every rule.

    Rows can reach the queue from producers other than our API (a file dropped on S3, a replayed
    message), so the rules are checked again here; the amount limit is a processing (risk) policy
    that may change after a payment was accepted, so it lives only here.
    """
    if payment.status.terminal:
        raise PaymentValidationFailed("already_final", f"payment is already {payment.status}")
    if payment.currency not in MINOR_UNITS:
        raise PaymentValidationFailed("unknown_currency", f"'{payment.currency}' is not an ISO 4217 currency code")
    if not 0 < payment.amount_minor <= MAX_AMOUNT_MINOR:
        raise PaymentValidationFailed("invalid_amount", f"amount {payment.amount_minor} is out of range")
    if not PAYMENT_ID_PATTERN.fullmatch(payment.payment_id):
        raise PaymentValidationFailed("invalid_payment_id", "paymentId has characters outside the allowed set")
    if max_amount is not None and payment.amount > max_amount:
        raise PaymentValidationFailed(
            "amount_over_limit",
            f"amount {payment.amount_text} {payment.currency} exceeds the processing limit",
        )


# -- CSV rows (seed 004's file: payment_id,amount,currency) ---------------------------------------

# The header, exactly (after an optional UTF-8 byte order mark): seed 004's three columns, optionally
# followed by the member who earns points for the payment.
HEADERS = ("payment_id,amount,currency", "payment_id,amount,currency,user_id")


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """The file's columns, from its header line."""

    with_user: bool

    @property
    def width(self) -> int:
        return 4 if self.with_user else 3


def parse_header(text: str) -> CsvLayout:
    """The header line must be one of ``HEADERS`` (a BOM and a trailing CR are ignored)."""
    line = text.removeprefix("\ufeff").removesuffix("\n").removesuffix("\r")
    if line not in HEADERS:
        shown = line if len(line) <= 80 else line[:80] + "..."
        raise InvalidInput(
            "header",
            f"the first line must be exactly {HEADERS[0]} (or {HEADERS[1]}), not '{shown}'",
        )
    return CsvLayout(with_user=line == HEADERS[1])


class PaymentRow(NamedTuple):
    line: int
    payment_id: str
    amount_minor: int
    currency: str
    user_id: str | None


class RowError(NamedTuple):
    line: int
    reason: str


def _split(text: str) -> list[str]:
    if '"' not in text:
        return text.split(",")
    # Quoted fields are rare in payment files: let the csv module handle them, one line at a time.
    rows = list(csv.reader([text], strict=True))
    return rows[0] if rows else []


# The common row - an id, a plain decimal, a currency in capitals - is recognised by one regular
# expression; anything else takes the slow path, which also words the error.
_FAST_ROW = re.compile(r"([A-Za-z0-9_.:\-]{1,128}),(\d{1,18})(?:\.(\d{1,18}))?,([A-Z]{3})")
_FAST_ROW_WITH_USER = re.compile(
    r"([A-Za-z0-9_.:\-]{1,128}),(\d{1,18})(?:\.(\d{1,18}))?,([A-Z]{3}),([A-Za-z0-9_.:@\-]{0,128})"
)


def parse_row(layout: CsvLayout, text: str, line: int) -> PaymentRow | RowError:
    """Validate one data line on its own; a bad line becomes a RowError naming the field and rule."""
    match = (_FAST_ROW_WITH_USER if layout.with_user else _FAST_ROW).fullmatch(text)
    if match is not None:
        groups = match.groups()
        exponent = MINOR_UNITS.get(groups[3])
        fraction = groups[2]
        if exponent is not None and (fraction is None or len(fraction) <= exponent):
            minor = int(groups[1]) * _POW10[exponent]
            if fraction:
                minor += int(fraction) * _POW10[exponent - len(fraction)]
            if 0 < minor <= MAX_AMOUNT_MINOR:
                return PaymentRow(line, groups[0], minor, groups[3], (groups[4] or None) if layout.with_user else None)
    return _parse_row_slowly(layout, text, line)


def _parse_row_slowly(layout: CsvLayout, text: str, line: int) -> PaymentRow | RowError:
    try:
        values = _split(text)
    except csv.Error as exc:
        return RowError(line, f"row is not valid CSV ({exc})")
    if len(values) != layout.width:
        return RowError(line, f"expected {layout.width} columns, got {len(values)}")
    try:
        payment_id = validate_payment_id(values[0].strip(), "payment_id")
        currency = validate_currency(values[2].strip(), "currency")
        minor = amount_to_minor(values[1].strip(), currency, "amount")
        user_id = validate_user_id(values[3].strip(), "user_id") if layout.with_user else None
    except InvalidInput as exc:
        return RowError(line, str(exc))
    return PaymentRow(line, payment_id, minor, currency, user_id)


def rows_digest(rows: Iterable[PaymentRow]) -> str:
    """SHA-256 over the accepted rows of a chunk, in line order: what its audit entry vouches for."""
    text = "".join([f"{r.line},{r.payment_id},{r.amount_minor},{r.currency},{r.user_id or ''}\n" for r in rows])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- batches --------------------------------------------------------------------------------------


class BatchStatus(enum.StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(slots=True)
class PaymentBatch:
    """One uploaded file, identified by its SHA-256, and how far its ingestion has come."""

    batch_id: str
    status: BatchStatus
    source: str
    file_name: str | None
    blob_key: str
    size_bytes: int
    actor: str
    created_at: datetime
    updated_at: datetime
    # Resume point: the next byte to read and the last line already done.
    byte_offset: int = 0
    line_number: int = 0
    total_rows: int = 0
    accepted_rows: int = 0
    rejected_rows: int = 0
    duplicate_rows: int = 0
    error: str | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BatchRowIssue:
    line: int
    kind: str  # "invalid" | "duplicate"
    reason: str
