"""One contract suite, two backends: every test here runs against the SQLite/local adapters and
against the AWS adapters on moto, with the same assertions."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from accrue.adapters.aws.dynamodb_uow import DynamoUnitOfWork
from accrue.adapters.sqlite.database import Database
from accrue.adapters.sqlite.unit_of_work import SqliteUnitOfWork
from accrue.domain.members import Member
from accrue.ports import UnitOfWork
from tests.moto_support import TABLE_NAME, client, create_table, fake_aws_environment

# Which events have subscribers in the contract suite (and under which handler names).
SUBSCRIBERS: dict[str, tuple[str, ...]] = {
    "TierUpgraded": ("notify", "webhook"),
    "MilestonesReached": ("notify",),
    "UserCreated": ("welcome",),
}


def subscribers(event_name: str) -> Sequence[str]:
    return SUBSCRIBERS.get(event_name, ())


@dataclass
class Backend:
    name: str
    factory: Callable[..., UnitOfWork]
    clients: dict[str, Any]

    def uow(self, readonly: bool = False) -> UnitOfWork:
        return self.factory(readonly=readonly)


@pytest.fixture
def dynamodb_backend() -> Iterator[Backend]:
    with fake_aws_environment(), mock_aws():
        dynamodb = client("dynamodb")
        create_table(dynamodb)

        def factory(readonly: bool = False) -> UnitOfWork:
            return DynamoUnitOfWork(dynamodb, TABLE_NAME, subscribers, readonly=readonly)

        yield Backend("dynamodb", factory, {"dynamodb": dynamodb})


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    db = Database(tmp_path / "contract.db")
    db.migrate()

    def factory(readonly: bool = False) -> UnitOfWork:
        return SqliteUnitOfWork(db, subscribers, readonly=readonly)

    yield Backend("sqlite", factory, {})
    db.close()


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(f"{request.param}_backend")  # type: ignore[no-any-return]


NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


def new_member(user_id: str, email: str | None = None, code: str = "") -> Member:
    return Member(
        user_id=user_id,
        email=email if email is not None else f"{user_id}@example.com",
        name=user_id.title(),
        created_at=NOW,
        referral_code=code or ("R" + user_id.upper().replace("-", ""))[:8].ljust(8, "X"),
    )
