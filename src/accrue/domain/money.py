"""Money: decimals in, integers in minor units out. Never a binary float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from accrue.domain.currencies import MINOR_UNITS
from accrue.domain.errors import InvalidInput


def parse_amount(value: object, field: str) -> Decimal:
    """Parse a JSON/CSV amount into a ``Decimal``; refuse missing, non-numeric and non-finite."""
    if value is None or value == "":
        raise InvalidInput(field, "is required")
    if isinstance(value, bool):
        raise InvalidInput(field, "must be a decimal number")
    if isinstance(value, float):
        # JSON numbers arrive as str/Decimal from our parsers; a float here would already be lossy.
        value = repr(value)
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput(field, "must be a decimal number") from None
    if not amount.is_finite():
        raise InvalidInput(field, "must be a finite decimal number")
    return amount


def require_positive(amount: Decimal, field: str) -> Decimal:
    if amount <= 0:
        raise InvalidInput(field, "must be greater than 0")
    return amount


def require_non_negative(amount: Decimal, field: str) -> Decimal:
    if amount < 0:
        raise InvalidInput(field, "must not be negative")
    return amount


def normalize_currency(code: object, field: str = "currency") -> str:
    if not isinstance(code, str) or not code.strip():
        raise InvalidInput(field, "is required")
    upper = code.strip().upper()
    if upper not in MINOR_UNITS:
        raise InvalidInput(field, f"'{code}' is not an ISO 4217 currency code")
    return upper


def to_minor_units(amount: Decimal, currency: str, field: str = "amount") -> int:
    """Convert to the currency's smallest unit; more decimals than the currency allows is an error."""
    exponent = MINOR_UNITS[currency]
    scaled = amount.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(field, f"has more than {exponent} decimal places allowed for {currency}")
    return int(scaled)


def from_minor_units(minor: int, currency: str) -> Decimal:
    exponent = MINOR_UNITS[currency]
    return Decimal(minor).scaleb(-exponent)


def format_minor_units(minor: int, currency: str = "USD") -> str:
    """``46500`` USD -> ``"465.00"`` (always the currency's number of decimals)."""
    exponent = MINOR_UNITS[currency]
    value = from_minor_units(minor, currency)
    return f"{value:.{exponent}f}"
