"""Within one group-committed transaction, which webhook endpoints want an event is asked once and
remembered; a change to the endpoints, or a rolled-back write, makes the next write ask again."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from accrue.bootstrap import Application, bootstrap
from accrue.domain.commands import RecordTransaction
from accrue.domain.webhooks import WebhookEndpoint
from tests.conftest import make_settings
from tests.contract.conftest import NOW


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    application = bootstrap(make_settings(tmp_path, workers_enabled=False))
    yield application
    application.close()


def purchase(app: Application, member: str) -> Callable[[], Any]:
    command = RecordTransaction(member_id=member, amount=Decimal("100.00"), transaction_type="purchase")
    return lambda: app.bus.handle(command)


def add_endpoint(app: Application) -> None:
    with app.bus.uow_factory() as uow:
        uow.webhook_endpoints.add(
            WebhookEndpoint("whe_1", "https://hooks.example.com/in", ("points.earned",), "whsec_test", NOW)
        )
        uow.commit()


def members_with_webhook_rows(app: Application) -> set[str]:
    assert app.database is not None
    rows = app.database.connection().execute("SELECT payload FROM outbox WHERE handler = 'deliver_webhooks'")
    return {json.loads(payload)["user_id"] for (payload,) in rows}


def run_group(app: Application, jobs: list[Callable[[], Any]]) -> list[bool]:
    assert app.database is not None
    return [ok for ok, _ in app.database.run_group(jobs)]


def test_an_endpoint_added_inside_a_group_is_seen_by_the_writes_after_it(app: Application) -> None:
    assert run_group(app, [purchase(app, "before"), lambda: add_endpoint(app), purchase(app, "after")]) == [True] * 3
    assert members_with_webhook_rows(app) == {"after"}


def test_a_rolled_back_change_to_the_endpoints_is_forgotten_with_it(app: Application) -> None:
    add_endpoint(app)

    def disable_then_fail() -> None:
        with app.bus.uow_factory() as uow:
            uow.webhook_endpoints.disable("whe_1", "testing", NOW)
            assert uow.webhook_endpoints.subscribed_to("points.earned") == []  # remembered ...
            raise RuntimeError("the write fails: the endpoint stays enabled")

    outcomes = run_group(app, [purchase(app, "first"), disable_then_fail, purchase(app, "second")])
    assert outcomes == [True, False, True]
    assert members_with_webhook_rows(app) == {"first", "second"}  # ... and forgotten on rollback


def test_a_steady_answer_is_asked_once_per_group_and_a_changing_one_at_every_commit(app: Application) -> None:
    asked: list[tuple[str, str]] = []
    for name in ("deliver_webhooks", "award_milestone_bonus"):
        real = app.bus.interest[name]
        app.bus.interest[name] = lambda uow, event, real=real, name=name: (
            asked.append((name, event)) or real(uow, event)
        )
    # Five first purchases of 100.00 (10 points each): PointsEarned each; no milestone is crossed.
    assert run_group(app, [purchase(app, f"m{n}") for n in range(5)]) == [True] * 5
    assert asked == [("deliver_webhooks", "PointsEarned")]
    asked.clear()
    # Three members crossing the 100-point milestone (1 000.00 each): the milestone campaign, whose
    # answer depends on the time, is asked at every commit.
    jobs = [
        (
            lambda m=m: app.bus.handle(
                RecordTransaction(member_id=m, amount=Decimal("1000.00"), transaction_type="purchase")
            )
        )
        for m in ("big1", "big2", "big3")
    ]
    assert run_group(app, jobs) == [True] * 3
    assert [a for a in asked if a[0] == "award_milestone_bonus"] == [("award_milestone_bonus", "MilestonesReached")] * 3
