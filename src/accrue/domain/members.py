"""The member aggregate: balance, lifetime points and tier change only through ledger transfers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from accrue.domain import events
from accrue.domain.errors import InsufficientPoints, InvalidInput
from accrue.domain.ledger import (
    PROGRAM_ISSUED,
    PROGRAM_REDEEMED,
    QUALIFYING_REASONS,
    Reason,
    Transfer,
    member_account,
)
from accrue.domain.loyalty import Tier, milestones_crossed, points_for, tier_bonus_points, tier_for

# Crockford-like alphabet without the look-alikes 0/O and 1/I (and L, U to avoid misreads).
REFERRAL_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERRAL_CODE_LENGTH = 8


def new_referral_code() -> str:
    return "".join(secrets.choice(REFERRAL_CODE_ALPHABET) for _ in range(REFERRAL_CODE_LENGTH))


def normalize_email(email: str) -> str:
    """The key emails are unique by: trimmed and case-insensitive."""
    return email.strip().lower()


@dataclass(eq=False)
class Member:
    user_id: str
    email: str | None
    name: str | None
    created_at: datetime
    phone: str | None = None
    balance: int = 0
    lifetime: int = 0
    tier: Tier = Tier.BRONZE
    total_spent_cents: int = 0
    referral_code: str = ""
    erased: bool = False
    # Optimistic concurrency guard for stores without serialised writers (DynamoDB).
    version: int = 0
    events: list[events.Event] = field(default_factory=list, repr=False)
    new_transfers: list[Transfer] = field(default_factory=list, repr=False)
    # (lifetime, tier) before the first credit of a ``one_posting()`` block; None outside one.
    _posting_start: tuple[int, Tier] | None = field(default=None, repr=False)

    @property
    def account(self) -> str:
        return member_account(self.user_id)

    # -- earning --------------------------------------------------------------------------------

    @contextmanager
    def one_posting(self) -> Iterator[None]:
        """Credits made inside count as one posting: tiers and milestones are evaluated once, at the
        end, so an order's base points and its campaign awards send one milestone notification."""
        if self._posting_start is not None:  # nested: the outer block evaluates
            yield
            return
        self._posting_start = (self.lifetime, self.tier)
        try:
            yield
        finally:
            old_lifetime, old_tier = self._posting_start
            self._posting_start = None
        self._evaluate(old_lifetime, old_tier)

    def credit(
        self,
        *,
        transfer_id: str,
        points: int,
        reason: Reason,
        reference: str,
        now: datetime,
        source_account: str = PROGRAM_ISSUED,
    ) -> Transfer:
        """One credit posting, then tier and milestone evaluation."""
        old_lifetime, old_tier = self.lifetime, self.tier
        transfer = self._post_credit(transfer_id, points, reason, reference, now, source_account)
        self._evaluate(old_lifetime, old_tier)
        return transfer

    def record_purchase(
        self,
        *,
        transfer_id: str,
        amount: Decimal,
        transaction_type: str,
        reference: str,
        now: datetime,
        amount_cents: int | None = None,
    ) -> list[Transfer]:
        """Base points at the type's rate plus, on purchases, the tier bonus of the tier held before."""
        if amount < 0:
            raise InvalidInput("amount", "must not be negative")
        old_lifetime, old_tier = self.lifetime, self.tier
        transfers: list[Transfer] = []
        base = points_for(amount, transaction_type)
        if base > 0:
            transfers.append(self._post_credit(transfer_id, base, Reason.EARN, reference, now))
        if transaction_type.strip().lower() == "purchase":
            if amount_cents is not None:
                self.total_spent_cents += amount_cents
            bonus = tier_bonus_points(base, old_tier)
            if bonus > 0:
                transfers.append(
                    self._post_credit(f"{transfer_id}:tier_bonus", bonus, Reason.TIER_BONUS, reference, now)
                )
        self._evaluate(old_lifetime, old_tier)
        return transfers

    # -- spending -------------------------------------------------------------------------------

    def redeem(self, *, transfer_id: str, points: int, reference: str, now: datetime) -> Transfer:
        """Lowers the balance only; lifetime and tier are untouched."""
        if points <= 0:
            raise InvalidInput("points", "must be a positive whole number")
        if points > self.balance:
            raise InsufficientPoints(
                f"cannot redeem {points} points: the balance is {self.balance}",
                details={"field": "points", "balance": self.balance, "requested": points},
            )
        self.balance -= points
        transfer = Transfer(
            transfer_id=transfer_id,
            debit_account=self.account,
            credit_account=PROGRAM_REDEEMED,
            amount=points,
            reason=Reason.REDEEM,
            reference=reference,
            member_id=self.user_id,
            balance_after=self.balance,
            created_at=now,
            member_delta=-points,
        )
        self._record(transfer)
        self.events.append(
            events.PointsRedeemed(user_id=self.user_id, transfer_id=transfer_id, points=points, balance=self.balance)
        )
        return transfer

    def reverse(self, *, original: Transfer, transfer_id: str, now: datetime) -> Transfer:
        """A correcting transfer: undo a credit (e.g. a refunded order). Never edits the original."""
        if original.member_id != self.user_id or original.member_delta <= 0:
            raise InvalidInput("transferId", "only a credit to this member can be reversed")
        if original.amount > self.balance:
            raise InsufficientPoints(
                f"cannot reverse {original.amount} points: the balance is {self.balance}",
                details={"balance": self.balance, "requested": original.amount},
            )
        old_lifetime, old_tier = self.lifetime, self.tier
        self.balance -= original.amount
        if original.reason in QUALIFYING_REASONS:
            self.lifetime -= original.amount
        transfer = Transfer(
            transfer_id=transfer_id,
            debit_account=self.account,
            credit_account=original.debit_account,
            amount=original.amount,
            reason=Reason.REVERSE,
            reference=original.transfer_id,
            member_id=self.user_id,
            balance_after=self.balance,
            created_at=now,
            member_delta=-original.amount,
        )
        self._record(transfer)
        self._evaluate(old_lifetime, old_tier)
        return transfer

    def review_tier(self) -> None:
        """Re-derive the tier from lifetime points (the periodic review)."""
        self._evaluate(self.lifetime, self.tier)

    def erase(self) -> bool:
        """GDPR erasure: the personal data goes; the id, balance and postings stay, now anonymous.
        False when it was already erased."""
        if self.erased:
            return False
        self.email = None
        self.name = None
        self.phone = None
        self.erased = True
        return True

    # -- internals ------------------------------------------------------------------------------

    def _post_credit(
        self,
        transfer_id: str,
        points: int,
        reason: Reason,
        reference: str,
        now: datetime,
        source_account: str = PROGRAM_ISSUED,
    ) -> Transfer:
        if points <= 0:
            raise InvalidInput("points", "must be a positive whole number")
        self.balance += points
        if reason in QUALIFYING_REASONS:
            self.lifetime += points
        transfer = Transfer(
            transfer_id=transfer_id,
            debit_account=source_account,
            credit_account=self.account,
            amount=points,
            reason=reason,
            reference=reference,
            member_id=self.user_id,
            balance_after=self.balance,
            created_at=now,
            member_delta=points,
        )
        self._record(transfer)
        self.events.append(
            events.PointsEarned(
                user_id=self.user_id,
                transfer_id=transfer_id,
                points=points,
                reason=str(reason),
                reference=reference,
                balance=self.balance,
                lifetime=self.lifetime,
            )
        )
        return transfer

    def _record(self, transfer: Transfer) -> None:
        self.new_transfers.append(transfer)

    def _evaluate(self, old_lifetime: int, old_tier: Tier) -> None:
        if self._posting_start is not None:
            return
        new_tier = tier_for(self.lifetime)
        if new_tier is old_tier:
            pass  # most postings leave the tier as it was
        elif new_tier.rank > old_tier.rank:
            self.tier = new_tier
            self.events.append(
                events.TierUpgraded(
                    user_id=self.user_id,
                    old_tier=str(old_tier),
                    new_tier=str(new_tier),
                    points=self.balance,
                    lifetime=self.lifetime,
                )
            )
        elif new_tier.rank < old_tier.rank:
            self.tier = new_tier
            self.events.append(
                events.TierDowngraded(
                    user_id=self.user_id,
                    old_tier=str(old_tier),
                    new_tier=str(new_tier),
                    lifetime=self.lifetime,
                )
            )
        crossed = milestones_crossed(old_lifetime, self.lifetime)
        if crossed:
            self.events.append(
                events.MilestonesReached(
                    user_id=self.user_id,
                    milestones=crossed,
                    points=self.balance,
                    lifetime=self.lifetime,
                    tier=str(self.tier),
                )
            )
