"""Referral signups, reward reviews and the referrer's notification.

A signup enrols the new member (the loyalty core's ``enrol``: welcome bonus, UserCreated) and
records the referral, the reward and the referrer's counters in the same unit of work: either all
of it happens or none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from accrue.domain.commands import Command
from accrue.domain.errors import Conflict, NotFound, RuleViolation
from accrue.domain.ids import new_id
from accrue.domain.members import Member
from accrue.domain.money import format_minor_units
from accrue.domain.notifications import Notification
from accrue.domain.referrals import (
    Referral,
    ReferralRewardReviewed,
    ReferralSignedUp,
    ReferrerSummary,
    ReviewDecision,
    ReviewReferralReward,
    RewardStatus,
    SignUpWithReferral,
    VelocityRule,
    email_identity,
    normalize_referral_code,
    reward_cents_for,
)
from accrue.ports import Page, TemplateRenderer, UnitOfWork
from accrue.service_layer.handlers import Settings, enrol
from accrue.service_layer.notifications import StoreNotification, queue_for_channels, render_message

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class SignupResult:
    member: Member
    referral: Referral
    referral_count: int
    total_rewards_cents: int


def sign_up_with_referral(
    cmd: SignUpWithReferral,
    uow: UnitOfWork,
    clock: Clock,
    settings: Settings,
    referral_velocity: VelocityRule,
) -> SignupResult:
    now = clock()
    code = normalize_referral_code(cmd.referral_code)
    referrer = uow.members.get_by_referral_code(code) if code else None
    if referrer is None or referrer.erased:
        raise NotFound("referralCode: no member has this referral code", details={"field": "referralCode"})
    if cmd.user_id == referrer.user_id:
        raise RuleViolation(
            "referralCode: a member cannot use their own referral code",
            details={"field": "referralCode", "rule": "self-referral"},
        )
    if uow.members.get(cmd.user_id) is not None:
        raise Conflict(
            "userId: is already a member; only new members can be referred",
            details={"field": "userId", "rule": "must be a new member"},
        )
    if cmd.email:
        identity = email_identity(cmd.email)
        if referrer.email and email_identity(referrer.email) == identity:
            raise RuleViolation(
                "email: is the referrer's own email address (self-referral)",
                details={"field": "email", "rule": "self-referral"},
            )
        if uow.referrals.member_with_email_identity(identity) is not None:
            raise RuleViolation(
                "email: is already used by another member (compared without case, +tags and gmail dots)",
                details={"field": "email", "rule": "already used"},
            )
    member = enrol(
        uow,
        user_id=cmd.user_id,
        email=cmd.email,
        name=cmd.name,
        phone=None,
        now=now,
        welcome_bonus_points=settings.welcome_bonus_points,
    )
    count = uow.referrals.increment_referral_count(referrer.user_id)
    reward_cents = reward_cents_for(count)
    recent = uow.referrals.count_since(referrer.user_id, now - timedelta(seconds=referral_velocity.window_seconds))
    status = RewardStatus.HELD if referral_velocity.holds(recent + 1) else RewardStatus.PENDING
    referral = Referral(
        referral_id=new_id("ref"),
        referrer_id=referrer.user_id,
        referred_id=member.user_id,
        referral_code=code,
        referral_number=count,
        reward_cents=reward_cents,
        status=status,
        created_at=now,
    )
    uow.referrals.add(referral)
    total = uow.referrals.add_to_total_rewards(referrer.user_id, reward_cents)
    uow.emit(
        ReferralSignedUp(
            referral_id=referral.referral_id,
            referrer_id=referrer.user_id,
            referred_id=member.user_id,
            referral_code=code,
            referral_count=count,
            reward_cents=reward_cents,
            status=str(status),
            total_rewards_cents=total,
        )
    )
    uow.commit()
    return SignupResult(member=member, referral=referral, referral_count=count, total_rewards_cents=total)


def review_referral_reward(cmd: ReviewReferralReward, uow: UnitOfWork, clock: Clock) -> Referral:
    """Approve (held -> pending) or reject (held -> rejected) a reward; a repeated decision is a no-op."""
    referral = uow.referrals.get(cmd.referral_id)
    if referral is None:
        raise NotFound(f"reward {cmd.referral_id} not found", details={"field": "id"})
    before = referral.status
    now = clock()
    if cmd.decision is ReviewDecision.APPROVED:
        changed = referral.approve(by=cmd.reviewed_by, now=now)
    else:
        changed = referral.reject(by=cmd.reviewed_by, now=now)
    if not changed:
        return referral
    uow.referrals.save_review(referral, expected_status=before)
    if referral.status is RewardStatus.REJECTED:
        # A rejected reward is never owed: it leaves the referrer's total in the same transaction.
        uow.referrals.add_to_total_rewards(referral.referrer_id, -referral.reward_cents)
    uow.emit(
        ReferralRewardReviewed(
            referral_id=referral.referral_id,
            referrer_id=referral.referrer_id,
            decision=str(cmd.decision),
            reward_cents=referral.reward_cents,
            reviewed_by=cmd.reviewed_by,
        )
    )
    uow.commit()
    return referral


# -- read side ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReferrerView:
    summary: ReferrerSummary
    referrals: Page[Referral]


def referrer_view(uow: UnitOfWork, referrer_id: str, limit: int, cursor: str | None) -> ReferrerView:
    member = uow.members.get(referrer_id)
    summary = uow.referrals.summary(referrer_id) if member is not None and not member.erased else None
    if summary is None:
        raise NotFound(f"referrer {referrer_id} not found", details={"field": "referrerId"})
    return ReferrerView(summary=summary, referrals=uow.referrals.list_for_referrer(referrer_id, limit, cursor))


# -- events ---------------------------------------------------------------------------------------


def notify_referral_signed_up(
    event: ReferralSignedUp,
    uow: UnitOfWork,
    renderer: TemplateRenderer,
    clock: Clock,
    store_notification: StoreNotification = queue_for_channels,
) -> None:
    context = {
        "referred_id": event.referred_id,
        "reward_amount": format_minor_units(event.reward_cents, "USD"),
        "referral_count": event.referral_count,
        "total_rewards": format_minor_units(event.total_rewards_cents, "USD"),
        "held": event.status == str(RewardStatus.HELD),
    }
    subject, message = render_message(renderer, "referral_signup", context)
    store_notification(
        uow,
        Notification(
            notification_id=new_id("ntf"),
            event_id=event.event_id,
            type="referral_signup",
            user_id=event.referrer_id,
            subject=subject,
            message=message,
            created_at=clock(),
            data={
                "referralId": event.referral_id,
                "referredUserId": event.referred_id,
                "rewardAmount": context["reward_amount"],
                "referralCount": event.referral_count,
                "status": event.status,
            },
        ),
        f"{event.event_id}:referral_signup",
    )


COMMAND_HANDLERS: dict[type[Command], Any] = {
    SignUpWithReferral: sign_up_with_referral,
    ReviewReferralReward: review_referral_reward,
}
