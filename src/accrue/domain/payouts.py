"""The monthly payout run: which rewards a month pays, the report it writes, and its record.

A run for month M pays every ``pending`` reward created before the first instant of month M+1.
It is identified by its month (``payout-YYYY-MM``, seed 001's idempotency key), so running a month
twice finds the same record; a run that stopped half-way is resumed, never started afresh.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from accrue.domain.commands import Command
from accrue.domain.errors import InvalidInput
from accrue.domain.events import Event
from accrue.domain.money import format_minor_units

REPORT_HEADER = ("Referrer ID", "Total Amount", "Referral Count", "Payment Status")
REPORT_PAYMENT_STATUS = "Processed"
REPORT_CONTENT_TYPE = "text/csv"
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, slots=True, order=True)
class Month:
    year: int
    month: int

    @staticmethod
    def parse(value: object, field: str = "month") -> Month:
        if not isinstance(value, str) or not (match := _MONTH.match(value.strip())):
            raise InvalidInput(field, "must be a month as YYYY-MM")
        year, month = int(match.group(1)), int(match.group(2))
        if not 1 <= month <= 12 or not 1970 <= year <= 9998:
            raise InvalidInput(field, "must be a month as YYYY-MM (month 01 to 12, year 1970 to 9998)")
        return Month(year, month)

    @staticmethod
    def of(instant: datetime) -> Month:
        utc = instant.astimezone(UTC)
        return Month(utc.year, utc.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    @property
    def cutoff(self) -> datetime:
        """The first instant of the next month: rewards created before it belong to this run."""
        return self.next().start


def month_before(instant: datetime) -> Month:
    """The month a scheduled run pays: the one before the month the schedule fired in."""
    return Month.of(instant).previous()


def run_id_for(month: Month) -> str:
    return f"payout-{month}"


def report_key_for(month: Month) -> str:
    """Deterministic, so a resumed run overwrites the one report instead of adding a second."""
    return f"payouts/{month}/payout-report-{month}.csv"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    FAILED = "failed"  # stopped by an error; running the month again resumes it
    COMPLETED = "completed"


class RunPhase(enum.StrEnum):
    ASSIGNING = "assigning"  # claiming the month's pending rewards for this run
    REPORTING = "reporting"  # every reward is claimed: the set is frozen; writing the report
    MARKING = "marking"  # the report is written: marking the claimed rewards paid
    DONE = "done"


@dataclass(slots=True)
class PayoutRun:
    run_id: str
    month: Month
    status: RunStatus
    phase: RunPhase
    cutoff: datetime
    payout_date: datetime  # stamped on every reward the run pays, the same on a resumed run
    started_at: datetime
    attempts: int = 1
    report_key: str | None = None
    report_location: str | None = None
    referrers: int = 0
    rewards: int = 0
    total_cents: int = 0
    last_error: str | None = None
    completed_at: datetime | None = None

    @staticmethod
    def new(month: Month, now: datetime) -> PayoutRun:
        return PayoutRun(
            run_id=run_id_for(month),
            month=month,
            status=RunStatus.RUNNING,
            phase=RunPhase.ASSIGNING,
            cutoff=month.cutoff,
            payout_date=now,
            started_at=now,
        )


@dataclass(frozen=True, slots=True)
class PayoutLine:
    """One referrer's share of a run: one row of the report."""

    referrer_id: str
    total_cents: int
    count: int


@dataclass(slots=True)
class ReportTotals:
    referrers: int = 0
    rewards: int = 0
    total_cents: int = 0


def report_chunks(lines: Iterable[PayoutLine], totals: ReportTotals, rows_per_chunk: int = 2000) -> Iterator[bytes]:
    """The CSV report as UTF-8 chunks, written as ``lines`` stream by; ``totals`` fills up meanwhile."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_HEADER)
    pending = 0
    for line in lines:
        writer.writerow(
            (line.referrer_id, format_minor_units(line.total_cents, "USD"), line.count, REPORT_PAYMENT_STATUS)
        )
        totals.referrers += 1
        totals.rewards += line.count
        totals.total_cents += line.total_cents
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode("utf-8")


@dataclass(frozen=True, kw_only=True)
class PayoutCompleted(Event):
    run_id: str
    month: str
    referrers: int
    rewards: int
    total_cents: int
    report_key: str
    report_location: str


@dataclass(frozen=True, kw_only=True)
class RunPayout(Command):
    month: str
