"""Referrals: who referred whom, the cash reward it earned, and the rules that refuse abuse.

Rewards are integer cents. The amount depends on the referrer's referral count *after* the signup
(SPEC section 3): the 1st to 4th referral earn $10, the 5th to 9th $15, the 10th to 24th $20 and
every one from the 25th on $25.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from accrue.domain.commands import Command
from accrue.domain.errors import Conflict, InvalidInput
from accrue.domain.events import Event
from accrue.domain.members import normalize_email

# (first referral number of the step, reward in cents), highest step first.
REWARD_STEPS: tuple[tuple[int, int], ...] = ((25, 2500), (10, 2000), (5, 1500), (1, 1000))

# Mail providers that ignore dots in the local part, and the one domain they all deliver to.
DOTLESS_DOMAINS: dict[str, str] = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def reward_cents_for(referral_count: int) -> int:
    """The cash reward of the referral that brought the referrer's count to ``referral_count``."""
    if referral_count < 1:
        raise InvalidInput("referralCount", "must be at least 1")
    for first, cents in REWARD_STEPS:
        if referral_count >= first:
            return cents
    raise AssertionError("unreachable: the lowest step starts at 1")


def email_identity(email: str) -> str:
    """The mailbox an address delivers to, so that aliases of one person compare equal.

    Case-insensitive; a ``+tag`` in the local part is ignored; for gmail.com and googlemail.com,
    dots in the local part are ignored too and both domains are one. The SQLite adapter mirrors this
    rule in an indexed column; a property test keeps the two in agreement.
    """
    address = normalize_email(email)
    local, at, domain = address.partition("@")
    if not at:
        return address
    local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        return local.replace(".", "") + "@" + DOTLESS_DOMAINS[domain]
    return local + "@" + domain


def normalize_referral_code(code: str) -> str:
    """Codes are read aloud and retyped: accept any case, spaces and hyphens."""
    return "".join(ch for ch in code.upper() if ch not in " -\t")


class RewardStatus(enum.StrEnum):
    PENDING = "pending"  # earned; paid by the next monthly payout run
    HELD = "held"  # earned, but a fraud rule asks an admin to review it first
    PAID = "paid"
    REJECTED = "rejected"  # an admin refused a held reward; it is never paid


class ReviewDecision(enum.StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class VelocityRule:
    """More than ``max_signups`` signups for one referrer within ``window_seconds`` are held.

    ``max_signups == 0`` disables the rule.
    """

    max_signups: int = 50
    window_seconds: int = 86_400

    def holds(self, signups_in_window_including_this: int) -> bool:
        return self.max_signups > 0 and signups_in_window_including_this > self.max_signups


@dataclass(slots=True)
class Referral:
    referral_id: str
    referrer_id: str
    referred_id: str
    referral_code: str
    referral_number: int  # the referrer's referral count after this signup
    reward_cents: int
    status: RewardStatus
    created_at: datetime
    payout_run_id: str | None = None
    paid_at: datetime | None = None
    review_decision: ReviewDecision | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None

    def approve(self, *, by: str, now: datetime) -> bool:
        """A held reward becomes payable. False when it was already approved (a retried approval)."""
        if self.review_decision is ReviewDecision.APPROVED:
            return False
        if self.status is not RewardStatus.HELD:
            raise Conflict(
                f"reward {self.referral_id} is {self.status}; only a held reward can be approved",
                details={"field": "status", "status": str(self.status)},
            )
        self.status = RewardStatus.PENDING
        self._reviewed(ReviewDecision.APPROVED, by, now)
        return True

    def reject(self, *, by: str, now: datetime) -> bool:
        """A held reward is refused for good. False when it was already rejected."""
        if self.status is RewardStatus.REJECTED:
            return False
        if self.status is not RewardStatus.HELD:
            raise Conflict(
                f"reward {self.referral_id} is {self.status}; only a held reward can be rejected",
                details={"field": "status", "status": str(self.status)},
            )
        self.status = RewardStatus.REJECTED
        self._reviewed(ReviewDecision.REJECTED, by, now)
        return True

    def _reviewed(self, decision: ReviewDecision, by: str, now: datetime) -> None:
        self.review_decision = decision
        self.reviewed_by = by
        self.reviewed_at = now


@dataclass(frozen=True, slots=True)
class ReferrerSummary:
    referrer_id: str
    referral_code: str
    referral_count: int
    total_rewards_cents: int  # every reward earned and not rejected (pending + held + paid)
    pending_cents: int
    held_cents: int
    paid_cents: int


# -- events ---------------------------------------------------------------------------------------
# Registered by class name (Event.__init_subclass__): other features subscribe to them by name in
# bootstrap.event_handler_table(), e.g. a campaign's referral_bonus on "ReferralSignedUp".


@dataclass(frozen=True, kw_only=True)
class ReferralSignedUp(Event):
    referral_id: str
    referrer_id: str
    referred_id: str
    referral_code: str
    referral_count: int
    reward_cents: int
    status: str
    total_rewards_cents: int


@dataclass(frozen=True, kw_only=True)
class ReferralRewardReviewed(Event):
    referral_id: str
    referrer_id: str
    decision: str
    reward_cents: int
    reviewed_by: str


# -- commands -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SignUpWithReferral(Command):
    """Enrol a new member referred by the owner of ``referral_code``."""

    user_id: str
    referral_code: str
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReviewReferralReward(Command):
    referral_id: str
    decision: ReviewDecision
    reviewed_by: str
