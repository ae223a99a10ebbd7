"""Earning rules, tiers and milestones (seed 000, seed 003)."""

from __future__ import annotations

import enum
from bisect import bisect_right
from decimal import ROUND_FLOOR, Decimal

EARN_RATES: dict[str, Decimal] = {
    "purchase": Decimal("0.10"),
    "referral": Decimal("0.15"),
    "bonus": Decimal("0.20"),
}
DEFAULT_EARN_RATE = Decimal("0.05")


def earn_rate(transaction_type: str) -> Decimal:
    return EARN_RATES.get(transaction_type.strip().lower(), DEFAULT_EARN_RATE)


def points_for(amount: Decimal, transaction_type: str) -> int:
    """floor(amount x rate), computed exactly in decimal arithmetic."""
    return int((amount * earn_rate(transaction_type)).to_integral_value(rounding=ROUND_FLOOR))


class Tier(enum.StrEnum):
    BRONZE = "BRONZE"
    SILVER = "SILVER"
    GOLD = "GOLD"
    PLATINUM = "PLATINUM"

    @property
    def rank(self) -> int:
        return _TIER_RANK[self]

    @property
    def threshold(self) -> int:
        return TIER_THRESHOLDS[self]

    @property
    def bonus_percent(self) -> int:
        """The purchase bonus this tier earns, in whole percent."""
        return TIER_BONUS_PERCENT[self]

    @property
    def benefits(self) -> tuple[str, ...]:
        return TIER_BENEFITS[self]


_TIER_ORDER = (Tier.BRONZE, Tier.SILVER, Tier.GOLD, Tier.PLATINUM)
_TIER_RANK = {tier: rank for rank, tier in enumerate(_TIER_ORDER)}
TIER_THRESHOLDS: dict[Tier, int] = {
    Tier.BRONZE: 0,
    Tier.SILVER: 1_000,
    Tier.GOLD: 5_000,
    Tier.PLATINUM: 10_000,
}
TIER_BONUS_PERCENT: dict[Tier, int] = {
    Tier.BRONZE: 0,
    Tier.SILVER: 5,
    Tier.GOLD: 10,
    Tier.PLATINUM: 15,
}
TIER_BENEFITS: dict[Tier, tuple[str, ...]] = {
    Tier.BRONZE: ("Points on every purchase",),
    Tier.SILVER: (
        "5% bonus points on all purchases",
        "Priority customer support",
        "Exclusive member-only offers",
    ),
    Tier.GOLD: (
        "10% bonus points on all purchases",
        "Free shipping on all orders",
        "Early access to sales",
        "Priority customer support",
    ),
    Tier.PLATINUM: (
        "15% bonus points on all purchases",
        "Free expedited shipping",
        "Exclusive VIP events",
        "Personal account manager",
        "Complimentary gift wrapping",
    ),
}


def tier_for(lifetime_points: int) -> Tier:
    """Tier from lifetime qualifying points, never from the spendable balance."""
    for threshold, tier in _THRESHOLDS_DESCENDING:
        if lifetime_points >= threshold:
            return tier
    return Tier.BRONZE


_THRESHOLDS_DESCENDING = tuple((TIER_THRESHOLDS[t], t) for t in reversed(_TIER_ORDER))


def tier_bonus_points(base_points: int, tier: Tier) -> int:
    """floor(base x tier bonus percent) in integer arithmetic."""
    return (base_points * tier.bonus_percent) // 100


MILESTONES: tuple[int, ...] = (100, 500, 2_500, 7_500, 15_000, 25_000)


def milestones_crossed(old_lifetime: int, new_lifetime: int) -> tuple[int, ...]:
    """Every milestone passed by one change, in ascending order."""
    # Milestones m with old < m <= new: a slice of the sorted tuple (most postings cross none).
    return MILESTONES[bisect_right(MILESTONES, old_lifetime) : bisect_right(MILESTONES, new_lifetime)]
