"""Scheduled functions, fired by EventBridge Scheduler from the shared schedule definitions
(``accrue.domain.schedules``: the same ones the local scheduler runs).

The schedule's target input carries the instant it was due, ``{"scheduledTime":
"<aws.scheduler.scheduled-time>"}`` (an EventBridge rule's ``time`` works too), so a late or
repeated invocation works out the same month as the on-time one. Both jobs are idempotent: a
payout run for a month that already completed returns the recorded run and pays nobody again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from accrue.entrypoints.lambdas.observability import count, instrumented, logger


def due_instant(event: dict[str, Any]) -> datetime:
    """When this fire was due; the invocation time when the event does not say."""
    raw = event.get("scheduledTime") or event.get("time")
    if not raw:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _record(name: str, due: datetime, status: str, error: str | None) -> None:
    from accrue.entrypoints.lambdas import runtime

    with runtime.application().bus.uow_factory() as uow:
        uow.schedule_runs.record(name, due, status, error)
        uow.commit()


@instrumented
def payout_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from accrue.domain.payouts import month_before
    from accrue.domain.schedules import MONTHLY_PAYOUT
    from accrue.entrypoints.lambdas import runtime
    from accrue.service_layer import payouts

    app = runtime.application()
    due = due_instant(event)
    month = event.get("month") or str(month_before(due))
    assert app.blobs is not None
    try:
        run = payouts.run_payout(
            app.bus.uow_factory, app.blobs, app.clock, month, chunk_size=app.settings.payout_chunk_size
        )
    except Exception as exc:
        _record(MONTHLY_PAYOUT.name, due, "failed", f"{type(exc).__name__}: {exc}")
        raise
    _record(MONTHLY_PAYOUT.name, due, "ok", None)
    count("PayoutRuns")
    logger.info("payout run finished", extra={"month": month, "status": str(run.status)})
    return {
        "month": month,
        "runId": run.run_id,
        "status": str(run.status),
        "reportLocation": run.report_location,
        "referrers": run.referrers,
        "totalCents": run.total_cents,
    }


@instrumented
def tier_review_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from accrue.domain import commands
    from accrue.domain.schedules import DAILY_TIER_REVIEW
    from accrue.entrypoints.lambdas import runtime

    app = runtime.application()
    due = due_instant(event)
    changed = int(app.bus.handle(commands.ReviewTiers()))
    _record(DAILY_TIER_REVIEW.name, due, "ok", None)
    count("TiersChanged", changed)
    return {"changed": changed, "due": due.isoformat()}
