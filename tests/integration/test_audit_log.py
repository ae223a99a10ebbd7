"""The audit log in SQLite: append-only by trigger, chained across transactions and threads, and
`accrue audit verify` (a real process) passes on a real run and finds a tampered entry.

Tampering needs a bypass, since UPDATE and DELETE are refused by triggers: one test drops the
trigger (what someone with write access to the file could do with sqlite3), the other edits the
database file's bytes directly, below SQLite. Either way the chain gives it away.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from accrue.bootstrap import Application, bootstrap
from accrue.domain.audit import AuditRecord, verify
from accrue.domain.payments import CreatePayment
from accrue.service_layer.payments import PaymentComponents
from tests.cli_support import audit_verify
from tests.conftest import make_settings


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    application = bootstrap(make_settings(tmp_path, workers_enabled=False, payment_retry_interval_seconds=0.001))
    yield application
    application.close()


def real_run(app: Application) -> None:
    for n, amount in enumerate(["10.00", "10.51", "10.52", "20.00"]):
        app.bus.handle(CreatePayment(payment_id=f"pay_{n}", amount=Decimal(amount), actor="ops"))
    csv = app.settings.blob_dir.parent / "run.csv"
    csv.write_text("payment_id,amount,currency\nfile_1,1.00,USD\nfile_2,oops,USD\n")
    components: PaymentComponents = app.services["payments"]
    components.batches.ingest_path(csv, source="cli")
    components.worker.drain(until_idle_seconds=0.2)


def test_the_log_refuses_updates_and_deletes(app: Application) -> None:
    real_run(app)
    conn = sqlite3.connect(app.settings.db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'forger' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="permanent"):
        conn.execute("DELETE FROM audit_log WHERE seq = 1")
    conn.close()


def test_appends_from_many_threads_extend_one_unbroken_chain(app: Application) -> None:
    def append(thread: int) -> None:
        for n in range(20):
            with app.bus.uow_factory() as uow:
                record = AuditRecord(f"t{thread}", "test.append", "test", f"{thread}-{n}", datetime.now(UTC), {"n": n})
                uow.audit.append([record, record])
                uow.commit()

    threads = [threading.Thread(target=append, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = app.bus.query(lambda uow: verify(uow.audit.iter_all(batch_size=7)))
    assert report.ok and report.checked == 4 * 20 * 2


def test_verify_passes_on_a_real_run_and_finds_an_entry_changed_with_the_trigger_dropped(app: Application) -> None:
    real_run(app)
    db = app.settings.db
    app.close()
    passed = audit_verify(db)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith("audit log OK: ")

    conn = sqlite3.connect(db)
    target = conn.execute(
        "SELECT seq FROM audit_log WHERE action = 'payment.processed' ORDER BY seq LIMIT 1"
    ).fetchone()[0]
    conn.execute("DROP TRIGGER audit_log_is_append_only")
    conn.execute(
        "UPDATE audit_log SET details = replace(details, 'sandbox_ch_', 'forged_ch_') WHERE seq = ?", (target,)
    )
    conn.commit()
    conn.close()
    broken = audit_verify(db)
    assert broken.returncode == 1
    assert f"audit log BROKEN at entry {target}: content does not match its hash" in broken.stdout
    assert f"({target - 1} entries before it are intact)" in broken.stdout


def test_verify_finds_an_entry_edited_in_the_database_files_bytes(app: Application) -> None:
    real_run(app)
    db = app.settings.db
    with app.bus.uow_factory() as uow:
        seq = uow.connection.execute(
            "SELECT seq FROM audit_log WHERE subject_id = 'pay_3' AND action = 'payment.created'"
        ).fetchone()[0]
        uow.rollback()
    app.database.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
    app.close()
    data = db.read_bytes()
    original = b'"amount":"20.00","currency":"USD","source":"api"'
    assert data.count(original) == 1
    # Same length, so the file stays a valid database: only the chain can tell.
    db.write_bytes(data.replace(original, b'"amount":"90.00","currency":"USD","source":"api"'))
    broken = audit_verify(db)
    assert broken.returncode == 1
    assert f"audit log BROKEN at entry {seq}: content does not match its hash" in broken.stdout


def test_verify_finds_a_payment_row_changed_after_its_file_was_ingested(app: Application) -> None:
    real_run(app)
    db = app.settings.db
    app.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE payments SET amount_minor = 99999 WHERE payment_id = 'file_1'")
    conn.commit()
    conn.close()
    broken = audit_verify(db)
    assert broken.returncode == 1
    assert "created from lines 2-3 no longer match the digest it recorded" in broken.stdout
