"""Referral signups, the referrer's view, and the review of held rewards."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Path, Query
from pydantic import Field

from accrue.bootstrap import Application
from accrue.domain.errors import NotFound
from accrue.domain.money import format_minor_units
from accrue.domain.referrals import Referral, ReviewDecision, ReviewReferralReward, SignUpWithReferral
from accrue.entrypoints.api import schemas
from accrue.entrypoints.api.routing import application, router
from accrue.entrypoints.api.schemas import ApiModel, ClientId, Email, Envelope, ResponseModel, ok
from accrue.entrypoints.api.security import Admin, Reader, Writer
from accrue.service_layer.referrals import SignupResult, referrer_view

api = router()
App = Annotated[Application, Depends(application)]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ReferrerIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=schemas.ID_PATTERN, alias="referrerId")]
RewardIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$", alias="id")]
Amount = Annotated[str, Field(pattern=r"^\d+\.\d{2}$", description="US dollars with two decimals")]


class SignupRequest(ApiModel):
    user_id: ClientId = Field(description="The new member's id; an existing member cannot be referred")
    referral_code: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9 \-]+$",
        description="The referrer's code; case, spaces and hyphens are ignored",
    )
    email: Email | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)


class SignupResponse(ResponseModel):
    message: str
    user_id: str
    referral_code: str = Field(description="The new member's own referral code")
    referrer_id: str
    referral_id: str
    reward_amount: Amount
    reward_status: Literal["pending", "held"]
    referral_count: int = Field(description="The referrer's referral count after this signup")


class ReferralOut(ResponseModel):
    referral_id: str
    user_id: str = Field(description="The referred member")
    referral_number: int
    reward_amount: Amount
    status: Literal["pending", "held", "paid", "rejected"]
    review_decision: Literal["approved", "rejected"] | None = None
    payout_run_id: str | None = None
    paid_at: datetime | None = None
    created_at: datetime


class ReferrerOut(ResponseModel):
    referrer_id: str
    referral_code: str
    referral_count: int
    total_rewards: Amount = Field(description="Every reward earned and not rejected")
    pending_rewards: Amount
    held_rewards: Amount
    paid_rewards: Amount
    referrals: list[ReferralOut]
    next_cursor: str | None = None


class RewardOut(ReferralOut):
    referrer_id: str
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None


class HeldRewardPage(ResponseModel):
    rewards: list[RewardOut]
    next_cursor: str | None = None


def _referral(r: Referral) -> ReferralOut:
    return ReferralOut(
        referral_id=r.referral_id,
        user_id=r.referred_id,
        referral_number=r.referral_number,
        reward_amount=format_minor_units(r.reward_cents, "USD"),
        status=r.status.value,
        review_decision=r.review_decision.value if r.review_decision else None,
        payout_run_id=r.payout_run_id,
        paid_at=r.paid_at,
        created_at=r.created_at,
    )


def _reward(r: Referral) -> RewardOut:
    return RewardOut(
        **_referral(r).model_dump(),
        referrer_id=r.referrer_id,
        reviewed_by=r.reviewed_by,
        reviewed_at=r.reviewed_at,
    )


@api.post("/signup", status_code=201, response_model=Envelope[SignupResponse], tags=["referrals"])
def signup(body: SignupRequest, app: App, principal: Writer) -> dict[str, object]:
    """Enrol a new member referred by a code, and record the referral and its reward, atomically."""
    result: SignupResult = app.bus.handle(
        SignUpWithReferral(
            user_id=body.user_id,
            referral_code=body.referral_code,
            email=str(body.email) if body.email else None,
            name=body.name,
        )
    )
    referral = result.referral
    return ok(
        SignupResponse(
            message="Signup successful"
            if referral.status == "pending"
            else "Signup successful; reward held for review",
            user_id=result.member.user_id,
            referral_code=result.member.referral_code,
            referrer_id=referral.referrer_id,
            referral_id=referral.referral_id,
            reward_amount=format_minor_units(referral.reward_cents, "USD"),
            reward_status="held" if referral.status == "held" else "pending",
            referral_count=result.referral_count,
        )
    )


@api.get("/referrals/rewards/held", response_model=Envelope[HeldRewardPage], tags=["referrals"])
def list_held_rewards(app: App, principal: Admin, limit: Limit = 50, cursor: Cursor = None) -> dict[str, object]:
    """Rewards a fraud rule held for review, oldest first."""
    page = app.bus.query(lambda uow: uow.referrals.list_held(limit, cursor))
    return ok(HeldRewardPage(rewards=[_reward(r) for r in page.items], next_cursor=page.next_cursor))


@api.post("/referrals/rewards/{id}/approve", response_model=Envelope[RewardOut], tags=["referrals"])
def approve_reward(reward_id: RewardIdPath, app: App, principal: Admin) -> dict[str, object]:
    """A held reward becomes pending (paid by the next run); approving it again changes nothing."""
    referral = app.bus.handle(
        ReviewReferralReward(referral_id=reward_id, decision=ReviewDecision.APPROVED, reviewed_by=principal.sub)
    )
    return ok(_reward(referral))


@api.post("/referrals/rewards/{id}/reject", response_model=Envelope[RewardOut], tags=["referrals"])
def reject_reward(reward_id: RewardIdPath, app: App, principal: Admin) -> dict[str, object]:
    """A held reward is never paid and leaves the referrer's total; rejecting it again changes nothing."""
    referral = app.bus.handle(
        ReviewReferralReward(referral_id=reward_id, decision=ReviewDecision.REJECTED, reviewed_by=principal.sub)
    )
    return ok(_reward(referral))


@api.get("/referrals/{referrerId}", response_model=Envelope[ReferrerOut], tags=["referrals"])
def get_referrer(
    referrer_id: ReferrerIdPath, app: App, principal: Reader, limit: Limit = 20, cursor: Cursor = None
) -> dict[str, object]:
    """A referrer's counters and referrals (newest first). Members see only their own."""
    if not principal.can_see(referrer_id):
        raise NotFound(f"referrer {referrer_id} not found", details={"field": "referrerId"})
    view = app.bus.query(referrer_view, referrer_id, limit, cursor)
    summary = view.summary
    return ok(
        ReferrerOut(
            referrer_id=summary.referrer_id,
            referral_code=summary.referral_code,
            referral_count=summary.referral_count,
            total_rewards=format_minor_units(summary.total_rewards_cents, "USD"),
            pending_rewards=format_minor_units(summary.pending_cents, "USD"),
            held_rewards=format_minor_units(summary.held_cents, "USD"),
            paid_rewards=format_minor_units(summary.paid_cents, "USD"),
            referrals=[_referral(r) for r in view.referrals.items],
            next_cursor=view.referrals.next_cursor,
        )
    )
