"""The outbox worker on a real SQLite file: delivery after commit, exponential backoff, dead letter after
five failures, and re-drive."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from accrue.adapters.local.templates import JinjaRenderer
from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.ports import OutboxMessage
from accrue.service_layer import dead_letters
from tests.conftest import make_settings

HANDLER = "notify_tier_upgraded"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class SwitchableRenderer:
    """The real templates, unless the template service is 'down'."""

    def __init__(self) -> None:
        self.real = JinjaRenderer()
        self.down = False
        self.calls = 0

    def render(self, template: str, context: Mapping[str, Any]) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError("template service unavailable")
        return self.real.render(template, context)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def renderer() -> SwitchableRenderer:
    return SwitchableRenderer()


@pytest.fixture
def application(tmp_path: Path, clock: FakeClock, renderer: SwitchableRenderer) -> Iterator[Application]:
    settings = make_settings(tmp_path, outbox_base_delay_seconds=1, outbox_max_attempts=5)
    app = bootstrap(settings, clock=clock, renderer=renderer)
    yield app
    app.close()


def upgrade_member(app: Application, member_id: str = "m-1") -> None:
    app.bus.handle(
        commands.RecordTransaction(member_id=member_id, amount=Decimal("12000.00"), transaction_type="purchase")
    )


def message(app: Application, handler: str = HANDLER) -> OutboxMessage:
    def find(uow: Any) -> OutboxMessage:
        row = uow.connection.execute("SELECT message_id FROM outbox WHERE handler = ?", (handler,)).fetchone()
        found: OutboxMessage = uow.outbox.get(row[0])
        return found

    found: OutboxMessage = app.bus.query(find)
    return found


def available_at(app: Application, message_id: int) -> float:
    value: float = app.bus.query(
        lambda uow: uow.connection.execute(
            "SELECT available_at FROM outbox WHERE message_id = ?", (message_id,)
        ).fetchone()[0]
    )
    return value


def notifications(app: Application, user_id: str = "m-1") -> list[Any]:
    return list(app.bus.query(lambda uow: uow.notifications.list(user_id, 100, None)).items)


def test_events_are_written_to_the_outbox_with_the_state_change_and_delivered_after_commit(
    application: Application,
) -> None:
    upgrade_member(application)
    assert message(application).status == "pending"
    assert notifications(application) == []  # nothing is delivered inside the command's transaction
    application.worker.drain()
    assert message(application).status == "done"
    assert message(application, "notify_milestones_reached").status == "done"
    assert sorted(n.type for n in notifications(application)) == ["milestone", "tier_upgrade"]


def test_a_failing_handler_is_retried_after_1_2_4_and_8_seconds_then_dead_lettered_on_the_fifth_failure(
    application: Application, clock: FakeClock, renderer: SwitchableRenderer
) -> None:
    upgrade_member(application)
    renderer.down = True
    message_id = message(application).message_id
    waits = []
    for attempt in range(1, 6):
        application.worker.run_once()
        current = message(application)
        assert current.attempts == attempt
        assert current.last_error == "ConnectionError: template service unavailable"
        if attempt < 5:
            assert current.status == "pending"
            wait = available_at(application, message_id) - clock.now.timestamp()
            waits.append(wait)
            # Not due before its time: another round changes nothing.
            clock.advance(wait - 0.5)
            application.worker.run_once()
            assert message(application).attempts == attempt
            clock.advance(0.5)
    assert waits == [1, 2, 4, 8]
    assert message(application).status == "dead"

    # Dead letters stay put: no further attempts however long we wait.
    clock.advance(3600)
    application.worker.drain()
    assert message(application).attempts == 5
    assert [n.type for n in notifications(application) if n.type == "tier_upgrade"] == []

    listed = [d for d in dead_letters.list_all(application, 100) if d.handler == HANDLER]
    assert len(listed) == 1
    assert listed[0].id == f"outbox:{message_id}"
    assert listed[0].name == "TierUpgraded"
    assert listed[0].attempts == 5
    assert listed[0].payload["new_tier"] == "SILVER"


def test_a_redriven_dead_letter_is_delivered_once_when_the_cause_is_fixed(
    application: Application, renderer: SwitchableRenderer
) -> None:
    upgrade_member(application)
    renderer.down = True
    for _ in range(5):
        application.worker.run_once()
        application.worker.clock.advance(3600)  # type: ignore[attr-defined]
    dead = message(application)
    assert dead.status == "dead"

    renderer.down = False
    assert dead_letters.redrive(application, f"outbox:{dead.message_id}") is True
    assert message(application).status == "pending"
    assert message(application).attempts == 0
    application.worker.drain()
    assert message(application).status == "done"
    assert [n.type for n in notifications(application)].count("tier_upgrade") == 1
    # Only a dead letter can be re-driven, and only once.
    assert dead_letters.redrive(application, f"outbox:{dead.message_id}") is False
    assert dead_letters.redrive(application, "outbox:999999") is False
    assert dead_letters.redrive(application, "nosuchsource:1") is False


def test_a_handler_that_fails_twice_then_succeeds_writes_its_notification_exactly_once(
    application: Application, clock: FakeClock, renderer: SwitchableRenderer
) -> None:
    upgrade_member(application)
    renderer.down = True
    application.worker.run_once()
    clock.advance(1)
    application.worker.run_once()
    renderer.down = False
    clock.advance(2)
    application.worker.drain()
    assert message(application).status == "done"
    assert message(application).attempts == 3
    assert [n.type for n in notifications(application)].count("tier_upgrade") == 1


def test_the_background_worker_delivers_soon_after_commit_without_waiting_for_its_poll(tmp_path: Path) -> None:
    # A long poll interval: delivery within the test's wait shows the commit woke the worker.
    app = bootstrap(make_settings(tmp_path, outbox_poll_seconds=60))
    app.worker.start()
    try:
        upgrade_member(app)
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while datetime.now(UTC) < deadline and len(notifications(app)) < 2:
            app.worker._wake.wait(0.05)
        assert sorted(n.type for n in notifications(app)) == ["milestone", "tier_upgrade"]
    finally:
        app.close()
