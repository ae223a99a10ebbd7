"""Request and response models of the HTTP API: camelCase on the wire, separate from domain types."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field
from pydantic.alias_generators import to_camel

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


Amount = Decimal
UserId = str


# -- users ----------------------------------------------------------------------------------------


class CreateUserRequest(ApiModel):
    email: EmailStr = Field(max_length=254)
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, min_length=3, max_length=32, pattern=r"^\+?[0-9 ()\-]{3,32}$")
    user_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")


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
    member_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")
    transaction_amount: Decimal = Field(ge=0, max_digits=18, decimal_places=4)
    transaction_type: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z_]+$")
    email: EmailStr | None = None


class TransactionResponse(ResponseModel):
    transaction_id: str
    points_earned: int
    total_points: int
    tier: str


# -- orders ---------------------------------------------------------------------------------------


class OrderItemIn(ApiModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1_000_000)
    price: Decimal = Field(ge=0, max_digits=18, decimal_places=4)
    category: str | None = Field(default=None, max_length=64)


class CreateOrderRequest(ApiModel):
    user_id: str = Field(min_length=1, max_length=128)
    amount: Decimal = Field(gt=0, max_digits=18, decimal_places=4)
    currency: str = Field(default="USD", min_length=3, max_length=3)
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
