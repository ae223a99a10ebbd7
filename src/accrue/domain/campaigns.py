"""Campaigns: declarative reward rules, evaluated on events into ledger awards.

A campaign is data (type, points or multiplier, conditions, dates, priority, budget), never code.
Evaluation is a pure function of the campaigns, one *trigger* (the fact that happened: a signup, a
purchase, a referral, milestones reached) and the budget left to each campaign; it returns the
awards to post. Awards are drawn from the campaign's budget account (``campaign:{id}:budget``) and
their transfer ids are derived from the campaign and the fact, so a redelivered event never pays
twice.

Rules:
- campaigns are evaluated by priority (highest first; ties by creation order); an ``exclusive``
  campaign that awards anything stops every lower one;
- a purchase multiplier of ``m`` adds ``floor(base x (m - 1))`` to the base purchase points (2x
  doubles them); a fixed bonus adds its points; several matching campaigns stack;
- an award is cut to what is left of the campaign's total and per-member budgets; a campaign whose
  budget is spent awards nothing and does not count as applied.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal

from accrue.domain.commands import Command
from accrue.domain.errors import Conflict, InvalidInput, RuleViolation
from accrue.domain.ledger import Reason, campaign_budget_account
from accrue.domain.loyalty import MILESTONES, Tier

# The welcome bonus of the loyalty core, expressed as a campaign configured by a setting.
DEFAULT_SIGNUP_CAMPAIGN_ID = "cmp_welcome"
DEFAULT_SIGNUP_CAMPAIGN_NAME = "Welcome bonus"
MAX_CAMPAIGN_POINTS = 1_000_000_000
MAX_MULTIPLIER = Decimal(100)


class CampaignType(enum.StrEnum):
    SIGNUP_BONUS = "signup_bonus"
    PURCHASE_MULTIPLIER = "purchase_multiplier"
    FIXED_BONUS = "fixed_bonus"
    REFERRAL_BONUS = "referral_bonus"
    MILESTONE_BONUS = "milestone_bonus"


class Occasion(enum.StrEnum):
    """What kind of fact a campaign reacts to."""

    SIGNUP = "signup"
    PURCHASE = "purchase"
    REFERRAL = "referral"
    MILESTONE = "milestone"


OCCASION_OF: dict[CampaignType, Occasion] = {
    CampaignType.SIGNUP_BONUS: Occasion.SIGNUP,
    CampaignType.PURCHASE_MULTIPLIER: Occasion.PURCHASE,
    CampaignType.FIXED_BONUS: Occasion.PURCHASE,
    CampaignType.REFERRAL_BONUS: Occasion.REFERRAL,
    CampaignType.MILESTONE_BONUS: Occasion.MILESTONE,
}


class CampaignStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Conditions:
    """All conditions must hold. Purchase conditions only make sense for purchase campaigns."""

    min_amount: Decimal | None = None
    # The currency ``min_amount`` is in; a purchase in another currency does not meet it.
    currency: str = "USD"
    categories: frozenset[str] = frozenset()
    tiers: frozenset[Tier] = frozenset()
    first_order_only: bool = False
    milestones: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Budget:
    """``None`` means unlimited."""

    total_points: int | None = None
    per_member_points: int | None = None


@dataclass(slots=True)
class Campaign:
    campaign_id: str
    name: str
    type: CampaignType
    created_at: datetime
    points: int = 0
    multiplier: Decimal = Decimal(1)
    conditions: Conditions = field(default_factory=Conditions)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    # Set when an admin ends the campaign before ``ends_at``.
    ended_at: datetime | None = None
    priority: int = 0
    exclusive: bool = False
    budget: Budget = field(default_factory=Budget)
    description: str = ""
    # Managed by configuration (the welcome bonus), not through the API.
    managed: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Invariants a JSON Schema cannot express (and a second line of defence for those it can)."""
        if not self.name.strip():
            raise InvalidInput("name", "must not be blank")
        needs_points = self.type is not CampaignType.PURCHASE_MULTIPLIER
        if needs_points and not 0 < self.points <= MAX_CAMPAIGN_POINTS:
            raise InvalidInput("points", f"is required for {self.type} and must be 1 to {MAX_CAMPAIGN_POINTS}")
        if self.type is CampaignType.PURCHASE_MULTIPLIER:
            if not Decimal(1) < self.multiplier <= MAX_MULTIPLIER:
                raise InvalidInput("multiplier", f"must be greater than 1 and at most {MAX_MULTIPLIER}")
            if self.points:
                raise InvalidInput("points", "is not used by purchase_multiplier (use multiplier)")
        elif self.multiplier != 1:
            raise InvalidInput("multiplier", f"is only used by purchase_multiplier, not {self.type}")
        for when, name in ((self.starts_at, "startDate"), (self.ends_at, "endDate")):
            if when is not None and when.tzinfo is None:
                raise InvalidInput(name, "must include a UTC offset")
        if self.starts_at is not None and self.ends_at is not None and self.ends_at <= self.starts_at:
            # Each date is well-formed alone; together they break a rule (422, not 400).
            raise RuleViolation(
                "endDate: must be after startDate", details={"field": "endDate", "rule": "must be after startDate"}
            )
        occasion = OCCASION_OF[self.type]
        c = self.conditions
        if occasion is not Occasion.PURCHASE:
            for used, name in (
                (c.min_amount is not None, "minAmount"),
                (bool(c.categories), "categories"),
                (c.first_order_only, "firstOrderOnly"),
            ):
                if used:
                    raise InvalidInput(f"conditions.{name}", f"only applies to purchase campaigns, not {self.type}")
        if c.min_amount is not None and c.min_amount < 0:
            raise InvalidInput("conditions.minAmount", "must not be negative")
        if c.milestones and self.type is not CampaignType.MILESTONE_BONUS:
            raise InvalidInput("conditions.milestones", "only applies to milestone_bonus")
        unknown = sorted(m for m in c.milestones if m not in MILESTONES)
        if unknown:
            raise InvalidInput("conditions.milestones", f"{unknown} are not milestones; use some of {list(MILESTONES)}")
        b = self.budget
        for value, name in ((b.total_points, "budget.totalPoints"), (b.per_member_points, "budget.perMemberPoints")):
            if value is not None and not 0 < value <= MAX_CAMPAIGN_POINTS:
                raise InvalidInput(name, f"must be 1 to {MAX_CAMPAIGN_POINTS}")

    @property
    def occasion(self) -> Occasion:
        return OCCASION_OF[self.type]

    @property
    def budget_account(self) -> str:
        return campaign_budget_account(self.campaign_id)

    @property
    def effective_end(self) -> datetime | None:
        ends = [t for t in (self.ends_at, self.ended_at) if t is not None]
        return min(ends) if ends else None

    def status(self, now: datetime) -> CampaignStatus:
        end = self.effective_end
        if end is not None and now >= end:
            return CampaignStatus.ENDED
        if self.starts_at is not None and now < self.starts_at:
            return CampaignStatus.SCHEDULED
        return CampaignStatus.ACTIVE

    def running_at(self, at: datetime) -> bool:
        """Whether a fact that happened at ``at`` falls inside the campaign's window."""
        return self.status(at) is CampaignStatus.ACTIVE

    def end(self, now: datetime) -> bool:
        """End early. False when it had already ended (ending twice changes nothing)."""
        if self.managed:
            raise Conflict(
                f"campaign {self.campaign_id} is managed by configuration: "
                "set ACCRUE_WELCOME_BONUS_POINTS (0 turns it off)",
                details={"campaignId": self.campaign_id},
            )
        if self.status(now) is CampaignStatus.ENDED:
            return False
        self.ended_at = now
        return True


def default_signup_campaign(points: int) -> Campaign | None:
    """The loyalty core's welcome bonus as a signup_bonus campaign; ``None`` when turned off (0)."""
    if points <= 0:
        return None
    return Campaign(
        campaign_id=DEFAULT_SIGNUP_CAMPAIGN_ID,
        name=DEFAULT_SIGNUP_CAMPAIGN_NAME,
        type=CampaignType.SIGNUP_BONUS,
        created_at=datetime(1970, 1, 1, tzinfo=UTC),
        points=points,
        description="Points for every member enrolled with POST /users (ACCRUE_WELCOME_BONUS_POINTS).",
        managed=True,
    )


# -- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    """One fact campaigns may reward. ``key`` names the fact (e.g. ``order:ord_1``): with the
    campaign id it makes the award's transfer id, so the same fact is never rewarded twice."""

    occasion: Occasion
    user_id: str  # the member the points go to
    key: str
    occurred_at: datetime
    tier: Tier = Tier.BRONZE
    amount: Decimal | None = None
    currency: str | None = None
    categories: frozenset[str] = frozenset()
    base_points: int = 0
    first_order: bool = False
    milestones: tuple[int, ...] = ()
    reference: str = ""  # what caused it, e.g. order:ord_1 (kept in the award for the history)


@dataclass(frozen=True, slots=True)
class BudgetLeft:
    """Points a campaign may still award in total and to this member; ``None`` is unlimited."""

    total: int | None = None
    member: int | None = None


UNLIMITED = BudgetLeft()


@dataclass(frozen=True, slots=True)
class Award:
    campaign_id: str
    user_id: str
    points: int
    transfer_id: str
    source_account: str
    reason: Reason
    reference: str
    # The points the rule asked for before the budget cut them.
    requested: int


def award_transfer_id(campaign_id: str, fact_key: str) -> str:
    return f"campaign:{campaign_id}:{fact_key}"


def by_priority(campaigns: Iterable[Campaign]) -> list[Campaign]:
    return sorted(campaigns, key=lambda c: (-c.priority, c.created_at, c.campaign_id))


def eligible(campaign: Campaign, trigger: Trigger) -> bool:
    if campaign.occasion is not trigger.occasion or not campaign.running_at(trigger.occurred_at):
        return False
    c = campaign.conditions
    if c.tiers and trigger.tier not in c.tiers:
        return False
    if c.min_amount is not None and (
        trigger.amount is None or trigger.currency != c.currency or trigger.amount < c.min_amount
    ):
        return False
    if c.categories and not (c.categories & {x.lower() for x in trigger.categories}):
        return False
    return not (c.first_order_only and not trigger.first_order)


def requested_points(campaign: Campaign, trigger: Trigger) -> list[tuple[str, int]]:
    """(fact key, points) the campaign's rule asks for; empty when it does not apply."""
    if not eligible(campaign, trigger):
        return []
    if campaign.type is CampaignType.PURCHASE_MULTIPLIER:
        extra = int((Decimal(trigger.base_points) * (campaign.multiplier - 1)).to_integral_value(rounding=ROUND_FLOOR))
        return [(trigger.key, extra)] if extra > 0 else []
    if campaign.type is CampaignType.MILESTONE_BONUS:
        wanted = campaign.conditions.milestones
        return [(f"{trigger.key}:{m}", campaign.points) for m in trigger.milestones if not wanted or m in wanted]
    return [(trigger.key, campaign.points)]


def _cap(value: int, limit: int | None) -> int:
    return value if limit is None else max(0, min(value, limit))


def plan_awards(
    campaigns: Sequence[Campaign],
    trigger: Trigger,
    budgets: Mapping[str, BudgetLeft],
    already_awarded: frozenset[str] = frozenset(),
) -> list[Award]:
    """The awards for one trigger, in priority order, cut to each campaign's budget.

    ``already_awarded`` holds transfer ids already in the ledger: those facts were rewarded before
    (a redelivered event) and are neither paid again nor counted against the budget again, but they
    still count as "applied" for exclusivity, so a replay stops at the same place as the first run.
    """
    awards: list[Award] = []
    for campaign in by_priority(campaigns):
        left = budgets.get(campaign.campaign_id, UNLIMITED)
        total_left, member_left = left.total, left.member
        applied = False
        for fact_key, points in requested_points(campaign, trigger):
            transfer_id = award_transfer_id(campaign.campaign_id, fact_key)
            if transfer_id in already_awarded:
                applied = True
                continue
            granted = _cap(_cap(points, total_left), member_left)
            if granted <= 0:
                continue
            if total_left is not None:
                total_left -= granted
            if member_left is not None:
                member_left -= granted
            applied = True
            awards.append(
                Award(
                    campaign_id=campaign.campaign_id,
                    user_id=trigger.user_id,
                    points=granted,
                    transfer_id=transfer_id,
                    source_account=campaign.budget_account,
                    reason=Reason.WELCOME_BONUS if campaign.type is CampaignType.SIGNUP_BONUS else Reason.CAMPAIGN,
                    reference=f"campaign:{campaign.campaign_id}",
                    requested=points,
                )
            )
        if applied and campaign.exclusive:
            break
    return awards


# -- commands and events --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CreateCampaign(Command):
    """``definition`` is the declarative JSON document (validated against the campaign schema)."""

    definition: Mapping[str, object]
    campaign_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class EndCampaign(Command):
    campaign_id: str
