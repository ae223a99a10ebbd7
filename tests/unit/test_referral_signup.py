"""Signing up with a referral code, through the message bus on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.domain.errors import Conflict, NotFound, RuleViolation
from accrue.domain.members import Member
from accrue.domain.referrals import (
    ReviewDecision,
    ReviewReferralReward,
    RewardStatus,
    SignUpWithReferral,
)
from accrue.service_layer.referrals import SignupResult, referrer_view
from tests.conftest import make_settings


class ShiftedClock:
    """The wall clock moved by ``offset``: tests jump ahead in time, and the outbox (stamped with the
    wall clock) stays due for the worker, which reads this clock."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def app(tmp_path: Path, clock: ShiftedClock) -> Iterator[Application]:
    application = bootstrap(make_settings(tmp_path, referral_velocity_max_signups=3), clock=clock)
    yield application
    application.close()


def referrer(app: Application, email: str = "ref.errer+main@gmail.com") -> Member:
    member: Member = app.bus.handle(commands.CreateMember(email=email, name="Referrer", user_id="referrer"))
    return member


def sign_up(app: Application, user_id: str, code: str, email: str | None = None) -> SignupResult:
    result: SignupResult = app.bus.handle(SignUpWithReferral(user_id=user_id, referral_code=code, email=email))
    return result


def test_a_signup_enrols_the_member_and_records_a_pending_ten_dollar_reward(app: Application) -> None:
    owner = referrer(app)
    result = sign_up(app, "new-1", owner.referral_code.lower(), "new1@example.com")

    assert result.referral.status is RewardStatus.PENDING
    assert result.referral.reward_cents == 1000
    assert (result.referral_count, result.total_rewards_cents) == (1, 1000)
    member = app.bus.query(lambda uow: uow.members.get("new-1"))
    assert member is not None and member.balance == 100  # the core's welcome bonus
    assert member.referral_code and member.referral_code != owner.referral_code
    view = app.bus.query(referrer_view, "referrer", 10, None)
    assert (view.summary.referral_count, view.summary.total_rewards_cents, view.summary.pending_cents) == (
        1,
        1000,
        1000,
    )
    assert [r.referred_id for r in view.referrals.items] == ["new-1"]


def test_the_referrer_is_notified_of_each_signup_through_the_outbox(app: Application) -> None:
    owner = referrer(app)
    sign_up(app, "new-1", owner.referral_code)
    sign_up(app, "new-2", owner.referral_code)
    app.worker.drain()
    page = app.bus.query(lambda uow: uow.notifications.list("referrer", 10, None))
    signups = [n for n in page.items if n.type == "referral_signup"]
    assert len(signups) == 2
    assert signups[0].data["rewardAmount"] == "10.00"
    assert "new-2" in signups[0].message["email"]
    assert set(signups[0].message) == {"default", "email", "sms"}


def test_counters_exist_from_enrolment(app: Application) -> None:
    referrer(app)
    view = app.bus.query(referrer_view, "referrer", 10, None)
    assert (view.summary.referral_count, view.summary.total_rewards_cents) == (0, 0)


def _nothing_written(app: Application, user_id: str) -> None:
    assert app.bus.query(lambda uow: uow.members.get(user_id)) is None
    view = app.bus.query(referrer_view, "referrer", 10, None)
    assert (view.summary.referral_count, view.summary.total_rewards_cents) == (0, 0)


def test_an_unknown_code_is_not_found_and_writes_nothing(app: Application) -> None:
    referrer(app)
    with pytest.raises(NotFound) as caught:
        sign_up(app, "new-1", "ZZZZ9999")
    assert caught.value.details["field"] == "referralCode"
    _nothing_written(app, "new-1")


def test_an_existing_member_cannot_be_referred(app: Application) -> None:
    owner = referrer(app)
    app.bus.handle(commands.CreateMember(email="old@example.com", name="Old", user_id="old"))
    with pytest.raises(Conflict) as caught:
        sign_up(app, "old", owner.referral_code)
    assert caught.value.details["field"] == "userId"
    view = app.bus.query(referrer_view, "referrer", 10, None)
    assert view.summary.referral_count == 0


def test_the_referrers_own_code_is_a_self_referral(app: Application) -> None:
    owner = referrer(app)
    with pytest.raises(RuleViolation) as caught:
        sign_up(app, "referrer", owner.referral_code)
    assert caught.value.details["rule"] == "self-referral"


@pytest.mark.parametrize("email", ["REF.ERRER+MAIN@gmail.com", "referrer@googlemail.com", "r.e.f.errer+x@gmail.com"])
def test_the_referrers_email_in_any_spelling_is_a_self_referral(app: Application, email: str) -> None:
    owner = referrer(app)
    with pytest.raises(RuleViolation) as caught:
        sign_up(app, "new-1", owner.referral_code, email)
    assert caught.value.details == {"field": "email", "rule": "self-referral"}
    _nothing_written(app, "new-1")


@pytest.mark.parametrize("email", ["Someone@Example.com", "someone+promo@example.com"])
def test_an_email_another_member_uses_is_refused(app: Application, email: str) -> None:
    owner = referrer(app)
    app.bus.handle(commands.CreateMember(email="someone@example.com", name="Someone", user_id="someone"))
    with pytest.raises(RuleViolation) as caught:
        sign_up(app, "new-1", owner.referral_code, email)
    assert caught.value.details == {"field": "email", "rule": "already used"}
    _nothing_written(app, "new-1")


def test_signups_above_the_velocity_limit_are_held_and_an_admin_decides(app: Application, clock: ShiftedClock) -> None:
    owner = referrer(app)
    statuses = []
    for n in range(1, 6):
        clock.offset += timedelta(minutes=1)
        statuses.append(sign_up(app, f"new-{n}", owner.referral_code).referral.status)
    assert statuses == [RewardStatus.PENDING] * 3 + [RewardStatus.HELD] * 2
    view = app.bus.query(referrer_view, "referrer", 10, None)
    assert (view.summary.total_rewards_cents, view.summary.held_cents) == (5500, 2500)  # $10 x4 + $15

    held = app.bus.query(lambda uow: uow.referrals.list_held(10, None)).items
    approved = app.bus.handle(
        ReviewReferralReward(referral_id=held[0].referral_id, decision=ReviewDecision.APPROVED, reviewed_by="admin")
    )
    rejected = app.bus.handle(
        ReviewReferralReward(referral_id=held[1].referral_id, decision=ReviewDecision.REJECTED, reviewed_by="admin")
    )
    assert approved.status is RewardStatus.PENDING
    assert rejected.status is RewardStatus.REJECTED
    # Repeating a decision changes nothing; reversing one is refused.
    again = app.bus.handle(
        ReviewReferralReward(referral_id=held[1].referral_id, decision=ReviewDecision.REJECTED, reviewed_by="admin")
    )
    assert again.status is RewardStatus.REJECTED
    with pytest.raises(Conflict):
        app.bus.handle(
            ReviewReferralReward(referral_id=held[1].referral_id, decision=ReviewDecision.APPROVED, reviewed_by="admin")
        )

    view = app.bus.query(referrer_view, "referrer", 10, None)
    assert view.summary.referral_count == 5
    assert (view.summary.total_rewards_cents, view.summary.pending_cents, view.summary.held_cents) == (4000, 4000, 0)


def test_the_velocity_window_forgets_old_signups(app: Application, clock: ShiftedClock) -> None:
    owner = referrer(app)
    for n in range(1, 4):
        sign_up(app, f"new-{n}", owner.referral_code)
    clock.offset += timedelta(hours=24, seconds=1)
    assert sign_up(app, "new-4", owner.referral_code).referral.status is RewardStatus.PENDING


def test_reviewing_an_unknown_reward_is_not_found(app: Application) -> None:
    with pytest.raises(NotFound):
        app.bus.handle(
            ReviewReferralReward(referral_id="ref_missing", decision=ReviewDecision.APPROVED, reviewed_by="admin")
        )
