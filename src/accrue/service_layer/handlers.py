"""Command and event handlers of the loyalty core: one ``verb_noun`` function each.

Handlers hold no business rules of their own beyond orchestration: the rules live in the domain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from accrue.domain import commands, events
from accrue.domain.errors import Conflict, InvalidInput, NotFound, RuleViolation
from accrue.domain.ids import new_id
from accrue.domain.ledger import Reason
from accrue.domain.loyalty import Tier
from accrue.domain.members import Member, new_referral_code
from accrue.domain.money import (
    normalize_currency,
    require_non_negative,
    require_positive,
    to_minor_units,
)
from accrue.domain.orders import LineItem, Order
from accrue.ports import UnitOfWork
from accrue.service_layer import campaigns

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Settings:
    """What the core handlers need from configuration (kept apart from the pydantic settings)."""

    welcome_bonus_points: int = 100


# Results cross to the HTTP process pickled (``entrypoints/writer.py``): without slots a dataclass is
# pickled and unpickled by C code; with slots, by Python functions per field.


@dataclass(frozen=True)
class TransactionResult:
    transaction_id: str
    points_earned: int
    total_points: int
    tier: Tier


@dataclass(frozen=True)
class RedeemResult:
    transaction_id: str
    points_redeemed: int
    balance: int


def enrol(
    uow: UnitOfWork,
    *,
    user_id: str | None,
    email: str | None,
    name: str | None,
    phone: str | None,
    now: datetime,
    welcome_bonus_points: int,
    signup_campaigns: bool = True,
) -> Member:
    """Add a member (unique email, unique referral code) and award the signup campaigns.

    The welcome bonus is the default signup_bonus campaign (``welcome_bonus_points``; 0 turns it
    off). Signup campaigns are evaluated here, inside the enrolment's unit of work, so the response
    already shows their points. ``signup_campaigns=False``: enrolled on the way (seed 000), no bonus.
    """
    if email is not None and uow.members.get_by_email(email) is not None:
        raise Conflict("a member with this email already exists", details={"field": "email"})
    if user_id is not None and uow.members.get(user_id) is not None:
        raise Conflict("a member with this userId already exists", details={"field": "userId"})
    member_id = user_id or new_id("usr")
    code = new_referral_code()
    while uow.members.get_by_referral_code(code) is not None:  # 30^8 codes: a clash is rare
        code = new_referral_code()
    member = Member(
        user_id=member_id,
        email=email.strip() if email else None,
        name=name,
        phone=phone,
        created_at=now,
        referral_code=code,
    )
    uow.members.add(member)
    uow.track(member)
    uow.emit(events.UserCreated(user_id=member_id, email=member.email or "", referral_code=code))
    if signup_campaigns:
        campaigns.award_signup_campaigns(uow, member, now, welcome_bonus_points)
    return member


def create_member(cmd: commands.CreateMember, uow: UnitOfWork, clock: Clock, settings: Settings) -> Member:
    member = enrol(
        uow,
        user_id=cmd.user_id,
        email=cmd.email,
        name=cmd.name,
        phone=cmd.phone,
        now=clock(),
        welcome_bonus_points=settings.welcome_bonus_points,
    )
    uow.commit()
    return member


def record_transaction(
    cmd: commands.RecordTransaction, uow: UnitOfWork, clock: Clock, settings: Settings
) -> TransactionResult:
    amount = require_non_negative(cmd.amount, "transactionAmount")
    now = clock()
    member = uow.members.get(cmd.member_id)
    if member is None:
        # Seed 000 enrols an unknown member on first transaction; we keep that behaviour.
        member = enrol(
            uow,
            user_id=cmd.member_id,
            email=cmd.email,
            name=None,
            phone=None,
            now=now,
            welcome_bonus_points=0,
            signup_campaigns=False,
        )
    uow.track(member)
    transaction_id = cmd.transaction_id or new_id("txn")
    cents = to_minor_units(amount.quantize(Decimal("0.01")), "USD")
    transfers = member.record_purchase(
        transfer_id=transaction_id,
        amount=amount,
        transaction_type=cmd.transaction_type,
        reference=f"transaction:{transaction_id}",
        now=now,
        amount_cents=cents,
    )
    uow.commit()
    return TransactionResult(
        transaction_id=transaction_id,
        points_earned=sum(t.amount for t in transfers),
        total_points=member.balance,
        tier=member.tier,
    )


def create_order(cmd: commands.CreateOrder, uow: UnitOfWork, clock: Clock) -> Order:
    amount = require_positive(cmd.amount, "amount")
    currency = normalize_currency(cmd.currency)
    try:
        amount_minor = to_minor_units(amount, currency)
    except InvalidInput as exc:
        # Each value is well formed; it is the pair (amount, currency) that a rule refuses.
        raise RuleViolation(exc.message, details=exc.details) from None
    for index, item in enumerate(cmd.items):
        if item.quantity <= 0:
            raise InvalidInput(f"items[{index}].quantity", "must be a positive whole number")
        require_non_negative(item.price, f"items[{index}].price")
    member = uow.members.get(cmd.user_id)
    if member is None:
        raise NotFound(f"user {cmd.user_id} not found", details={"field": "userId"})
    uow.track(member)
    now = clock()
    order_id = cmd.order_id or new_id("ord")
    if uow.orders.get(order_id) is not None:
        raise Conflict("an order with this orderId already exists", details={"field": "orderId"})
    first_order = uow.orders.count_for_user(member.user_id) == 0
    tier_before = member.tier
    with member.one_posting():
        transfers = member.record_purchase(
            transfer_id=f"order:{order_id}",
            amount=amount,
            transaction_type="purchase",
            reference=f"order:{order_id}",
            now=now,
            amount_cents=amount_minor if currency == "USD" else None,
        )
        base_points = transfers[0].amount if transfers and transfers[0].reason is Reason.EARN else 0
        # Purchase campaigns run in the order's own unit of work, so pointsEarned includes them.
        transfers += campaigns.award_purchase_campaigns(
            uow,
            member,
            fact_key=f"order:{order_id}",
            amount=amount,
            currency=currency,
            categories={i.category.strip().lower() for i in cmd.items if i.category},
            base_points=base_points,
            first_order=first_order,
            tier=tier_before,
            occurred_at=now,
            now=now,
        )
    order = Order(
        order_id=order_id,
        user_id=member.user_id,
        amount=amount,
        currency=currency,
        amount_minor=amount_minor,
        status="confirmed",
        points_earned=sum(t.amount for t in transfers),
        created_at=now,
        items=tuple(LineItem(sku=i.sku, quantity=i.quantity, price=i.price, category=i.category) for i in cmd.items),
    )
    uow.orders.add(order)
    uow.emit(
        events.OrderCreated(
            order_id=order_id,
            user_id=member.user_id,
            amount=str(amount),
            currency=currency,
            categories=order.categories,
            base_points=base_points,
            first_order=first_order,
        )
    )
    uow.commit()
    return order


def redeem_points(cmd: commands.RedeemPoints, uow: UnitOfWork, clock: Clock) -> RedeemResult:
    member = uow.members.get(cmd.user_id)
    if member is None or member.erased:
        raise NotFound(f"user {cmd.user_id} not found", details={"field": "userId"})
    uow.track(member)
    transfer_id = cmd.transfer_id or new_id("txn")
    transfer = member.redeem(
        transfer_id=transfer_id,
        points=cmd.points,
        reference=f"redemption:{cmd.reason or 'unspecified'}",
        now=clock(),
    )
    uow.commit()
    return RedeemResult(transaction_id=transfer.transfer_id, points_redeemed=cmd.points, balance=member.balance)


def award_points(cmd: commands.AwardPoints, uow: UnitOfWork, clock: Clock) -> int:
    """Returns the points awarded (0 when this transfer id was already posted)."""
    if uow.ledger.get(cmd.transfer_id) is not None:
        return 0
    member = uow.members.get(cmd.user_id)
    if member is None:
        raise NotFound(f"user {cmd.user_id} not found", details={"field": "userId"})
    uow.track(member)
    member.credit(
        transfer_id=cmd.transfer_id,
        points=cmd.points,
        reason=Reason.ADJUST,
        reference=cmd.reason,
        now=clock(),
    )
    uow.commit()
    return cmd.points


def review_tiers(cmd: commands.ReviewTiers, uow: UnitOfWork, uow_factory: Callable[[], UnitOfWork]) -> int:
    """Re-derive every member's tier; returns how many changed. One short transaction per member."""
    changed = 0
    ids = list(uow.members.iter_ids())
    uow.rollback()
    for user_id in ids:
        with uow_factory() as member_uow:
            member = member_uow.members.get(user_id)
            if member is None:
                continue
            before = member.tier
            member.review_tier()
            if member.tier != before:
                member_uow.track(member)
                changed += 1
                member_uow.commit()
    return changed


COMMAND_HANDLERS = {
    commands.CreateMember: create_member,
    commands.RecordTransaction: record_transaction,
    commands.CreateOrder: create_order,
    commands.RedeemPoints: redeem_points,
    commands.AwardPoints: award_points,
    commands.ReviewTiers: review_tiers,
}
