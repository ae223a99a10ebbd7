"""The local scheduler: fires the shared schedule definitions (``accrue.domain.schedules``).

Each job receives the instant it was due (e.g. 02:00 UTC on the 1st), so it can derive its work
from that (the previous month) rather than from the wall clock. A fire missed while the machine
was off is caught up once at start. Jobs must be idempotent: a fire may be repeated after a crash.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from croniter import croniter

from accrue.domain.schedules import Schedule
from accrue.ports import UnitOfWork

log = logging.getLogger(__name__)

Job = Callable[[datetime], object]


class Scheduler:
    def __init__(
        self,
        uow_factory: Callable[..., UnitOfWork],
        clock: Callable[[], datetime],
        *,
        tick_seconds: float = 30.0,
    ) -> None:
        self.uow_factory = uow_factory
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.jobs: dict[str, tuple[Schedule, Job]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, schedule: Schedule, job: Job) -> None:
        self.jobs[schedule.name] = (schedule, job)

    @staticmethod
    def previous_fire(schedule: Schedule, now: datetime) -> datetime:
        fire: datetime = croniter(schedule.cron, now).get_prev(datetime)
        return fire

    @staticmethod
    def next_fire(schedule: Schedule, now: datetime) -> datetime:
        fire: datetime = croniter(schedule.cron, now).get_next(datetime)
        return fire

    def run_due(self) -> list[str]:
        """Fire every job whose latest due instant has not fired yet. Returns the names fired."""
        fired: list[str] = []
        now = self.clock()
        for name, (schedule, job) in self.jobs.items():
            due = self.previous_fire(schedule, now)
            with self.uow_factory(readonly=True) as uow:
                last = uow.schedule_runs.last_fire(name)
            if last is None:
                # First start: remember the current slot without firing, so a new install does not
                # immediately run last month's payout; the next due instant fires normally.
                self._record(name, due, "skipped-first-start", None)
                continue
            if last >= due:
                continue
            status, error = "ok", None
            try:
                job(due)
            except Exception as exc:
                log.exception("scheduled job %s failed", name)
                status, error = "failed", f"{type(exc).__name__}: {exc}"
            self._record(name, due, status, error)
            fired.append(name)
        return fired

    def _record(self, name: str, due: datetime, status: str, error: str | None) -> None:
        with self.uow_factory() as uow:
            uow.schedule_runs.record(name, due, status, error)
            uow.commit()

    def start(self) -> None:
        if self._thread is not None or not self.jobs:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception:  # pragma: no cover - keep the scheduler alive
                log.exception("scheduler tick failed")
            self._stop.wait(self.tick_seconds)
