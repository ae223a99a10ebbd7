"""Campaign evaluation is a pure function: campaigns + one trigger + budget left -> awards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accrue.domain.campaigns import (
    Budget,
    BudgetLeft,
    Campaign,
    CampaignStatus,
    CampaignType,
    Conditions,
    Occasion,
    Trigger,
    award_transfer_id,
    default_signup_campaign,
    plan_awards,
)
from accrue.domain.errors import Conflict, InvalidInput, RuleViolation
from accrue.domain.ledger import Reason
from accrue.domain.loyalty import Tier

T0 = datetime(2025, 11, 24, tzinfo=UTC)


def campaign(campaign_id: str = "cmp_a", **kw: object) -> Campaign:
    values: dict[str, object] = {
        "campaign_id": campaign_id,
        "name": campaign_id,
        "type": CampaignType.FIXED_BONUS,
        "created_at": T0 - timedelta(days=1),
        "points": 50,
    }
    values.update(kw)
    return Campaign(**values)  # type: ignore[arg-type]


def multiplier(campaign_id: str = "cmp_m", factor: str = "2", **kw: object) -> Campaign:
    return campaign(campaign_id, type=CampaignType.PURCHASE_MULTIPLIER, points=0, multiplier=Decimal(factor), **kw)


def purchase(amount: str = "150", base: int = 15, **kw: object) -> Trigger:
    values: dict[str, object] = {
        "occasion": Occasion.PURCHASE,
        "user_id": "usr_1",
        "key": "order:ord_1",
        "occurred_at": T0,
        "amount": Decimal(amount),
        "currency": "USD",
        "categories": frozenset({"electronics"}),
        "base_points": base,
    }
    values.update(kw)
    return Trigger(**values)  # type: ignore[arg-type]


def points(awards: list) -> dict[str, int]:  # type: ignore[type-arg]
    return {a.campaign_id: a.points for a in awards}


def test_the_seed_example_gives_15_x_2_plus_50_for_150_dollars_of_electronics_and_nothing_extra_for_90() -> None:
    rules = [
        multiplier(conditions=Conditions(min_amount=Decimal(100), categories=frozenset({"electronics"}))),
        campaign("cmp_f", conditions=Conditions(min_amount=Decimal(100))),
    ]
    awards = plan_awards(rules, purchase("150", 15), {})
    assert points(awards) == {"cmp_m": 15, "cmp_f": 50}
    assert 15 + sum(a.points for a in awards) == 80
    assert plan_awards(rules, purchase("90", 9), {}) == []


def test_a_multiplier_adds_the_floor_of_base_times_factor_minus_one() -> None:
    assert points(plan_awards([multiplier(factor="1.5")], purchase(base=15), {})) == {"cmp_m": 7}
    assert points(plan_awards([multiplier(factor="3")], purchase(base=15), {})) == {"cmp_m": 30}
    assert plan_awards([multiplier(factor="1.5")], purchase(base=1), {}) == []


def test_categories_match_any_item_ignoring_case_and_other_conditions_must_all_hold() -> None:
    rule = campaign(conditions=Conditions(categories=frozenset({"electronics"}), tiers=frozenset({Tier.GOLD})))
    assert plan_awards([rule], purchase(categories=frozenset({"Electronics"}), tier=Tier.GOLD), {})
    assert not plan_awards([rule], purchase(categories=frozenset({"books"}), tier=Tier.GOLD), {})
    assert not plan_awards([rule], purchase(tier=Tier.SILVER), {})


def test_a_minimum_amount_is_in_its_currency_and_first_order_only_needs_a_first_order() -> None:
    rule = campaign(conditions=Conditions(min_amount=Decimal(100), currency="USD", first_order_only=True))
    assert plan_awards([rule], purchase("100", first_order=True), {})
    assert not plan_awards([rule], purchase("99.99", first_order=True), {})
    assert not plan_awards([rule], purchase("500", currency="EUR", first_order=True), {})
    assert not plan_awards([rule], purchase("500", first_order=False), {})


def test_the_date_window_includes_the_start_excludes_the_end_and_an_early_end() -> None:
    rule = campaign(starts_at=T0, ends_at=T0 + timedelta(days=2))
    assert not plan_awards([rule], purchase(occurred_at=T0 - timedelta(seconds=1)), {})
    assert plan_awards([rule], purchase(occurred_at=T0), {})
    assert not plan_awards([rule], purchase(occurred_at=T0 + timedelta(days=2)), {})
    assert rule.status(T0 - timedelta(hours=1)) is CampaignStatus.SCHEDULED
    assert rule.status(T0) is CampaignStatus.ACTIVE
    assert rule.end(T0 + timedelta(hours=1)) is True
    assert rule.end(T0 + timedelta(hours=2)) is False  # ending twice changes nothing
    assert rule.status(T0 + timedelta(hours=1)) is CampaignStatus.ENDED
    assert plan_awards([rule], purchase(occurred_at=T0 + timedelta(minutes=59)), {})
    assert not plan_awards([rule], purchase(occurred_at=T0 + timedelta(hours=1)), {})


def test_higher_priority_runs_first_and_an_exclusive_campaign_that_applies_stops_lower_ones() -> None:
    low = campaign("cmp_low", priority=0)
    high = campaign("cmp_high", priority=10, exclusive=True, points=70)
    awards = plan_awards([low, high], purchase(), {})
    assert [a.campaign_id for a in awards] == ["cmp_high"]
    stacked = plan_awards([low, campaign("cmp_mid", priority=5, points=5)], purchase(), {})
    assert [a.campaign_id for a in stacked] == ["cmp_mid", "cmp_low"]


def test_an_exclusive_campaign_that_does_not_apply_or_has_no_budget_left_does_not_stop_others() -> None:
    low = campaign("cmp_low")
    picky = campaign("cmp_x", priority=10, exclusive=True, conditions=Conditions(min_amount=Decimal(1000)))
    assert points(plan_awards([low, picky], purchase(), {})) == {"cmp_low": 50}
    spent = campaign("cmp_x", priority=10, exclusive=True, budget=Budget(total_points=100))
    assert points(plan_awards([low, spent], purchase(), {"cmp_x": BudgetLeft(total=0)})) == {"cmp_low": 50}


def test_awards_are_cut_to_the_total_and_per_member_budget_left() -> None:
    rule = campaign(budget=Budget(total_points=1000, per_member_points=100))
    assert points(plan_awards([rule], purchase(), {"cmp_a": BudgetLeft(total=30, member=100)})) == {"cmp_a": 30}
    assert points(plan_awards([rule], purchase(), {"cmp_a": BudgetLeft(total=1000, member=20)})) == {"cmp_a": 20}
    (award,) = plan_awards([rule], purchase(), {"cmp_a": BudgetLeft(total=10, member=20)})
    assert (award.points, award.requested) == (10, 50)


def test_a_fact_already_rewarded_is_not_paid_again_but_still_stops_lower_campaigns() -> None:
    high = campaign("cmp_high", priority=10, exclusive=True)
    low = campaign("cmp_low")
    done = frozenset({award_transfer_id("cmp_high", "order:ord_1")})
    assert plan_awards([high, low], purchase(), {}, already_awarded=done) == []


def test_awards_are_drawn_from_the_campaign_budget_account_with_a_transfer_id_per_fact() -> None:
    (award,) = plan_awards([campaign()], purchase(), {})
    assert award.transfer_id == "campaign:cmp_a:order:ord_1"
    assert award.source_account == "campaign:cmp_a:budget"
    assert (award.reason, award.reference) == (Reason.CAMPAIGN, "campaign:cmp_a")


def test_a_milestone_bonus_pays_once_per_chosen_milestone_crossed() -> None:
    rule = campaign(type=CampaignType.MILESTONE_BONUS, points=25, conditions=Conditions(milestones=frozenset({500})))
    trigger = Trigger(
        occasion=Occasion.MILESTONE, user_id="usr_1", key="milestone:usr_1", occurred_at=T0, milestones=(100, 500)
    )
    (award,) = plan_awards([rule], trigger, {})
    assert (award.points, award.transfer_id) == (25, "campaign:cmp_a:milestone:usr_1:500")
    every = campaign(type=CampaignType.MILESTONE_BONUS, points=25)
    assert [a.transfer_id for a in plan_awards([every], trigger, {})] == [
        "campaign:cmp_a:milestone:usr_1:100",
        "campaign:cmp_a:milestone:usr_1:500",
    ]


def test_the_welcome_bonus_is_a_signup_campaign_with_the_non_qualifying_welcome_reason() -> None:
    welcome = default_signup_campaign(100)
    assert welcome is not None and welcome.managed
    assert default_signup_campaign(0) is None
    signup = Trigger(occasion=Occasion.SIGNUP, user_id="usr_1", key="signup:usr_1", occurred_at=T0)
    (award,) = plan_awards([welcome], signup, {})
    assert (award.points, award.reason) == (100, Reason.WELCOME_BONUS)
    assert not plan_awards([welcome], purchase(), {})  # a signup campaign ignores purchases
    with pytest.raises(Conflict):
        welcome.end(T0)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"type": CampaignType.PURCHASE_MULTIPLIER, "points": 0, "multiplier": Decimal(1)}, "multiplier"),
        ({"type": CampaignType.PURCHASE_MULTIPLIER, "points": 5, "multiplier": Decimal(2)}, "points"),
        ({"points": 0}, "points"),
        ({"multiplier": Decimal(2)}, "multiplier"),
        ({"type": CampaignType.SIGNUP_BONUS, "conditions": Conditions(min_amount=Decimal(1))}, "conditions.minAmount"),
        ({"conditions": Conditions(milestones=frozenset({500}))}, "conditions.milestones"),
        (
            {"type": CampaignType.MILESTONE_BONUS, "conditions": Conditions(milestones=frozenset({7}))},
            "conditions.milestones",
        ),
        ({"budget": Budget(total_points=0)}, "budget.totalPoints"),
        ({"name": "  "}, "name"),
    ],
)
def test_a_campaign_that_breaks_a_rule_is_refused_naming_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        campaign(**kw)
    assert refused.value.field == field


def test_an_end_not_after_the_start_is_a_rule_violation_naming_end_date() -> None:
    with pytest.raises(RuleViolation) as refused:
        campaign(starts_at=T0, ends_at=T0)
    assert refused.value.details == {"field": "endDate", "rule": "must be after startDate"}


@settings(max_examples=200, deadline=None)
@given(
    budget=st.integers(min_value=1, max_value=500),
    per_member=st.one_of(st.none(), st.integers(min_value=1, max_value=200)),
    orders=st.lists(
        st.tuples(st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=400)), max_size=40
    ),
)
def test_however_orders_arrive_a_campaign_never_awards_more_than_its_budgets(
    budget: int, per_member: int | None, orders: list[tuple[int, int]]
) -> None:
    rule = multiplier(factor="2", budget=Budget(total_points=budget, per_member_points=per_member))
    drawn: dict[str, int] = {}
    for n, (member, base) in enumerate(orders):
        user = f"usr_{member}"
        left = BudgetLeft(
            total=budget - sum(drawn.values()),
            member=None if per_member is None else per_member - drawn.get(user, 0),
        )
        for award in plan_awards([rule], purchase(base=base, user_id=user, key=f"order:{n}"), {"cmp_m": left}):
            assert award.points > 0
            drawn[user] = drawn.get(user, 0) + award.points
    assert sum(drawn.values()) <= budget
    if per_member is not None:
        assert all(v <= per_member for v in drawn.values())
    demand = sum(base for _, base in orders)
    if per_member is None:
        assert sum(drawn.values()) == min(budget, demand)  # spends exactly up to the budget
