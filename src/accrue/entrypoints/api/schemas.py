"""Request and response models of the HTTP API: camelCase on the wire, separate from domain types."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Generic, Literal, TypeVar

import email_validator
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from starlette.responses import Response

from accrue.domain.currencies import MINOR_UNITS

T = TypeVar("T")


class ApiModel(BaseModel):
    """camelCase out; camelCase or snake_case in; unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        ser_json_timedelta="iso8601",
    )


class ResponseModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Envelope(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: T


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: ErrorBody


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def ok_json(data: BaseModel, status_code: int = 200) -> Response:
    """The success envelope around an already validated model, serialised once by pydantic-core.

    Returning a Response skips FastAPI's second validation of the result and its pure-Python JSON
    encoding (a third of the CPU of a small write request). The route's ``response_model`` still
    documents the body; the schemathesis suite checks that they agree.
    """
    body = b'{"success":true,"data":' + data.model_dump_json(by_alias=True).encode() + b"}"
    return Response(content=body, status_code=status_code, media_type="application/json")


# -- shared field types: the JSON schema of each says exactly what the validator accepts -----------

# Amounts: a decimal string (exact; preferred) or a JSON number, below 10^14. Text forms are plain
# digits with an optional fraction: no sign, exponent, spaces or leading zeros.
AMOUNT_LIMIT = 10**14
_NON_NEGATIVE_TEXT = r"^(0|[1-9][0-9]{0,13})(\.[0-9]{1,12})?$"
_POSITIVE_TEXT = r"^([1-9][0-9]{0,13}(\.[0-9]{1,12})?|0\.[0-9]{0,11}[1-9][0-9]{0,11})$"


def _decimal_from_json(pattern: str) -> Any:
    compiled = re.compile(pattern)

    def parse(value: object) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise ValueError('must be a decimal number or a decimal string such as "12.50"')
        if isinstance(value, str):
            if not compiled.fullmatch(value):
                raise ValueError('must be a decimal string of digits with an optional fraction, such as "12.50"')
            return Decimal(value)
        try:
            # A float is read through its shortest repr (what the client wrote), never its binary value.
            amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        except InvalidOperation:
            raise ValueError("must be a decimal number") from None
        if not amount.is_finite():
            raise ValueError("must be a finite decimal number")
        return amount

    return parse


def _amount_schema(pattern: str, minimum_key: str) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "pattern": pattern, "maxLength": 40},
            {"type": "number", minimum_key: 0, "exclusiveMaximum": AMOUNT_LIMIT},
        ],
        "description": 'A decimal amount: a string such as "12.50" (exact) or a JSON number.',
    }


NonNegativeAmount = Annotated[
    Decimal,
    BeforeValidator(_decimal_from_json(_NON_NEGATIVE_TEXT)),
    Field(ge=0, lt=AMOUNT_LIMIT),
    WithJsonSchema(_amount_schema(_NON_NEGATIVE_TEXT, "minimum")),
]
PositiveAmount = Annotated[
    Decimal,
    BeforeValidator(_decimal_from_json(_POSITIVE_TEXT)),
    Field(gt=0, lt=AMOUNT_LIMIT),
    WithJsonSchema(_amount_schema(_POSITIVE_TEXT, "exclusiveMinimum")),
]


def _check_currency(value: str) -> str:
    if value not in MINOR_UNITS:
        raise ValueError("must be an ISO 4217 currency code in capitals, such as USD")
    return value


CurrencyCode = Annotated[
    str,
    AfterValidator(_check_currency),
    WithJsonSchema({"type": "string", "enum": sorted(MINOR_UNITS), "description": "ISO 4217 code"}),
]

_BARE_NUMBER = re.compile(r"\s*[+-]?[0-9]+(\.[0-9]*)?\s*")


def _rfc3339_text(value: object) -> object:
    if isinstance(value, int | float) or (isinstance(value, str) and _BARE_NUMBER.fullmatch(value)):
        raise ValueError("must be an RFC 3339 date-time such as 2026-11-01T00:00:00Z, not a number")
    return value


# A date-time as documented (``format: date-time``): pydantic alone also reads a bare number as a
# Unix time, which the schema does not allow (found by the schemathesis suite on a query parameter).
DateTimeText = Annotated[datetime, BeforeValidator(_rfc3339_text)]

# Identifiers chosen by clients (member ids of a POS, order ids): printable, no spaces or slashes.
ID_PATTERN = r"^[A-Za-z0-9_.:@\-]+$"
ClientId = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]


def _check_email(value: str) -> str:
    """RFC 5322/6531 syntax via email-validator, without DNS and without the special-use domain ban
    (``.test``, ``.example`` addresses are valid syntax, which is all ``format: email`` promises)."""
    try:
        email_validator.validate_email(
            value, check_deliverability=False, test_environment=True, globally_deliverable=False
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"is not a valid email address: {exc}") from None
    return value.strip()


Email = Annotated[str, Field(max_length=254, json_schema_extra={"format": "email"}), AfterValidator(_check_email)]


# -- users ----------------------------------------------------------------------------------------


class CreateUserRequest(ApiModel):
    email: Email
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, min_length=3, max_length=32, pattern=r"^\+?[0-9 ()\-]{3,32}$")
    user_id: ClientId | None = None


class UserCreated(ResponseModel):
    user_id: str
    email: str | None
    points: int
    tier: str
    referral_code: str | None = None
    created_at: datetime


class User(ResponseModel):
    user_id: str
    email: str | None
    name: str | None
    phone: str | None = None
    points: int
    lifetime: int
    tier: str
    total_spent: str
    referral_code: str | None = None
    created_at: datetime


# -- transactions (seed 000) ----------------------------------------------------------------------


class TransactionRequest(ApiModel):
    member_id: ClientId
    transaction_amount: NonNegativeAmount
    transaction_type: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z_]+$")
    email: Email | None = None


class TransactionResponse(ResponseModel):
    transaction_id: str
    points_earned: int
    total_points: int
    tier: str


# -- orders ---------------------------------------------------------------------------------------


class OrderItemIn(ApiModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1_000_000)
    price: NonNegativeAmount
    category: str | None = Field(default=None, max_length=64)


class CreateOrderRequest(ApiModel):
    user_id: ClientId
    amount: PositiveAmount
    currency: CurrencyCode = "USD"
    items: list[OrderItemIn] = Field(default_factory=list, max_length=500)
    order_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")


class OrderItemOut(ResponseModel):
    sku: str
    quantity: int
    price: str
    category: str | None = None


class OrderOut(ResponseModel):
    order_id: str
    user_id: str
    amount: str
    currency: str
    points_earned: int
    status: str
    items: list[OrderItemOut] = Field(default_factory=list)
    created_at: datetime


class OrderPage(ResponseModel):
    orders: list[OrderOut]
    next_cursor: str | None = None


# -- points ---------------------------------------------------------------------------------------


class PointsOut(ResponseModel):
    user_id: str
    balance: int
    lifetime: int
    tier: str


class HistoryEntry(ResponseModel):
    transaction_id: str
    type: Literal["credit", "debit"]
    points: int
    reason: str
    reference: str
    balance: int
    date: datetime


class HistoryPage(ResponseModel):
    user_id: str
    history: list[HistoryEntry]
    next_cursor: str | None = None


class RedeemRequest(ApiModel):
    points: int = Field(gt=0, le=1_000_000_000)
    reason: str | None = Field(default=None, max_length=200)


class RedeemResponse(ResponseModel):
    transaction_id: str
    points_redeemed: int
    balance: int


# -- notifications --------------------------------------------------------------------------------


class NotificationMessage(BaseModel):
    default: str
    email: str
    sms: str


class NotificationOut(ResponseModel):
    notification_id: str
    type: str
    user_id: str
    subject: str
    message: NotificationMessage
    old_tier: str | None = None
    new_tier: str | None = None
    milestones: list[int] | None = None
    created_at: datetime


class NotificationPage(ResponseModel):
    notifications: list[NotificationOut]
    next_cursor: str | None = None


class Health(ResponseModel):
    status: Literal["ok"]
    version: str


# -- admin ----------------------------------------------------------------------------------------


class DeadLetter(ResponseModel):
    id: str
    source: Literal["outbox", "queue"]
    name: str
    handler: str | None = None
    attempts: int
    last_error: str | None = None
    payload: dict[str, Any]


class DeadLetterPage(ResponseModel):
    dead_letters: list[DeadLetter]


class Redriven(ResponseModel):
    id: str
    redriven: bool
