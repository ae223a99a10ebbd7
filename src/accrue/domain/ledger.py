"""Double-entry points ledger: every change is one balanced, immutable transfer between two accounts.

A transfer moves ``amount`` points from ``debit_account`` to ``credit_account``. Member accounts may
never go negative; the program's issuing account is the source of every point and goes negative by
exactly the number of points in circulation, so the sum over all accounts is always zero.
A correction is a reversing transfer, never an edit. The transfer id is the idempotency key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from accrue.domain.errors import InvalidInput


class Reason(enum.StrEnum):
    EARN = "earn"
    TIER_BONUS = "tier_bonus"
    WELCOME_BONUS = "welcome_bonus"
    BONUS = "bonus"
    CAMPAIGN = "campaign"
    REDEEM = "redeem"
    REVERSE = "reverse"
    ADJUST = "adjust"
    EXPIRE = "expire"


# Reasons whose points count toward lifetime (tier and milestone) totals. Status is earned by
# activity: a sign-up gift is spendable but does not move a member toward a tier or milestone.
QUALIFYING_REASONS = frozenset({Reason.EARN, Reason.TIER_BONUS, Reason.BONUS, Reason.CAMPAIGN, Reason.ADJUST})

PROGRAM_ISSUED = "program:issued"
PROGRAM_REDEEMED = "program:redeemed"
PROGRAM_EXPIRED = "program:expired"


def member_account(member_id: str) -> str:
    return f"member:{member_id}:points"


def campaign_budget_account(campaign_id: str) -> str:
    return f"campaign:{campaign_id}:budget"


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: int
    reason: Reason
    reference: str
    member_id: str
    # Balance of the member's account after this transfer (the "resulting balance").
    balance_after: int
    created_at: datetime
    # Positive when the member gained points, negative when they were spent.
    member_delta: int = 0

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise InvalidInput("points", "must be a positive whole number")
        if self.debit_account == self.credit_account:
            raise InvalidInput("account", "a transfer needs two different accounts")
