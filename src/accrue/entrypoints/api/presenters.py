"""Domain objects -> response models."""

from __future__ import annotations

from accrue.domain.ledger import Transfer
from accrue.domain.members import Member
from accrue.domain.money import format_minor_units
from accrue.domain.notifications import Notification
from accrue.domain.orders import Order
from accrue.entrypoints.api import schemas


def user(member: Member) -> schemas.User:
    return schemas.User(
        user_id=member.user_id,
        email=member.email,
        name=member.name,
        phone=member.phone,
        points=member.balance,
        lifetime=member.lifetime,
        tier=str(member.tier),
        total_spent=format_minor_units(member.total_spent_cents, "USD"),
        referral_code=member.referral_code or None,
        created_at=member.created_at,
    )


def order(o: Order) -> schemas.OrderOut:
    return schemas.OrderOut(
        order_id=o.order_id,
        user_id=o.user_id,
        amount=str(o.amount),
        currency=o.currency,
        points_earned=o.points_earned,
        status=o.status,
        items=[
            schemas.OrderItemOut(sku=i.sku, quantity=i.quantity, price=str(i.price), category=i.category)
            for i in o.items
        ],
        created_at=o.created_at,
    )


def history_entry(t: Transfer) -> schemas.HistoryEntry:
    return schemas.HistoryEntry(
        transaction_id=t.transfer_id,
        type="credit" if t.member_delta > 0 else "debit",
        points=t.member_delta,
        reason=str(t.reason),
        reference=t.reference,
        balance=t.balance_after,
        date=t.created_at,
    )


def notification(n: Notification) -> schemas.NotificationOut:
    return schemas.NotificationOut(
        notification_id=n.notification_id,
        type=n.type,
        user_id=n.user_id,
        subject=n.subject,
        message=schemas.NotificationMessage(
            default=n.message.get("default", ""),
            email=n.message.get("email", ""),
            sms=n.message.get("sms", ""),
        ),
        old_tier=n.old_tier,
        new_tier=n.new_tier,
        milestones=list(n.milestones) if n.milestones else None,
        created_at=n.created_at,
    )
