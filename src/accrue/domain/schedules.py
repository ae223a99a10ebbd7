"""Schedules, defined once: the local scheduler and the AWS EventBridge Scheduler both read these."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    # Standard five-field cron (minute hour day month weekday), UTC: what the local scheduler uses.
    cron: str
    description: str

    @property
    def aws_expression(self) -> str:
        """EventBridge form: six fields, with `?` in day-of-month or day-of-week."""
        minute, hour, day, month, weekday = self.cron.split()
        if weekday == "*":
            weekday = "?"
        elif day == "*":
            day = "?"
        return f"cron({minute} {hour} {day} {month} {weekday} *)"


MONTHLY_PAYOUT = Schedule(
    name="monthly-payout",
    cron="0 2 1 * *",
    description="Pay the previous month's pending referral rewards (02:00 UTC on the 1st)",
)
DAILY_TIER_REVIEW = Schedule(
    name="tier-review",
    cron="0 3 * * *",
    description="Re-evaluate every member's tier from lifetime points (daily)",
)

SCHEDULES: tuple[Schedule, ...] = (MONTHLY_PAYOUT, DAILY_TIER_REVIEW)
