"""The SQLite adapter on real files: migrations, atomic units of work, the ledger check and the
idempotency store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from accrue.adapters.sqlite import database as database_module
from accrue.adapters.sqlite.database import Database
from accrue.adapters.sqlite.idempotency import SqliteIdempotencyStore
from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.domain.errors import InsufficientPoints
from accrue.ports import InProgress, Mismatch, Replay, Started
from tests.conftest import make_settings

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


# -- migrations -----------------------------------------------------------------------------------


def test_migrations_apply_once_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    first = db.migrate()
    assert first and first == sorted(first)
    assert first[0] == "0001_core"
    schema_before = db.connection().execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert db.migrate() == []
    db.close()
    reopened = Database(tmp_path / "m.db")
    assert reopened.migrate() == []
    schema_after = reopened.connection().execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert schema_after == schema_before
    versions = [r[0] for r in reopened.connection().execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == first
    reopened.close()


def test_a_failing_migration_leaves_nothing_behind_and_is_retried_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "broken_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "0001_good.sql").write_text("CREATE TABLE good (id INTEGER PRIMARY KEY);")
    (package / "0002_bad.sql").write_text("CREATE TABLE half (id INTEGER);\nINSERT INTO nowhere VALUES (1);")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(database_module, "MIGRATIONS_PACKAGE", "broken_migrations")
    db = Database(tmp_path / "b.db")
    with pytest.raises(sqlite3.OperationalError):
        db.migrate()
    conn = db.connection()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "good" in tables and "half" not in tables
    assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == ["0001_good"]
    (package / "0002_bad.sql").write_text("CREATE TABLE half (id INTEGER);")
    assert db.migrate() == ["0002_bad"]
    db.close()


def test_the_rebuilt_outbox_and_sends_keep_their_rows_and_rules_without_a_temporary_table_per_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 0364 rebuilds two tables to state their checks as comparisons (SQLite builds a
    temporary b-tree per row for ``IN`` with three values or more): rows written before it are kept,
    the rules still hold, and no write of the pipeline builds such a b-tree any more."""
    from importlib import resources

    earlier = tmp_path / "before_0364"
    earlier.mkdir()
    (earlier / "__init__.py").write_text("")
    for migration in resources.files(database_module.MIGRATIONS_PACKAGE).iterdir():
        if migration.name.endswith(".sql") and migration.name < "0364":
            (earlier / migration.name).write_text(migration.read_text(encoding="utf-8"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(database_module, "MIGRATIONS_PACKAGE", "before_0364")
    db = Database(tmp_path / "r.db")
    db.migrate()
    outbox_row = (7, "evt_1", "TierUpgraded", "notify", "{}", "dead", 5, 1.5, "boom", "t0", "t1")
    send_row = (3, "evt_1:tier_upgrade:sms", "ntf_1", "ada", "sms", "skipped", "no sms address", 0, None, "t0", "t0")
    with db.write() as conn:
        conn.execute("INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?,?,?)", outbox_row)
        conn.execute("INSERT INTO notification_sends VALUES (?,?,?,?,?,?,?,?,?,?,?)", send_row)
    monkeypatch.setattr(database_module, "MIGRATIONS_PACKAGE", "accrue.adapters.sqlite.migrations")
    assert "0364_checks_without_in_lists" in db.migrate()
    conn = db.connection()
    assert [tuple(r) for r in conn.execute("SELECT * FROM outbox")] == [outbox_row]
    assert [tuple(r) for r in conn.execute("SELECT * FROM notification_sends")] == [send_row]
    with pytest.raises(sqlite3.IntegrityError), db.write() as writer:
        writer.execute("UPDATE outbox SET status = 'lost' WHERE message_id = 7")
    with pytest.raises(sqlite3.IntegrityError), db.write() as writer:
        writer.execute("UPDATE notification_sends SET channel = 'fax' WHERE send_id = 3")
    statements = [
        "INSERT INTO outbox (event_id, event_name, handler, payload, available_at, created_at, updated_at) "
        "VALUES ('e', 'n', 'h', '{}', 0, 't', 't')",
        "UPDATE outbox SET status = 'done' WHERE message_id = 7",
        "INSERT INTO notification_sends (dedupe_key, notification_id, user_id, channel, status, created_at, "
        "updated_at) VALUES ('k', 'n', 'u', 'push', 'sent', 't', 't')",
    ]
    for sql in statements:
        opcodes = [row[1] for row in conn.execute("EXPLAIN " + sql)]
        assert "OpenEphemeral" not in opcodes, sql
    db.close()


def test_the_database_runs_in_wal_mode_with_full_sync_unless_configured(tmp_path: Path) -> None:
    full = Database(tmp_path / "f.db")
    assert full.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert full.connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    normal = Database(tmp_path / "n.db", synchronous="NORMAL")
    assert normal.connection().execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError):
        Database(tmp_path / "x.db", synchronous="OFF")
    full.close()
    normal.close()


# -- atomic units of work and the ledger check ----------------------------------------------------


@pytest.fixture
def application(tmp_path: Path) -> Iterator[Application]:
    app = bootstrap(make_settings(tmp_path))
    yield app
    app.close()


def counts(app: Application) -> tuple[int, int, int]:
    with sqlite3.connect(app.settings.db) as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("members", "transfers", "outbox")
        )


def test_a_command_that_fails_half_way_writes_nothing_not_even_its_events(application: Application) -> None:
    application.bus.handle(
        commands.RecordTransaction(member_id="m-1", amount=Decimal("12000"), transaction_type="purchase")
    )
    before = counts(application)
    with pytest.raises(InsufficientPoints):
        application.bus.handle(commands.RedeemPoints(user_id="m-1", points=999_999))
    assert counts(application) == before


def test_the_ledger_check_passes_on_real_postings_and_names_a_tampered_balance(application: Application) -> None:
    for amount in ("100", "12000", "250.50"):
        application.bus.handle(
            commands.RecordTransaction(member_id="m-1", amount=Decimal(amount), transaction_type="purchase")
        )
    application.bus.handle(commands.RedeemPoints(user_id="m-1", points=300))
    assert application.bus.query(lambda uow: uow.ledger.check()) == []

    with sqlite3.connect(application.settings.db) as conn:
        conn.execute("UPDATE members SET balance = balance + 7 WHERE user_id = 'm-1'")
    problems = application.bus.query(lambda uow: uow.ledger.check())
    assert any("member m-1: stored balance" in p and "sum of postings" in p for p in problems)


def test_ledger_transfers_can_be_neither_edited_nor_deleted(application: Application) -> None:
    application.bus.handle(
        commands.RecordTransaction(member_id="m-1", amount=Decimal("100"), transaction_type="purchase")
    )
    with sqlite3.connect(application.settings.db) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            conn.execute("UPDATE transfers SET amount = 1")
        with pytest.raises(sqlite3.IntegrityError, match="permanent"):
            conn.execute("DELETE FROM transfers")


# -- idempotency store ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SqliteIdempotencyStore:
    db = Database(tmp_path / "i.db")
    db.migrate()
    return SqliteIdempotencyStore(db, ttl_seconds=86_400, lock_seconds=60)


def test_a_key_starts_once_then_is_in_progress_then_replays_its_stored_response(store: SqliteIdempotencyStore) -> None:
    assert store.begin("s", "k", "h1", NOW) == Started()
    assert store.begin("s", "k", "h1", NOW) == InProgress()
    store.complete("s", "k", 201, b'{"ok":true}', NOW)
    assert store.begin("s", "k", "h1", NOW + timedelta(hours=23)) == Replay(status_code=201, body=b'{"ok":true}')
    assert store.begin("s", "k", "h2", NOW) == Mismatch()
    assert store.begin("other-scope", "k", "h2", NOW) == Started()


def test_a_key_is_kept_24_hours_and_then_may_be_used_afresh(store: SqliteIdempotencyStore) -> None:
    store.begin("s", "k", "h1", NOW)
    store.complete("s", "k", 200, b"{}", NOW)
    assert isinstance(store.begin("s", "k", "h2", NOW + timedelta(hours=24) - timedelta(seconds=1)), Mismatch)
    assert store.begin("s", "k", "h2", NOW + timedelta(hours=24)) == Started()


def test_a_key_left_locked_by_a_crashed_request_can_be_taken_after_the_lock_expires(
    store: SqliteIdempotencyStore,
) -> None:
    assert store.begin("s", "k", "h", NOW) == Started()
    assert store.begin("s", "k", "h", NOW + timedelta(seconds=59)) == InProgress()
    assert store.begin("s", "k", "h", NOW + timedelta(seconds=61)) == Started()


def test_a_released_key_can_be_retried_and_expired_keys_are_purged(store: SqliteIdempotencyStore) -> None:
    store.begin("s", "k", "h", NOW)
    store.release("s", "k")
    assert store.begin("s", "k", "h", NOW) == Started()
    store.complete("s", "k", 200, b"{}", NOW)
    store.release("s", "k")  # a completed key is never released
    assert isinstance(store.begin("s", "k", "h", NOW), Replay)
    assert store.purge_expired(NOW + timedelta(days=2)) == 1


# -- transaction groups (many units of work, one SQLite transaction) --------------------------------


def test_units_of_work_in_a_group_are_each_atomic_and_become_durable_together(application: Application) -> None:
    database = application.database
    assert database is not None
    with database.group():
        application.bus.handle(
            commands.RecordTransaction(member_id="g-1", amount=Decimal("100"), transaction_type="purchase")
        )
        with pytest.raises(InsufficientPoints):
            application.bus.handle(commands.RedeemPoints(user_id="g-1", points=11))
        application.bus.handle(commands.RedeemPoints(user_id="g-1", points=4))
        # Another connection sees nothing until the group ends.
        assert counts_elsewhere(application) == (0, 0)
    assert counts_elsewhere(application) == (1, 2)
    points = application.bus.query(lambda uow: uow.members.get("g-1"))
    assert points.balance == 6
    assert application.bus.query(lambda uow: uow.ledger.check()) == []


def test_a_group_that_fails_leaves_none_of_its_units_of_work(application: Application) -> None:
    database = application.database
    assert database is not None
    with pytest.raises(RuntimeError, match="power cut"), database.group():
        application.bus.handle(
            commands.RecordTransaction(member_id="g-2", amount=Decimal("100"), transaction_type="purchase")
        )
        raise RuntimeError("power cut")
    assert counts_elsewhere(application) == (0, 0)


def counts_elsewhere(app: Application) -> tuple[int, int]:
    with sqlite3.connect(app.settings.db) as conn:
        return (
            conn.execute("SELECT COUNT(*) FROM members").fetchone()[0],
            conn.execute("SELECT COUNT(*) FROM transfers").fetchone()[0],
        )
