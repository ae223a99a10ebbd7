"""Commands: imperative requests to change state. Frozen; validated before they reach a handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, kw_only=True)
class Command:
    pass


@dataclass(frozen=True, kw_only=True)
class CreateMember(Command):
    email: str
    name: str
    phone: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecordTransaction(Command):
    """Seed 000: one transaction of a type; an unknown member is enrolled on the way."""

    member_id: str
    amount: Decimal
    transaction_type: str
    email: str | None = None
    transaction_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class OrderItem:
    sku: str
    quantity: int
    price: Decimal
    category: str | None = None


@dataclass(frozen=True, kw_only=True)
class CreateOrder(Command):
    user_id: str
    amount: Decimal
    currency: str
    items: tuple[OrderItem, ...] = field(default_factory=tuple)
    order_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class RedeemPoints(Command):
    user_id: str
    points: int
    reason: str | None = None
    transfer_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class AwardPoints(Command):
    """An administrative credit (bulk import, goodwill)."""

    user_id: str
    points: int
    reason: str
    transfer_id: str


@dataclass(frozen=True, kw_only=True)
class ReviewTiers(Command):
    """The periodic tier review (seed 000: daily)."""
