"""The monthly payout run on a real SQLite file and a real blob folder: what it pays, what it leaves,
idempotency, resuming after a failure, concurrent runs, and the schedule that fires it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accrue.adapters.local.blobs import LocalBlobStore
from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.domain.errors import InvalidInput, RuleViolation
from accrue.domain.payouts import Month, PayoutRun, RunPhase, RunStatus
from accrue.domain.referrals import ReviewDecision, ReviewReferralReward, SignUpWithReferral
from accrue.service_layer.payouts import run_payout
from tests.conftest import make_settings


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FailingOnceBlobs(LocalBlobStore):
    """A blob store whose first report upload breaks half-way, like a network failure."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failures_left = 1

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream") -> str:
        if self.failures_left:
            self.failures_left -= 1

            def broken() -> Iterator[bytes]:
                yield next(iter(chunks))
                raise ConnectionError("upload interrupted")

            return super().put_stream(key, broken(), content_type)
        return super().put_stream(key, chunks, content_type)


MARCH = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(MARCH)


@pytest.fixture
def blobs(tmp_path: Path) -> FailingOnceBlobs:
    store = FailingOnceBlobs(tmp_path / "blobs")
    store.failures_left = 0
    return store


@pytest.fixture
def app(tmp_path: Path, clock: Clock, blobs: FailingOnceBlobs) -> Iterator[Application]:
    application = bootstrap(make_settings(tmp_path, referral_velocity_max_signups=30), clock=clock, blobs=blobs)
    yield application
    application.close()


def enrol_referrer(app: Application, user_id: str) -> str:
    member = app.bus.handle(commands.CreateMember(email=f"{user_id}@example.com", name=user_id, user_id=user_id))
    return str(member.referral_code)


def sign_up_many(app: Application, clock: Clock, code: str, prefix: str, count: int) -> None:
    for n in range(count):
        clock.now += timedelta(seconds=1)
        app.bus.handle(SignUpWithReferral(user_id=f"{prefix}-{n}", referral_code=code))


def connection(app: Application) -> sqlite3.Connection:
    assert app.database is not None
    return app.database.connection()


def rewards(app: Application) -> list[tuple[str, str, str | None, str | None]]:
    rows = connection(app).execute("SELECT referred_id, status, payout_run_id, paid_at FROM referrals ORDER BY seq")
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def pay(app: Application, clock: Clock, month: str, chunk_size: int = 3) -> PayoutRun:
    assert app.blobs is not None
    return run_payout(app.bus.uow_factory, app.blobs, clock, month, chunk_size=chunk_size)


def test_a_run_pays_the_months_pending_rewards_and_leaves_held_and_later_ones(app: Application, clock: Clock) -> None:
    code = enrol_referrer(app, "alice")
    sign_up_many(app, clock, code, "march", 32)  # the 31st and 32nd in 24 h are held (limit 30)
    clock.now = datetime(2026, 4, 1, 0, 30, tzinfo=UTC)
    sign_up_many(app, clock, code, "april", 2)  # created after March's cutoff
    clock.now = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)

    run = pay(app, clock, "2026-03")

    assert (run.status, run.phase, run.referrers, run.rewards) == (RunStatus.COMPLETED, RunPhase.DONE, 1, 30)
    # 10 x4 + 15 x5 + 20 x15 + 25 x6 (the 25th to 30th)
    assert run.total_cents == 4 * 1000 + 5 * 1500 + 15 * 2000 + 6 * 2500
    by_user = {user: (status, run_id, paid_at) for user, status, run_id, paid_at in rewards(app)}
    assert all(by_user[f"march-{n}"][:2] == ("paid", "payout-2026-03") for n in range(30))
    assert {by_user[f"march-{n}"][2] for n in range(30)} == {"2026-04-01T02:00:00.000000Z"}
    assert [by_user[f"march-{n}"][0] for n in (30, 31)] == ["held", "held"]
    assert [by_user[f"april-{n}"][:2] for n in (0, 1)] == [("pending", None), ("pending", None)]
    assert app.blobs is not None
    report = app.blobs.get("payouts/2026-03/payout-report-2026-03.csv").decode()
    assert report == "Referrer ID,Total Amount,Referral Count,Payment Status\nalice,565.00,30,Processed\n"


def test_running_a_month_again_returns_the_recorded_run_and_pays_nobody(app: Application, clock: Clock) -> None:
    code = enrol_referrer(app, "alice")
    sign_up_many(app, clock, code, "m", 5)
    clock.now = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    first = pay(app, clock, "2026-03")
    before = rewards(app)
    # A reward earned in March but approved (or created) afterwards is not slipped into the closed run.
    clock.now = datetime(2026, 4, 2, tzinfo=UTC)
    second = pay(app, clock, "2026-03")
    assert second == first
    assert rewards(app) == before


def test_an_approved_held_reward_is_paid_by_the_next_months_run(app: Application, clock: Clock) -> None:
    code = enrol_referrer(app, "alice")
    sign_up_many(app, clock, code, "m", 31)
    held = app.bus.query(lambda uow: uow.referrals.list_held(10, None)).items
    assert [r.referred_id for r in held] == ["m-30"]
    clock.now = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    assert pay(app, clock, "2026-03").rewards == 30
    app.bus.handle(
        ReviewReferralReward(referral_id=held[0].referral_id, decision=ReviewDecision.APPROVED, reviewed_by="admin")
    )
    clock.now = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    april = pay(app, clock, "2026-04")
    assert (april.rewards, april.total_cents) == (1, 2500)
    assert [status for _, status, _, _ in rewards(app)] == ["paid"] * 31


def test_a_failed_run_is_recorded_and_the_next_attempt_finishes_it(
    app: Application, clock: Clock, blobs: FailingOnceBlobs
) -> None:
    for name in ("bob", "alice", "carol"):
        sign_up_many(app, clock, enrol_referrer(app, name), name, 4)
    clock.now = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    blobs.failures_left = 1

    with pytest.raises(ConnectionError):
        pay(app, clock, "2026-03")
    failed = app.bus.query(lambda uow: uow.payouts.get_run("2026-03"))
    assert (failed.status, failed.phase) == (RunStatus.FAILED, RunPhase.REPORTING)
    assert "upload interrupted" in failed.last_error
    assert {status for _, status, _, _ in rewards(app)} == {"pending"}
    assert blobs.list("payouts/") == []  # the broken upload left no report behind

    done = pay(app, clock, "2026-03")
    assert (done.status, done.attempts, done.referrers, done.rewards, done.last_error) == (
        RunStatus.COMPLETED,
        2,
        3,
        12,
        None,
    )
    assert {status for _, status, _, _ in rewards(app)} == {"paid"}
    assert blobs.list("payouts/") == ["payouts/2026-03/payout-report-2026-03.csv"]
    lines = blobs.get("payouts/2026-03/payout-report-2026-03.csv").decode().splitlines()
    assert lines[1:] == ["alice,40.00,4,Processed", "bob,40.00,4,Processed", "carol,40.00,4,Processed"]


def test_the_reported_lines_equal_a_direct_sum_of_the_rewards_the_run_paid(app: Application, clock: Clock) -> None:
    for name, count in (("dora", 12), ("abe", 3), ("cy", 27)):
        sign_up_many(app, clock, enrol_referrer(app, name), name, count)
    clock.now = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    run = pay(app, clock, "2026-03", chunk_size=7)
    direct = connection(app).execute(
        "SELECT referrer_id, SUM(reward_cents), COUNT(*) FROM referrals WHERE payout_run_id = ? AND status = 'paid' "
        "GROUP BY referrer_id ORDER BY referrer_id",
        (run.run_id,),
    )
    expected = [f"{who},{cents // 100}.{cents % 100:02d},{count},Processed" for who, cents, count in direct]
    assert app.blobs is not None
    assert app.blobs.get(run.report_key or "").decode().splitlines()[1:] == expected
    assert (run.referrers, run.rewards) == (3, 42)


def test_two_runs_of_one_month_at_once_pay_each_reward_once(app: Application, clock: Clock) -> None:
    for name in ("alice", "bob"):
        sign_up_many(app, clock, enrol_referrer(app, name), name, 26)
    clock.now = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    results: list[PayoutRun] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(pay(app, clock, "2026-03", chunk_size=4))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert {(r.status, r.rewards, r.total_cents) for r in results} == {(RunStatus.COMPLETED, 52, 2 * 46_500)}
    assert [status for _, status, _, _ in rewards(app)] == ["paid"] * 52
    completed_events = connection(app).execute(
        "SELECT COUNT(DISTINCT event_id) FROM outbox WHERE event_name = 'PayoutCompleted'"
    )
    assert completed_events.fetchone()[0] == 1


def test_an_empty_month_completes_with_a_header_only_report(app: Application, clock: Clock) -> None:
    clock.now = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    run = pay(app, clock, "2026-03")
    assert (run.status, run.referrers, run.total_cents) == (RunStatus.COMPLETED, 0, 0)
    assert app.blobs is not None
    assert app.blobs.get(run.report_key or "") == b"Referrer ID,Total Amount,Referral Count,Payment Status\n"


def test_a_month_that_has_not_started_or_is_malformed_is_refused_without_a_record(
    app: Application, clock: Clock
) -> None:
    with pytest.raises(RuleViolation):
        pay(app, clock, "2026-04")
    with pytest.raises(InvalidInput):
        pay(app, clock, "2026-3")
    assert app.bus.query(lambda uow: uow.payouts.list_runs(10, None)).items == []


def test_the_local_scheduler_pays_the_previous_month_at_two_on_the_first(app: Application, clock: Clock) -> None:
    sign_up_many(app, clock, enrol_referrer(app, "alice"), "m", 3)
    scheduler = app.services["scheduler"]
    scheduler.run_due()  # first start: remembers the current slots without firing them
    clock.now = datetime(2026, 4, 1, 1, 59, tzinfo=UTC)
    assert "monthly-payout" not in scheduler.run_due()
    clock.now = datetime(2026, 4, 1, 2, 0, 30, tzinfo=UTC)
    assert "monthly-payout" in scheduler.run_due()
    run = app.bus.query(lambda uow: uow.payouts.get_run("2026-03"))
    assert (run.status, run.rewards, run.total_cents) == (RunStatus.COMPLETED, 3, 3000)
    assert app.bus.query(lambda uow: uow.payouts.get_run("2026-04")) is None


def test_the_completed_run_notifies_the_operators(tmp_path: Path) -> None:
    application = bootstrap(make_settings(tmp_path))
    try:
        code = enrol_referrer(application, "alice")
        application.bus.handle(SignUpWithReferral(user_id="new-1", referral_code=code))
        assert application.blobs is not None
        month = str(Month.of(application.clock()))
        run_payout(application.bus.uow_factory, application.blobs, application.clock, month)
        application.worker.drain()
        page = application.bus.query(lambda uow: uow.notifications.list("system:operations", 10, None))
        assert [n.type for n in page.items] == ["payout_completed"]
        assert page.items[0].data["totalAmount"] == "10.00"
        assert "$10.00" in page.items[0].message["default"]
    finally:
        application.close()
