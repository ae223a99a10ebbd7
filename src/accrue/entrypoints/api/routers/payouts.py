"""Monthly payout runs: start (or resume) a month's run, list runs, download a run's CSV report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import Field

from accrue.bootstrap import Application
from accrue.domain.money import format_minor_units
from accrue.domain.payouts import REPORT_CONTENT_TYPE, PayoutRun, RunPayout
from accrue.entrypoints.api.routing import ERROR_RESPONSES, application, router
from accrue.entrypoints.api.schemas import ApiModel, Envelope, ResponseModel, ok
from accrue.entrypoints.api.security import Admin
from accrue.service_layer import payouts

api = router()
App = Annotated[Application, Depends(application)]
# YYYY-MM from 1970-01 on: a well-formed month is never a 400 (a future one is a 422).
MONTH_PATTERN = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"
MonthPath = Annotated[str, Path(pattern=MONTH_PATTERN, description="YYYY-MM", examples=["2026-03"])]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class RunPayoutRequest(ApiModel):
    month: str = Field(pattern=MONTH_PATTERN, description="The month to pay, YYYY-MM", examples=["2026-03"])


class PayoutRunOut(ResponseModel):
    run_id: str
    month: str
    status: Literal["running", "failed", "completed"]
    phase: Literal["assigning", "reporting", "marking", "done"]
    referrers: int
    rewards: int
    total_amount: str = Field(pattern=r"^\d+\.\d{2}$", description="US dollars with two decimals")
    report_key: str | None = None
    report_location: str | None = None
    payout_date: datetime
    started_at: datetime
    completed_at: datetime | None = None
    attempts: int
    last_error: str | None = None


class PayoutRunPage(ResponseModel):
    runs: list[PayoutRunOut]
    next_cursor: str | None = None


def _run(run: PayoutRun) -> PayoutRunOut:
    return PayoutRunOut(
        run_id=run.run_id,
        month=str(run.month),
        status=run.status.value,
        phase=run.phase.value,
        referrers=run.referrers,
        rewards=run.rewards,
        total_amount=format_minor_units(run.total_cents, "USD"),
        report_key=run.report_key,
        report_location=run.report_location,
        payout_date=run.payout_date,
        started_at=run.started_at,
        completed_at=run.completed_at,
        attempts=run.attempts,
        last_error=run.last_error,
    )


class CsvResponse(StreamingResponse):
    media_type = REPORT_CONTENT_TYPE


# FastAPI documents a route's extra responses in the route's media type; the report's errors are
# JSON envelopes like everywhere else, so they are spelled out here.
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": response["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    for status, response in ERROR_RESPONSES.items()
}


@api.post("/payouts/run", response_model=Envelope[PayoutRunOut], tags=["payouts"])
def run_payout(body: RunPayoutRequest, app: App, principal: Admin) -> dict[str, object]:
    """Pay the month's pending rewards (those created before the next month starts).

    Idempotent per month: a completed month returns its recorded run and pays nobody again; an
    interrupted one is resumed. Runs synchronously; very large months are better run with
    `accrue payouts run` or left to the monthly schedule.
    """
    return ok(_run(app.bus.handle(RunPayout(month=body.month))))


@api.get("/payouts", response_model=Envelope[PayoutRunPage], tags=["payouts"])
def list_payouts(app: App, principal: Admin, limit: Limit = 24, cursor: Cursor = None) -> dict[str, object]:
    """Payout runs, newest month first."""
    page = app.bus.query(payouts.list_runs, limit, cursor)
    return ok(PayoutRunPage(runs=[_run(r) for r in page.items], next_cursor=page.next_cursor))


@api.get("/payouts/{month}", response_model=Envelope[PayoutRunOut], tags=["payouts"])
def get_payout(month: MonthPath, app: App, principal: Admin) -> dict[str, object]:
    return ok(_run(app.bus.query(payouts.get_run, month)))


@api.get(
    "/payouts/{month}/report",
    response_class=CsvResponse,
    tags=["payouts"],
    responses={
        **_JSON_ERRORS,
        200: {
            "description": "The run's report: `Referrer ID,Total Amount,Referral Count,Payment Status`, "
            "one row per referrer, amounts with two decimals",
            "content": {REPORT_CONTENT_TYPE: {"schema": {"type": "string"}}},
        },
    },
)
def get_payout_report(month: MonthPath, app: App, principal: Admin) -> CsvResponse:
    if app.blobs is None:  # pragma: no cover - bootstrap always provides one
        raise RuntimeError("no blob store configured")
    chunks = payouts.open_report(app.bus.uow_factory, app.blobs, month)
    return CsvResponse(
        chunks,
        media_type=REPORT_CONTENT_TYPE,
        headers={"Content-Disposition": f'attachment; filename="payout-report-{month}.csv"'},
    )
