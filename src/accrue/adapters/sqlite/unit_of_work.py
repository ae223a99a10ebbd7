"""The SQLite unit of work: one transaction, events into the outbox table in that same transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from accrue.adapters.sqlite.campaigns import SqliteCampaignRepository
from accrue.adapters.sqlite.codec import event_payload
from accrue.adapters.sqlite.database import Database, WriteUnit
from accrue.adapters.sqlite.gdpr import SqlitePersonalDataRepository
from accrue.adapters.sqlite.notification_channels import (
    SqliteNotificationSendRepository,
    SqlitePreferenceRepository,
)
from accrue.adapters.sqlite.payments import (
    SqliteAuditLogRepository,
    SqlitePaymentBatchRepository,
    SqlitePaymentRepository,
)
from accrue.adapters.sqlite.queue import SqliteQueueWriter
from accrue.adapters.sqlite.referrals import SqlitePayoutRepository, SqliteReferralRepository
from accrue.adapters.sqlite.repositories import (
    SqliteImportRepository,
    SqliteLedgerRepository,
    SqliteMemberRepository,
    SqliteNotificationRepository,
    SqliteOrderRepository,
    SqliteOutboxRepository,
    SqliteScheduleRunRepository,
)
from accrue.adapters.sqlite.webhooks import (
    SqliteWebhookDeliveryRepository,
    SqliteWebhookEndpointRepository,
    SqliteWebhookEventRepository,
)
from accrue.domain.events import Event
from accrue.ports import UnitOfWork

Subscribers = Callable[[str], Sequence[str]]

# Attribute name -> repository class, each made from the unit of work's connection.
REPOSITORIES: dict[str, Callable[[sqlite3.Connection], object]] = {
    "members": SqliteMemberRepository,
    "ledger": SqliteLedgerRepository,
    "orders": SqliteOrderRepository,
    "notifications": SqliteNotificationRepository,
    "outbox": SqliteOutboxRepository,
    "imports": SqliteImportRepository,
    "schedule_runs": SqliteScheduleRunRepository,
    "campaigns": SqliteCampaignRepository,
    "personal_data": SqlitePersonalDataRepository,
    "payments": SqlitePaymentRepository,
    "payment_batches": SqlitePaymentBatchRepository,
    "audit": SqliteAuditLogRepository,
    "queues": SqliteQueueWriter,
    "webhook_events": SqliteWebhookEventRepository,
    "webhook_endpoints": SqliteWebhookEndpointRepository,
    "webhook_deliveries": SqliteWebhookDeliveryRepository,
    "notification_preferences": SqlitePreferenceRepository,
    "notification_sends": SqliteNotificationSendRepository,
    "referrals": SqliteReferralRepository,
    "payouts": SqlitePayoutRepository,
}


class SqliteUnitOfWork(UnitOfWork):
    """``with uow: ... uow.commit()``; leaving the block without commit rolls back.

    A write unit of work holds the database's in-process writer lock from ``__enter__`` until
    commit or rollback and starts with ``BEGIN IMMEDIATE``, so reads inside it see the latest state
    and no two writers interleave (no lost updates). A read-only one takes no lock.
    """

    outbox: SqliteOutboxRepository

    def __init__(
        self,
        db: Database,
        subscribers: Subscribers,
        *,
        readonly: bool = False,
        on_commit: Callable[[], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        interested: Callable[[str, str, UnitOfWork], bool] | None = None,
        steady: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.subscribers = subscribers
        # (handler, event name, uow) -> False when that subscriber has nothing to do with it now.
        self.interested = interested
        # event name -> whether the answer of ``interested`` holds for the whole write transaction
        # (it is then kept in the transaction's memo, which any rollback or endpoint change clears).
        self.steady = steady
        self.readonly = readonly
        self.on_commit = on_commit
        # The application's clock (outbox due times must agree with the worker's notion of now).
        self.clock = clock or (lambda: datetime.now(UTC))
        self.conn: sqlite3.Connection | None = None
        self._repository_conn: sqlite3.Connection | None = None
        # A write unit of work is a savepoint of the database's shared (group-committed) transaction.
        self._unit: WriteUnit | None = None
        self._reading = False
        self._made: list[str] = []  # the repositories made so far (see __getattr__)

    def __enter__(self) -> SqliteUnitOfWork:
        if self.readonly:
            if self.db.writing():
                # Inside this thread's own write: read through it, to see what it wrote so far.
                conn = self.db.writer_connection()
            else:
                conn = self.db.connection()
                conn.execute("BEGIN")
                self._reading = True
        else:
            self._unit = self.db.begin_write()
            conn = self._unit.conn
        self.conn = self._repository_conn = conn
        made, self._made = self._made, []
        for name in made:  # made anew, on first use, for this connection
            self.__dict__.pop(name, None)
        return self

    def __getattr__(self, name: str) -> Any:
        """A repository, made on first use in this unit of work: most use two or three of them,
        and making all twenty cost more than some of the writes they served. As when all were
        made on entry, one first used after commit reads through the same connection."""
        make = REPOSITORIES.get(name)
        conn = self.__dict__.get("_repository_conn")
        if make is None or conn is None:
            raise AttributeError(name)
        unit = self.__dict__.get("_unit")
        if make is SqliteWebhookEndpointRepository and unit is not None:
            repository: object = SqliteWebhookEndpointRepository(conn, memo=unit.group.memo)
        else:
            repository = make(conn)
        setattr(self, name, repository)
        self._made.append(name)
        return repository

    def _commit(self, events: Sequence[Event]) -> None:
        if self.conn is None:
            raise RuntimeError("commit outside the unit of work")
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot commit")
        rows: list[tuple[str, str, str, str]] = []
        wanted: dict[str, Sequence[str]] = {}
        for event in events:
            handlers = wanted.get(event.name)
            if handlers is None:
                handlers = wanted[event.name] = self._wanted_by(event.name)
            if not handlers:
                continue
            payload = event_payload(event)
            rows.extend((event.event_id, event.name, handler, payload) for handler in handlers)
        wrote_outbox = bool(rows)
        if rows:
            self.outbox.add_many(rows, self.clock())
        unit, self._unit, self.conn = self._unit, None, None
        assert unit is not None
        unit.commit()  # returns once durable
        if wrote_outbox and self.on_commit is not None:
            self.on_commit()

    def _wanted_by(self, event_name: str) -> Sequence[str]:
        """The subscribers that want an event of this name, asked once per commit, or once per
        write transaction when the answer is steady (most postings' PointsEarned)."""
        steady = self._unit is not None and self.steady is not None and self.steady(event_name)
        memo = self._unit.group.memo if steady and self._unit is not None else None
        if memo is not None:
            known = memo.get(("wanted_by", event_name))
            if known is not None:
                return cast(Sequence[str], known)
        handlers = self.subscribers(event_name)
        wanted = handlers if self.interested is None else [h for h in handlers if self.interested(h, event_name, self)]
        if memo is not None:
            memo[("wanted_by", event_name)] = tuple(wanted)
        return wanted

    def rollback(self) -> None:
        unit, self._unit = self._unit, None
        if unit is not None:
            unit.rollback()
        elif self._reading and self.conn is not None and self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._reading = False
        self.conn = None

    @property
    def connection(self) -> sqlite3.Connection:
        """The open transaction's connection, for repositories of feature modules."""
        if self.conn is None:
            raise RuntimeError("the unit of work is not open")
        return self.conn
