"""Orders: a purchase that earns points once, when it is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class LineItem:
    sku: str
    quantity: int
    price: Decimal
    category: str | None = None


@dataclass(slots=True)
class Order:
    order_id: str
    user_id: str
    amount: Decimal
    currency: str
    amount_minor: int
    status: str
    points_earned: int
    created_at: datetime
    items: tuple[LineItem, ...] = field(default_factory=tuple)
    source: str = "api"

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({i.category.lower() for i in self.items if i.category}))
