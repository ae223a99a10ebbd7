"""Referral and payout rules of the domain: reward steps, email identity, reviews, months, the report."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from accrue.domain.errors import Conflict, InvalidInput
from accrue.domain.payouts import (
    REPORT_HEADER,
    Month,
    PayoutLine,
    ReportTotals,
    month_before,
    report_chunks,
    report_key_for,
    run_id_for,
)
from accrue.domain.referrals import (
    Referral,
    RewardStatus,
    VelocityRule,
    email_identity,
    normalize_referral_code,
    reward_cents_for,
)

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("count", "cents"),
    [(1, 1000), (4, 1000), (5, 1500), (9, 1500), (10, 2000), (24, 2000), (25, 2500), (26, 2500), (1000, 2500)],
)
def test_the_reward_depends_on_the_referral_count_after_the_signup(count: int, cents: int) -> None:
    assert reward_cents_for(count) == cents


def test_twenty_six_referrals_earn_four_hundred_sixty_five_dollars() -> None:
    rewards = [reward_cents_for(n) for n in range(1, 27)]
    assert rewards.count(1000) == 4
    assert rewards.count(1500) == 5
    assert rewards.count(2000) == 15
    assert rewards.count(2500) == 2
    assert sum(rewards) == 46_500


def test_a_count_below_one_has_no_reward() -> None:
    with pytest.raises(InvalidInput) as caught:
        reward_cents_for(0)
    assert caught.value.field == "referralCount"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("John@Example.com", "john@example.com"),
        ("john+promo@example.com", "john@example.com"),
        ("john+a+b@example.com", "JOHN@example.com"),
        ("j.o.h.n@gmail.com", "john@gmail.com"),
        ("J.Ohn+x@GoogleMail.com", "john@gmail.com"),
        ("  john@gmail.com ", "john@googlemail.com"),
    ],
)
def test_aliases_of_one_mailbox_have_the_same_identity(a: str, b: str) -> None:
    assert email_identity(a) == email_identity(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("j.ohn@example.com", "john@example.com"),  # dots matter outside gmail
        ("john@example.com", "john@example.org"),
        ("john@gmail.com", "johnny@gmail.com"),
    ],
)
def test_different_mailboxes_have_different_identities(a: str, b: str) -> None:
    assert email_identity(a) != email_identity(b)


def test_referral_codes_are_read_without_case_spaces_or_hyphens() -> None:
    assert normalize_referral_code(" ab2c-d3ef ") == "AB2CD3EF"


def test_the_velocity_rule_holds_signups_above_the_limit_and_can_be_disabled() -> None:
    rule = VelocityRule(max_signups=50)
    assert not rule.holds(50)
    assert rule.holds(51)
    assert not VelocityRule(max_signups=0).holds(10_000)


def _held() -> Referral:
    return Referral(
        referral_id="ref_1",
        referrer_id="usr_a",
        referred_id="usr_b",
        referral_code="AAAA2222",
        referral_number=51,
        reward_cents=2500,
        status=RewardStatus.HELD,
        created_at=NOW,
    )


def test_approving_a_held_reward_makes_it_payable_once() -> None:
    reward = _held()
    assert reward.approve(by="admin", now=NOW) is True
    assert reward.status is RewardStatus.PENDING
    assert reward.approve(by="admin", now=NOW) is False
    with pytest.raises(Conflict):
        reward.reject(by="admin", now=NOW)


def test_rejecting_a_held_reward_is_final() -> None:
    reward = _held()
    assert reward.reject(by="admin", now=NOW) is True
    assert reward.status is RewardStatus.REJECTED
    assert reward.reject(by="admin", now=NOW) is False
    with pytest.raises(Conflict):
        reward.approve(by="admin", now=NOW)


def test_a_reward_that_was_never_held_cannot_be_reviewed() -> None:
    reward = _held()
    reward.status = RewardStatus.PENDING
    with pytest.raises(Conflict):
        reward.approve(by="admin", now=NOW)
    with pytest.raises(Conflict):
        reward.reject(by="admin", now=NOW)


@pytest.mark.parametrize("value", ["2026-3", "2026-13", "2026-00", "26-03", "", "1969-12", None, 202603])
def test_a_month_must_be_written_yyyy_mm(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        Month.parse(value)
    assert caught.value.field == "month"


def test_a_month_knows_its_cutoff_and_neighbours() -> None:
    december = Month.parse("2026-12")
    assert december.cutoff == datetime(2027, 1, 1, tzinfo=UTC)
    assert december.next() == Month(2027, 1)
    assert Month(2027, 1).previous() == december
    assert str(december) == "2026-12"


def test_the_scheduled_run_pays_the_month_before_the_one_it_fires_in() -> None:
    assert month_before(datetime(2026, 4, 1, 2, 0, tzinfo=UTC)) == Month(2026, 3)
    assert month_before(datetime(2027, 1, 1, 2, 0, tzinfo=UTC)) == Month(2026, 12)


def test_a_month_has_one_run_id_and_one_report_key() -> None:
    month = Month(2026, 3)
    assert run_id_for(month) == "payout-2026-03"
    assert report_key_for(month) == "payouts/2026-03/payout-report-2026-03.csv"


def test_the_report_has_the_exact_header_two_decimal_amounts_and_running_totals() -> None:
    totals = ReportTotals()
    lines = (PayoutLine(f"usr_{i}", 46_500 + i, 26) for i in range(5))
    chunks = list(report_chunks(lines, totals, rows_per_chunk=2))
    text = b"".join(chunks).decode()
    rows = text.splitlines()
    assert rows[0] == ",".join(REPORT_HEADER) == "Referrer ID,Total Amount,Referral Count,Payment Status"
    assert rows[1] == "usr_0,465.00,26,Processed"
    assert rows[5] == "usr_4,465.04,26,Processed"
    assert len(chunks) == 3  # streamed in pieces, not built whole
    assert (totals.referrers, totals.rewards, totals.total_cents) == (5, 130, 5 * 46_500 + 10)


def test_an_empty_run_still_writes_the_header() -> None:
    totals = ReportTotals()
    assert b"".join(report_chunks(iter(()), totals)) == b"Referrer ID,Total Amount,Referral Count,Payment Status\n"
    assert totals.referrers == 0
