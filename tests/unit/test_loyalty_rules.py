from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accrue.domain import events
from accrue.domain.errors import InsufficientPoints
from accrue.domain.loyalty import Tier, milestones_crossed, points_for, tier_for
from accrue.domain.members import Member

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("amount", "kind", "points"),
    [
        ("12000.00", "purchase", 1200),
        ("99.99", "purchase", 9),
        ("100", "referral", 15),
        ("100", "bonus", 20),
        ("100", "anything", 5),
        ("0.1", "bonus", 0),
        ("19.99", "other", 0),
    ],
)
def test_points_are_the_floor_of_amount_times_the_rate_of_the_type(amount: str, kind: str, points: int) -> None:
    assert points_for(Decimal(amount), kind) == points


@pytest.mark.parametrize(
    ("lifetime", "tier"),
    [
        (0, Tier.BRONZE),
        (999, Tier.BRONZE),
        (1000, Tier.SILVER),
        (4999, Tier.SILVER),
        (5000, Tier.GOLD),
        (9999, Tier.GOLD),
        (10000, Tier.PLATINUM),
    ],
)
def test_tiers_follow_lifetime_thresholds(lifetime: int, tier: Tier) -> None:
    assert tier_for(lifetime) is tier


def test_one_change_lists_every_milestone_it_crosses() -> None:
    assert milestones_crossed(0, 1200) == (100, 500)
    assert milestones_crossed(100, 500) == (500,)
    assert milestones_crossed(500, 500) == ()
    assert milestones_crossed(0, 30000) == (100, 500, 2500, 7500, 15000, 25000)


def member() -> Member:
    return Member(user_id="u1", email="u1@example.com", name="U", created_at=NOW)


def test_a_silver_member_earns_a_five_percent_tier_bonus_as_its_own_posting() -> None:
    m = member()
    m.record_purchase(transfer_id="t1", amount=Decimal("12000"), transaction_type="purchase", reference="r", now=NOW)
    assert m.tier is Tier.SILVER
    transfers = m.record_purchase(
        transfer_id="t2", amount=Decimal("1000"), transaction_type="purchase", reference="r", now=NOW
    )
    assert [(t.reason, t.amount) for t in transfers] == [("earn", 100), ("tier_bonus", 5)]
    assert m.balance == 1305 and m.lifetime == 1305


def test_the_purchase_that_reaches_silver_earns_no_bonus_yet() -> None:
    m = member()
    transfers = m.record_purchase(
        transfer_id="t1", amount=Decimal("12000"), transaction_type="purchase", reference="r", now=NOW
    )
    assert [t.reason for t in transfers] == ["earn"]
    names = [e.name for e in m.events]
    assert names.count("TierUpgraded") == 1 and names.count("MilestonesReached") == 1


def test_redemption_lowers_balance_but_never_lifetime_or_tier() -> None:
    m = member()
    m.record_purchase(transfer_id="t1", amount=Decimal("12000"), transaction_type="purchase", reference="r", now=NOW)
    m.redeem(transfer_id="t2", points=1100, reference="x", now=NOW)
    assert (m.balance, m.lifetime, m.tier) == (100, 1200, Tier.SILVER)
    with pytest.raises(InsufficientPoints):
        m.redeem(transfer_id="t3", points=101, reference="x", now=NOW)
    assert m.balance == 100


def test_a_reversal_that_drops_below_a_threshold_downgrades_without_an_upgrade_event() -> None:
    m = member()
    (earn,) = m.record_purchase(
        transfer_id="t1", amount=Decimal("12000"), transaction_type="purchase", reference="r", now=NOW
    )
    m.events.clear()
    m.reverse(original=earn, transfer_id="t1:reverse", now=NOW)
    assert m.tier is Tier.BRONZE and m.balance == 0 and m.lifetime == 0
    assert [type(e) for e in m.events] == [events.TierDowngraded]


@given(st.lists(st.decimals(min_value=0, max_value=100000, places=2, allow_nan=False), max_size=30))
def test_balance_always_equals_the_sum_of_the_member_postings(amounts: list[Decimal]) -> None:
    m = member()
    posted = 0
    for i, amount in enumerate(amounts):
        for t in m.record_purchase(
            transfer_id=f"t{i}", amount=amount, transaction_type="purchase", reference="r", now=NOW
        ):
            posted += t.member_delta
            assert t.balance_after <= m.balance
    assert m.balance == posted == m.lifetime
    assert m.tier is tier_for(m.lifetime)
