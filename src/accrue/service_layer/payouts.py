"""The monthly payout run: idempotent per month, resumable after a crash at any point, streaming.

The run works in phases, each recorded on the run so a later attempt continues where the last
one stopped:

1. assigning - claim the month's pending rewards for the run, in chunks (each reward can belong to
   one run only), adding each chunk's per-referrer sums (SQL GROUP BY) to the run's lines in the
   same transaction; when nothing is left to claim the run's set of rewards is frozen.
2. reporting - stream the run's lines (one per referrer) into the CSV report under a deterministic
   key (a re-run overwrites it: one report per month, always the same content).
3. marking - mark the run's rewards paid, in chunks (``pending -> paid`` only: never twice).
4. recording - record the run completed and emit ``PayoutCompleted`` in one transaction.

This module is also the entrypoint of the scheduled AWS Lambda: ``run_payout(uow_factory, blobs,
clock, month)`` runs unchanged over the DynamoDB unit of work and the S3 blob store.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from accrue.domain.commands import Command
from accrue.domain.errors import InvalidInput, NotFound, RuleViolation
from accrue.domain.ids import new_id
from accrue.domain.money import format_minor_units
from accrue.domain.notifications import Notification
from accrue.domain.payouts import (
    REPORT_CONTENT_TYPE,
    Month,
    PayoutCompleted,
    PayoutRun,
    ReportTotals,
    RunPayout,
    RunPhase,
    RunStatus,
    report_chunks,
    report_key_for,
)
from accrue.ports import BlobStore, Page, TemplateRenderer, UnitOfWork
from accrue.service_layer.notifications import StoreNotification, queue_for_channels, render_message

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
UowFactory = Callable[..., UnitOfWork]
Progress = Callable[[str, int], None]

# Who is told that a run completed: the operators, not a member (listed under this user id).
OPERATIONS_RECIPIENT = "system:operations"

# Fault injection for the crash tests (tests/integration/test_payout_crash.py) and nothing else:
# when ACCRUE_ENV=test and ACCRUE_TEST_CRASH_AT names a point below, the process kills itself with
# SIGKILL there, as a power cut would. With any other environment, or the variable unset, it is inert.
CRASH_AT_ENV = "ACCRUE_TEST_CRASH_AT"
CRASH_POINTS = ("during_assigning", "before_report", "after_report", "during_marking", "before_recording")


def crash_point(name: str) -> None:
    if os.environ.get("ACCRUE_ENV") == "test" and os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class PayoutSettings:
    chunk_size: int = 5000


def run_payout(
    uow_factory: UowFactory,
    blobs: BlobStore,
    clock: Clock,
    month: str | Month,
    *,
    chunk_size: int = 5000,
    progress: Progress | None = None,
) -> PayoutRun:
    """Pay ``month``'s pending rewards, or return the month's recorded run if it already completed."""
    period = month if isinstance(month, Month) else Month.parse(month)
    if chunk_size < 1:
        raise InvalidInput("chunkSize", "must be at least 1")
    now = clock()
    if period.start > now:
        raise RuleViolation(
            f"month: {period} has not started yet", details={"field": "month", "rule": "must not be in the future"}
        )
    with uow_factory() as uow:
        run = uow.payouts.start_run(PayoutRun.new(period, now))
        uow.commit()
    if run.status is RunStatus.COMPLETED:
        return run
    log.info("payout run %s: attempt %d from phase %s", run.run_id, run.attempts, run.phase)
    try:
        _assign(uow_factory, clock, run, chunk_size, progress)
        crash_point("before_report")
        _report(uow_factory, blobs, clock, run, progress)
        crash_point("after_report")
        _mark_paid(uow_factory, run, chunk_size, progress)
        crash_point("before_recording")
        return _complete(uow_factory, clock, run)
    except Exception as exc:
        # Recorded for operators; the run stays resumable: running the month again continues it.
        with uow_factory() as uow:
            uow.payouts.record_failure(run.run_id, f"{type(exc).__name__}: {exc}", clock())
            uow.commit()
        raise


def _assign(uow_factory: UowFactory, clock: Clock, run: PayoutRun, chunk_size: int, progress: Progress | None) -> None:
    if run.phase is not RunPhase.ASSIGNING:
        return
    claimed = 0
    while True:
        with uow_factory() as uow:
            count = uow.payouts.assign_chunk(run.run_id, run.cutoff, chunk_size)
            if count < chunk_size:
                # Writers are serialised: nothing eligible is left unclaimed at this instant. Freezing
                # in the same transaction means no reward can slip in between the last claim and here.
                uow.payouts.finish_assigning(run.run_id, clock())
            uow.commit()
        claimed += count
        if progress:
            progress("assigning", claimed)
        if count < chunk_size:
            return
        crash_point("during_assigning")


def _report(uow_factory: UowFactory, blobs: BlobStore, clock: Clock, run: PayoutRun, progress: Progress | None) -> None:
    """(Re)write the report from every reward of the run, paid already or not: the same bytes each time."""
    key = report_key_for(run.month)
    totals = ReportTotals()
    with uow_factory(readonly=True) as uow:
        location = blobs.put_stream(key, report_chunks(uow.payouts.iter_lines(run.run_id), totals), REPORT_CONTENT_TYPE)
    with uow_factory() as uow:
        uow.payouts.record_report(
            run.run_id, key, location, totals.referrers, totals.rewards, totals.total_cents, clock()
        )
        uow.commit()
    if progress:
        progress("reporting", totals.rewards)


def _mark_paid(uow_factory: UowFactory, run: PayoutRun, chunk_size: int, progress: Progress | None) -> None:
    marked = 0
    while True:
        with uow_factory() as uow:
            count = uow.payouts.mark_paid_chunk(run.run_id, run.payout_date, chunk_size)
            uow.commit()
        marked += count
        if progress:
            progress("marking", marked)
        if count < chunk_size:
            return
        crash_point("during_marking")


def _complete(uow_factory: UowFactory, clock: Clock, run: PayoutRun) -> PayoutRun:
    with uow_factory() as uow:
        completed = uow.payouts.complete(run.run_id, clock())
        final = uow.payouts.get_run(str(run.month))
        if final is None:  # pragma: no cover - the row was created by this run
            raise RuntimeError(f"payout run {run.month} vanished")
        if completed:
            uow.emit(
                PayoutCompleted(
                    run_id=final.run_id,
                    month=str(final.month),
                    referrers=final.referrers,
                    rewards=final.rewards,
                    total_cents=final.total_cents,
                    report_key=final.report_key or "",
                    report_location=final.report_location or "",
                )
            )
        uow.commit()
    log.info("payout run %s completed: %d referrers, %d cents", final.run_id, final.referrers, final.total_cents)
    return final


def run_payout_command(
    cmd: RunPayout,
    uow: UnitOfWork,
    uow_factory: UowFactory,
    blobs: BlobStore,
    clock: Clock,
    payout_settings: PayoutSettings,
) -> PayoutRun:
    # The run manages its own short transactions; release the one the bus opened for us.
    uow.rollback()
    return run_payout(uow_factory, blobs, clock, cmd.month, chunk_size=payout_settings.chunk_size)


# -- read side ------------------------------------------------------------------------------------


def get_run(uow: UnitOfWork, month: str) -> PayoutRun:
    period = Month.parse(month)
    run = uow.payouts.get_run(str(period))
    if run is None:
        raise NotFound(f"no payout run for {period}", details={"field": "month"})
    return run


def list_runs(uow: UnitOfWork, limit: int, cursor: str | None) -> Page[PayoutRun]:
    return uow.payouts.list_runs(limit, cursor)


def open_report(uow_factory: UowFactory, blobs: BlobStore, month: str) -> Iterator[bytes]:
    """The month's CSV report as a stream of chunks; NotFound until the run has written it."""
    with uow_factory(readonly=True) as uow:
        run = get_run(uow, month)
    if run.report_key is None or not blobs.exists(run.report_key):
        raise NotFound(f"the payout report for {run.month} is not written yet", details={"field": "month"})
    return blobs.iter_chunks(run.report_key)


# -- events ---------------------------------------------------------------------------------------


def notify_payout_completed(
    event: PayoutCompleted,
    uow: UnitOfWork,
    renderer: TemplateRenderer,
    clock: Clock,
    store_notification: StoreNotification = queue_for_channels,
) -> None:
    context = {
        "month": event.month,
        "referrers": event.referrers,
        "rewards": event.rewards,
        "total_amount": format_minor_units(event.total_cents, "USD"),
        "report_location": event.report_location,
    }
    subject, message = render_message(renderer, "payout_completed", context)
    store_notification(
        uow,
        Notification(
            notification_id=new_id("ntf"),
            event_id=event.event_id,
            type="payout_completed",
            user_id=OPERATIONS_RECIPIENT,
            subject=subject,
            message=message,
            created_at=clock(),
            data={
                "runId": event.run_id,
                "month": event.month,
                "referrers": event.referrers,
                "rewards": event.rewards,
                "totalAmount": context["total_amount"],
                "reportKey": event.report_key,
            },
        ),
        f"{event.event_id}:payout_completed",
    )


COMMAND_HANDLERS: dict[type[Command], Any] = {RunPayout: run_payout_command}
