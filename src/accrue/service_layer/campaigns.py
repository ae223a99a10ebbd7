"""The campaign engine's use cases: define campaigns, evaluate them on facts, report on them.

Definitions are JSON documents checked against ``accrue/schemas/campaign.schema.json`` (with the
``jsonschema`` library; nothing is ever evaluated as code) and turned into domain ``Campaign``s.

One evaluation function, ``apply_campaigns``, serves every trigger. It runs inside the caller's
write unit of work, so the budget it reads from the ledger and the awards it posts are one atomic
step (under SQLite's single writer no other award can slip in between):
- sign-ups and orders are evaluated synchronously, inside the ``CreateMember``/``CreateOrder``
  unit of work, so ``POST /users`` and ``POST /orders`` already answer with the campaign points;
- facts from other features (a referral signed up, milestones reached, a payment processed) are
  evaluated by event handlers that the outbox worker runs after their commit.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any, Protocol

from jsonschema import Draft202012Validator, FormatChecker, TypeChecker, validators
from jsonschema.exceptions import ValidationError

from accrue.domain import events
from accrue.domain.campaigns import (
    DEFAULT_SIGNUP_CAMPAIGN_ID,
    Budget,
    BudgetLeft,
    Campaign,
    CampaignStatus,
    CampaignType,
    Conditions,
    CreateCampaign,
    EndCampaign,
    Occasion,
    Trigger,
    award_transfer_id,
    default_signup_campaign,
    plan_awards,
    requested_points,
)
from accrue.domain.errors import Conflict, InvalidInput, NotFound, RuleViolation
from accrue.domain.ids import new_id
from accrue.domain.ledger import Transfer
from accrue.domain.loyalty import Tier, points_for
from accrue.domain.members import Member
from accrue.domain.money import normalize_currency
from accrue.ports import Page, UnitOfWork

Clock = Callable[[], datetime]
SCHEMA_PACKAGE = "accrue.schemas"
SCHEMA_FILE = "campaign.schema.json"

# -- definitions ----------------------------------------------------------------------------------


@functools.cache
def campaign_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE).read_text("utf-8"))
    return schema


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 date-time (offset required) as an aware datetime; ValueError otherwise."""
    if not RFC3339.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time with an offset")
    text = value.upper().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python keeps microseconds: cut longer fractions, keep the offset
        digits = "".join(ch for ch in rest if ch.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    return datetime.fromisoformat(text)  # refuses impossible dates (month 13, February 30)


def _integer(checker: TypeChecker, instance: object) -> bool:
    # JSON Schema: an integer is any number without a fraction, so 85.0 counts; our JSON numbers
    # arrive as Decimal (never floats), which the library's own check would refuse.
    if isinstance(instance, Decimal):
        return instance.is_finite() and instance == instance.to_integral_value()
    return bool(Draft202012Validator.TYPE_CHECKER.is_type(instance, "integer"))


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(instance: object) -> bool:
    if isinstance(instance, str):
        parse_timestamp(instance)
    return True


@functools.cache
def _validator() -> Draft202012Validator:
    schema = campaign_schema()
    Draft202012Validator.check_schema(schema)
    validator_class = validators.extend(  # type: ignore[no-untyped-call]  # untyped in the stubs
        Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _integer)
    )
    validator: Draft202012Validator = validator_class(schema, format_checker=_FORMATS)
    return validator


def _field(path: Iterable[Any], name: str | None = None) -> str:
    text = ""
    for part in [*path, *([name] if name else [])]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _as_invalid_input(error: ValidationError, document: Mapping[str, Any]) -> InvalidInput:
    """Name the field and the rule, not the schema's internals."""
    path = list(error.absolute_path)
    instance = error.instance
    value: Any = error.validator_value
    schema: Any = error.schema
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = next((k for k in value if k not in instance), None)
        kind = document.get("type")
        rule = f"is required for type {kind}" if missing in ("points", "multiplier") and kind else "is required"
        return InvalidInput(_field(path, missing), rule)
    if error.validator == "not" and isinstance(value, Mapping):
        names = value.get("required") or []
        if names:
            return InvalidInput(_field(path, names[0]), f"is not allowed for type {document.get('type')}")
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        allowed = set(schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)
        return InvalidInput(_field(path, extra[0] if extra else None), "is not a known field")
    if error.validator == "enum" and path and path[-1] == "currency":
        return InvalidInput(_field(path), "must be an ISO 4217 currency code in capitals, such as USD")
    if error.validator == "enum":
        choices = ", ".join(str(v) for v in value)
        return InvalidInput(_field(path), f"must be one of {choices}")
    if error.validator == "format" or (error.validator == "pattern" and path and path[-1] in ("startDate", "endDate")):
        return InvalidInput(_field(path), "must be an RFC 3339 date-time with an offset, e.g. 2025-11-24T00:00:00Z")
    if error.validator == "type":
        return InvalidInput(_field(path), _TYPE_RULES.get(str(value), f"must be of type {value}"))
    template = _RULES.get(str(error.validator))
    return InvalidInput(_field(path), template.format(value) if template else error.message)


_TYPE_RULES = {
    "integer": "must be a whole number",
    "number": "must be a number",
    "string": "must be a string",
    "boolean": "must be true or false",
    "array": "must be a list",
    "object": "must be an object",
}
_RULES = {
    "minimum": "must be at least {}",
    "maximum": "must be at most {}",
    "exclusiveMinimum": "must be greater than {}",
    "exclusiveMaximum": "must be less than {}",
    "minLength": "must be at least {} characters long",
    "maxLength": "must be at most {} characters long",
    "minItems": "must have at least {} items",
    "maxItems": "must have at most {} items",
    "uniqueItems": "must not repeat an item",
    "minProperties": "must have at least {} fields",
    "pattern": "must match {}",
}


def validate_definition(document: object) -> Mapping[str, Any]:
    """Check the document against the campaign schema; the first error becomes ``InvalidInput``."""
    if not isinstance(document, Mapping):
        raise InvalidInput("body", "must be a JSON object")
    # A field's own rule (a bad type value) says more than the type-dependent rules built on it.
    errors = sorted(
        _validator().iter_errors(document),
        key=lambda e: (
            next(iter(e.schema_path), None) == "allOf",
            len(e.absolute_path),
            [str(p) for p in e.schema_path],
        ),
    )
    if errors:
        raise _as_invalid_input(errors[0], document)
    return document


def _decimal(value: Any) -> Decimal:
    # Routers parse JSON numbers straight into Decimal; a float from a Python caller goes via repr.
    return value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))


def _whole(value: Any) -> int | None:
    """A schema-checked integer (``5``, ``5.0`` or ``5e0`` in the JSON) as an int."""
    return None if value is None else int(value)


def _timestamp(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value).astimezone(UTC)
    except ValueError:
        raise InvalidInput(name, "must be an RFC 3339 date-time with an offset, e.g. 2025-11-24T00:00:00Z") from None
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is after the last instant we can store
        raise RuleViolation(f"{name}: is out of range", details={"field": name, "rule": "is out of range"}) from None


def campaign_from_definition(document: object, *, campaign_id: str, created_at: datetime) -> Campaign:
    """Validate a declarative definition and build the campaign it describes."""
    doc = validate_definition(document)
    cond = doc.get("conditions") or {}
    budget = doc.get("budget") or {}
    currency = normalize_currency(cond.get("currency", "USD"), "conditions.currency")
    return Campaign(
        campaign_id=campaign_id,
        name=str(doc["name"]).strip(),
        type=CampaignType(doc["type"]),
        created_at=created_at,
        points=int(doc.get("points", 0)),
        multiplier=_decimal(doc.get("multiplier", 1)),
        conditions=Conditions(
            min_amount=_decimal(cond["minAmount"]) if "minAmount" in cond else None,
            currency=currency,
            categories=frozenset(c.strip().lower() for c in cond.get("categories", ())),
            tiers=frozenset(Tier(t) for t in cond.get("tiers", ())),
            first_order_only=bool(cond.get("firstOrderOnly", False)),
            milestones=frozenset(int(m) for m in cond.get("milestones", ())),
        ),
        starts_at=_timestamp(doc.get("startDate"), "startDate"),
        ends_at=_timestamp(doc.get("endDate"), "endDate"),
        priority=int(doc.get("priority", 0)),
        exclusive=bool(doc.get("exclusive", False)),
        budget=Budget(
            total_points=_whole(budget.get("totalPoints")), per_member_points=_whole(budget.get("perMemberPoints"))
        ),
        description=str(doc.get("description", "")),
    )


# -- commands -------------------------------------------------------------------------------------


def create_campaign(cmd: CreateCampaign, uow: UnitOfWork, clock: Clock) -> Campaign:
    campaign_id = cmd.campaign_id or new_id("cmp")
    if campaign_id == DEFAULT_SIGNUP_CAMPAIGN_ID:
        raise Conflict(f"campaign id {campaign_id} is reserved for the welcome bonus", details={"field": "campaignId"})
    campaign = campaign_from_definition(cmd.definition, campaign_id=campaign_id, created_at=clock())
    uow.campaigns.add(campaign)
    uow.commit()
    return campaign


def end_campaign(cmd: EndCampaign, uow: UnitOfWork, clock: Clock) -> Campaign:
    """End a campaign now. Ending one that has already ended changes nothing."""
    if cmd.campaign_id == DEFAULT_SIGNUP_CAMPAIGN_ID:
        raise Conflict(
            "the welcome bonus campaign is managed by configuration: set ACCRUE_WELCOME_BONUS_POINTS (0 turns it off)",
            details={"campaignId": cmd.campaign_id},
        )
    campaign = uow.campaigns.get(cmd.campaign_id)
    if campaign is None:
        raise NotFound(f"campaign {cmd.campaign_id} not found", details={"field": "campaignId"})
    if campaign.end(clock()):
        uow.campaigns.save(campaign)
        uow.commit()
    return campaign


CAMPAIGN_COMMAND_HANDLERS = {CreateCampaign: create_campaign, EndCampaign: end_campaign}

# -- evaluation -----------------------------------------------------------------------------------


def apply_campaigns(
    uow: UnitOfWork, member: Member, trigger: Trigger, campaigns: Sequence[Campaign], now: datetime
) -> list[Transfer]:
    """Evaluate ``campaigns`` for one trigger and post the awards to ``member`` (not committed).

    Must run inside a write unit of work: the budget left is read from the ledger here and the
    awards are committed with the caller's other writes, so concurrent triggers never overspend.
    """
    requested = {c.campaign_id: requested_points(c, trigger) for c in campaigns}
    live = [c for c in campaigns if requested[c.campaign_id]]
    if not live:
        return []
    transfer_ids = [award_transfer_id(c.campaign_id, key) for c in live for key, _ in requested[c.campaign_id]]
    already = frozenset(uow.ledger.existing_ids(transfer_ids))
    budgets: dict[str, BudgetLeft] = {}
    for c in live:
        total = c.budget.total_points
        per_member = c.budget.per_member_points
        budgets[c.campaign_id] = BudgetLeft(
            total=None if total is None else total - uow.campaigns.drawn(c.campaign_id),
            member=None if per_member is None else per_member - uow.campaigns.drawn(c.campaign_id, trigger.user_id),
        )
    awards = plan_awards(live, trigger, budgets, already)
    if not awards:
        return []
    uow.track(member)
    with member.one_posting():
        return [
            member.credit(
                transfer_id=a.transfer_id,
                points=a.points,
                reason=a.reason,
                reference=a.reference,
                now=now,
                source_account=a.source_account,
            )
            for a in awards
        ]


def signup_campaigns(uow: UnitOfWork, at: datetime, welcome_bonus_points: int) -> list[Campaign]:
    running = uow.campaigns.running(Occasion.SIGNUP, at)
    default = default_signup_campaign(welcome_bonus_points)
    return [default, *running] if default is not None else running


def award_signup_campaigns(uow: UnitOfWork, member: Member, now: datetime, welcome_bonus_points: int) -> list[Transfer]:
    """Signup bonuses for a member being enrolled (the welcome bonus is the default one)."""
    trigger = Trigger(
        occasion=Occasion.SIGNUP,
        user_id=member.user_id,
        key=f"signup:{member.user_id}",
        occurred_at=now,
        tier=member.tier,
        reference=f"member:{member.user_id}",
    )
    return apply_campaigns(uow, member, trigger, signup_campaigns(uow, now, welcome_bonus_points), now)


def award_purchase_campaigns(
    uow: UnitOfWork,
    member: Member,
    *,
    fact_key: str,
    amount: Decimal,
    currency: str,
    categories: Iterable[str],
    base_points: int,
    first_order: bool,
    tier: Tier,
    occurred_at: datetime,
    now: datetime,
) -> list[Transfer]:
    """Purchase multipliers and fixed bonuses for one purchase (an order, or a payment without one).

    ``tier`` is the member's tier before the purchase, like the tier bonus.
    """
    trigger = Trigger(
        occasion=Occasion.PURCHASE,
        user_id=member.user_id,
        key=fact_key,
        occurred_at=occurred_at,
        tier=tier,
        amount=amount,
        currency=currency,
        categories=frozenset(c.lower() for c in categories),
        base_points=base_points,
        first_order=first_order,
        reference=fact_key,
    )
    return apply_campaigns(uow, member, trigger, uow.campaigns.running(Occasion.PURCHASE, occurred_at), now)


# -- event handlers (run by the outbox worker after the fact's commit; they never commit) -------


def _rewardable(uow: UnitOfWork, user_id: str) -> Member | None:
    member = uow.members.get(user_id)
    return None if member is None or member.erased else member


def _award_referral(uow: UnitOfWork, referrer_id: str, referral_id: str, occurred_at: datetime, now: datetime) -> None:
    referrer = _rewardable(uow, referrer_id)
    if referrer is None:
        return
    trigger = Trigger(
        occasion=Occasion.REFERRAL,
        user_id=referrer.user_id,
        key=f"referral:{referral_id}",
        occurred_at=occurred_at,
        tier=referrer.tier,
        reference=f"referral:{referral_id}",
    )
    apply_campaigns(uow, referrer, trigger, uow.campaigns.running(Occasion.REFERRAL, occurred_at), now)


class ReferralSignedUpFacts(Protocol):
    """The fields of the referrals feature's ``ReferralSignedUp`` event that campaigns read."""

    @property
    def referral_id(self) -> str: ...
    @property
    def referrer_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...


class ReferralRewardReviewedFacts(Protocol):
    @property
    def referral_id(self) -> str: ...
    @property
    def referrer_id(self) -> str: ...
    @property
    def decision(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...


def award_referral_bonus(event: ReferralSignedUpFacts, uow: UnitOfWork, clock: Clock) -> None:
    """referral_bonus campaigns reward the referrer, unless a fraud rule held the referral."""
    if event.status == "held":
        return  # awarded if and when an admin approves it (award_referral_bonus_on_approval)
    _award_referral(uow, event.referrer_id, event.referral_id, event.occurred_at, clock())


def award_referral_bonus_on_approval(event: ReferralRewardReviewedFacts, uow: UnitOfWork, clock: Clock) -> None:
    if event.decision != "approved":
        return
    _award_referral(uow, event.referrer_id, event.referral_id, event.occurred_at, clock())


def milestone_campaign_running(uow: UnitOfWork, at: datetime) -> bool:
    """Whether ``award_milestone_bonus`` could pay anything for milestones reached at ``at``: asked
    inside the committing transaction, so that no outbox row is written (and no unit of work run)
    for every milestone while no milestone campaign runs. Campaigns are not retroactive: one
    created later does not pay for milestones reached before it existed."""
    return bool(uow.campaigns.running(Occasion.MILESTONE, at))


def award_milestone_bonus(event: events.MilestonesReached, uow: UnitOfWork, clock: Clock) -> None:
    member = _rewardable(uow, event.user_id)
    if member is None:
        return
    trigger = Trigger(
        occasion=Occasion.MILESTONE,
        user_id=member.user_id,
        # Once per member and milestone, ever: a member who drops below and crosses again is not paid twice.
        key=f"milestone:{member.user_id}",
        occurred_at=event.occurred_at,
        tier=Tier(event.tier),
        milestones=tuple(event.milestones),
        reference=f"milestones:{','.join(str(m) for m in event.milestones)}",
    )
    apply_campaigns(uow, member, trigger, uow.campaigns.running(Occasion.MILESTONE, event.occurred_at), clock())


class PaymentProcessedFacts(Protocol):
    """The fields of the payments feature's ``PaymentProcessed`` event that campaigns read."""

    @property
    def payment_id(self) -> str: ...
    @property
    def amount(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def occurred_at(self) -> datetime: ...


def award_payment_campaigns(event: PaymentProcessedFacts, uow: UnitOfWork, clock: Clock) -> None:
    """A processed payment tied to a member is a purchase without an order: purchase campaigns apply
    to it after the payment commits. It has no items (category conditions never match) and is no
    one's first order; the tier is the member's tier when the handler runs."""
    if event.user_id is None:
        return
    member = _rewardable(uow, event.user_id)
    if member is None:
        return
    amount = Decimal(event.amount)
    award_purchase_campaigns(
        uow,
        member,
        fact_key=f"payment:{event.payment_id}",
        amount=amount,
        currency=event.currency,
        categories=(),
        base_points=points_for(amount, "purchase"),
        first_order=False,
        tier=member.tier,
        occurred_at=event.occurred_at,
        now=clock(),
    )


# -- queries --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignView:
    campaign: Campaign
    status: CampaignStatus
    points_awarded: int
    budget_remaining: int | None


def _view(campaign: Campaign, drawn: int, now: datetime) -> CampaignView:
    total = campaign.budget.total_points
    return CampaignView(
        campaign=campaign,
        status=campaign.status(now),
        points_awarded=drawn,
        budget_remaining=None if total is None else max(total - drawn, 0),
    )


def get_campaign(uow: UnitOfWork, campaign_id: str, now: datetime, welcome_bonus_points: int) -> CampaignView:
    campaign = (
        default_signup_campaign(welcome_bonus_points)
        if campaign_id == DEFAULT_SIGNUP_CAMPAIGN_ID
        else uow.campaigns.get(campaign_id)
    )
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} not found", details={"field": "campaignId"})
    return _view(campaign, uow.campaigns.drawn(campaign_id), now)


def list_campaigns(
    uow: UnitOfWork, limit: int, cursor: str | None, now: datetime, welcome_bonus_points: int
) -> Page[CampaignView]:
    """Newest first; the configured welcome bonus campaign heads the first page (on top of ``limit``)."""
    page = uow.campaigns.list(limit, cursor)
    campaigns = list(page.items)
    default = default_signup_campaign(welcome_bonus_points)
    if cursor is None and default is not None:
        campaigns.insert(0, default)
    drawn = uow.campaigns.drawn_many([c.campaign_id for c in campaigns])
    return Page([_view(c, drawn.get(c.campaign_id, 0), now) for c in campaigns], page.next_cursor)


# event name -> {stable handler name -> handler}; merged into bootstrap.event_handler_table().
# Orders and sign-ups are not here: they are evaluated synchronously (see the module docstring).
CAMPAIGN_EVENT_HANDLERS: dict[str, dict[str, Callable[..., None]]] = {
    "MilestonesReached": {"award_milestone_bonus": award_milestone_bonus},
    "ReferralSignedUp": {"award_referral_bonus": award_referral_bonus},
    "ReferralRewardReviewed": {"award_referral_bonus_on_approval": award_referral_bonus_on_approval},
    "PaymentProcessed": {"award_payment_campaigns": award_payment_campaigns},
}
