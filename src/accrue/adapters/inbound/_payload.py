"""Reading verified provider payloads: JSON with exact decimals, and errors that name the field."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from accrue.domain.errors import InvalidInput
from accrue.domain.money import normalize_currency, parse_amount, require_positive
from accrue.domain.webhooks import InboundItem

ORDER_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def load_json(body: bytes) -> dict[str, Any]:
    try:
        # Decimal for every JSON number: an amount is never a binary float.
        value = json.loads(body, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("body", "is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput("body", "must be a JSON object")
    return value


def obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(field, "must be an object")
    return value


def text(value: Any, field: str, *, required: bool = True, max_length: int = 256) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(field, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(field, "must be a string")
    result = str(value).strip()
    if len(result) > max_length:
        raise InvalidInput(field, f"must be at most {max_length} characters")
    return result


def required_text(value: Any, field: str, *, max_length: int = 256) -> str:
    result = text(value, field, max_length=max_length)
    if result is None:
        raise InvalidInput(field, "is required")
    return result


def order_id(value: Any, field: str) -> str:
    result = required_text(value, field)
    if not ORDER_ID.match(result):
        raise InvalidInput(field, "must be 1-128 of A-Z a-z 0-9 _ . : -")
    return result


def amount(value: Any, field: str) -> Decimal:
    return require_positive(parse_amount(value, field), field)


def currency(value: Any, field: str) -> str:
    return normalize_currency(value if value is not None else "USD", field)


def whole_number(value: Any, field: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be a whole number")
    if value < minimum:
        raise InvalidInput(field, f"must be at least {minimum}")
    return value


def items(value: Any, field: str, *, category_key: str = "category") -> tuple[InboundItem, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput(field, "must be a list")
    found: list[InboundItem] = []
    for index, raw in enumerate(value):
        where = f"{field}[{index}]"
        item = obj(raw, where)
        sku = text(item.get("sku"), f"{where}.sku", required=False, max_length=64)
        if sku is None:
            fallback = item.get("variant_id") or item.get("product_id") or index + 1
            sku = f"item-{fallback}"[:64]
        price = parse_amount(item.get("price", "0"), f"{where}.price")
        if price < 0:
            raise InvalidInput(f"{where}.price", "must not be negative")
        found.append(
            InboundItem(
                sku=sku,
                quantity=whole_number(item.get("quantity", 1), f"{where}.quantity", minimum=1),
                price=price,
                category=text(item.get(category_key), f"{where}.{category_key}", required=False, max_length=64),
            )
        )
    return tuple(found)
