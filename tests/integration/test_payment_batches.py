"""Batch files on a real SQLite file and blob folder: rows judged one by one, duplicates counted,
large transactions, a file is its own idempotency key, an interrupted import resumes exactly."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.domain.errors import InvalidInput
from accrue.domain.payments import BatchStatus, CreatePayment, PaymentStatus
from accrue.service_layer.batches import MAX_LINE_BYTES, PaymentBatches
from accrue.service_layer.payments import PaymentComponents, payment_audit, verify_audit_log
from tests.conftest import make_settings

HEADER = "payment_id,amount,currency\n"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    application = bootstrap(
        make_settings(tmp_path, workers_enabled=False, payment_retry_interval_seconds=0.001, payment_batch_chunk_rows=7)
    )
    yield application
    application.close()


def parts(app: Application) -> PaymentComponents:
    found: PaymentComponents = app.services["payments"]
    return found


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def count(app: Application, sql: str, *params: Any) -> int:
    return int(app.bus.query(lambda uow: uow.connection.execute(sql, params).fetchone()[0]))


def issues(app: Application, batch_id: str) -> list[tuple[int, str, str]]:
    page = app.bus.query(lambda uow: uow.payment_batches.issues(batch_id, None, 1000, None))
    return [(i.line, i.kind, i.reason) for i in page.items]


def test_each_row_is_judged_on_its_own_and_a_bad_row_never_sinks_the_file(app: Application, tmp_path: Path) -> None:
    app.bus.handle(CreatePayment(payment_id="stored_1", amount=1))  # type: ignore[arg-type]
    body = (
        HEADER
        + "ok_1,10.00,USD\n"  # 2
        + ",5.00,USD\n"  # 3 missing id
        + "ok_2,abc,USD\n"  # 4 not a number
        + "ok_1,11.00,USD\n"  # 5 duplicate of line 2
        + "\n"  # 6 blank: not a row
        + "ok_3,-1,USD\n"  # 7 negative
        + "ok_4,1.001,USD\n"  # 8 too many decimals
        + "stored_1,1.00,USD\n"  # 9 already stored
        + "ok_5,3,XYZ\n"  # 10 unknown currency
        + "ok_6,7,JPY\r\n"  # 11 CRLF is fine
        + "ok_7,0,EUR\n"  # 12 zero
        + "ok_8,1.00\n"  # 13 missing column
        + "ok_9,12.34,GBP"  # 14 no final newline
    )
    batch, created = parts(app).batches.ingest_path(write(tmp_path / "mixed.csv", body), source="cli", actor="ops")
    assert created and batch.status is BatchStatus.COMPLETED
    assert (batch.total_rows, batch.accepted_rows, batch.rejected_rows, batch.duplicate_rows) == (12, 3, 7, 2)
    assert issues(app, batch.batch_id) == [
        (3, "invalid", "payment_id: is required"),
        (4, "invalid", "amount: must be a decimal number"),
        (5, "duplicate", "payment_id: ok_1 duplicates line 2"),
        (7, "invalid", "amount: must be greater than 0"),
        (8, "invalid", "amount: has more than 2 decimal places allowed for USD"),
        (9, "duplicate", "payment_id: stored_1 already exists"),
        (10, "invalid", "currency: 'XYZ' is not an ISO 4217 currency code"),
        (12, "invalid", "amount: must be greater than 0"),
        (13, "invalid", "expected 3 columns, got 2"),
    ]
    stored = {
        p.payment_id: (p.amount_minor, p.currency, p.batch_line, p.status)
        for p in app.bus.query(lambda uow: uow.payments.list(None, None, None, 100, None)).items
        if p.batch_id == batch.batch_id
    }
    assert stored == {
        "ok_1": (1000, "USD", 2, PaymentStatus.PENDING),
        "ok_6": (7, "JPY", 11, PaymentStatus.PENDING),
        "ok_9": (1234, "GBP", 14, PaymentStatus.PENDING),
    }
    assert count(app, "SELECT COUNT(*) FROM payments WHERE payment_id = 'ok_1'") == 1


def test_duplicates_across_transactions_of_one_file_are_caught_by_the_store(app: Application, tmp_path: Path) -> None:
    rows = "".join(f"id_{n},1.00,USD\n" for n in range(10)) + "id_3,2.00,USD\n" + "id_9,2.00,USD\n"
    batch, _ = parts(app).batches.ingest_path(write(tmp_path / "dups.csv", HEADER + rows), source="cli")
    assert (batch.accepted_rows, batch.duplicate_rows) == (10, 2)
    assert issues(app, batch.batch_id) == [
        (12, "duplicate", "payment_id: id_3 duplicates line 5"),
        (13, "duplicate", "payment_id: id_9 duplicates line 11"),
    ]


def test_the_same_file_again_finds_its_batch_and_creates_nothing(app: Application, tmp_path: Path) -> None:
    path = write(tmp_path / "once.csv", HEADER + "".join(f"once_{n},2.50,EUR\n" for n in range(20)))
    first, created = parts(app).batches.ingest_path(path, source="cli")
    tables = ("payments", "queue_messages", "audit_log", "payment_batches", "payment_batch_issues")
    before = {t: count(app, f"SELECT COUNT(*) FROM {t}") for t in tables}
    again, created_again = parts(app).batches.ingest_path(
        write(tmp_path / "renamed.csv", path.read_bytes()), source="cli"
    )
    assert created and not created_again
    assert again.batch_id == first.batch_id and again.accepted_rows == 20
    assert {t: count(app, f"SELECT COUNT(*) FROM {t}") for t in tables} == before


def test_rows_and_their_messages_are_written_in_transactions_of_many_rows(app: Application, tmp_path: Path) -> None:
    path = write(tmp_path / "twenty.csv", HEADER + "".join(f"t_{n},1.00,USD\n" for n in range(20)))
    batch, _ = parts(app).batches.ingest_path(path, source="cli")
    chunks = app.bus.query(lambda uow: uow.audit.for_subject("batch", batch.batch_id, 100, None)).items
    accepted = [e.details_dict() for e in chunks if e.action == "batch.rows_accepted"]
    # chunk_rows is 7 in this test: lines 2-8, 9-15, 16-21.
    assert [(d["firstLine"], d["lastLine"], d["accepted"]) for d in accepted] == [(2, 8, 7), (9, 15, 7), (16, 21, 6)]
    assert count(app, "SELECT COUNT(*) FROM queue_messages") == 3  # one message per chunk here (<= 100 ids)
    assert sorted(parts(app).queue.receive(10)[0].body["paymentIds"]) == sorted(f"t_{n}" for n in range(7))


def test_an_import_interrupted_mid_file_resumes_from_its_offset_without_losing_or_doubling_a_row(
    app: Application, tmp_path: Path
) -> None:
    rows = [f"r_{n},{n + 1}.00,USD" for n in range(40)]
    rows[5] = "r_5,bad,USD"
    rows[33] = "r_1,9.00,USD"
    path = write(tmp_path / "big.csv", HEADER + "\n".join(rows) + "\n")
    batches = parts(app).batches
    flushes = 0
    real_flush = batches._flush

    def crashing_flush(*args: Any, **kwargs: Any) -> Any:
        nonlocal flushes
        flushes += 1
        if flushes == 3:
            raise OSError("the process died here")
        return real_flush(*args, **kwargs)

    batches._flush = crashing_flush  # type: ignore[method-assign]
    with pytest.raises(OSError):
        batches.ingest_path(path, source="cli")
    halfway = batches.get(batches.unfinished()[0])
    assert halfway is not None and halfway.status is BatchStatus.PROCESSING
    assert (halfway.line_number, halfway.total_rows) == (15, 14)
    batches._flush = real_flush  # type: ignore[method-assign]

    done, created = batches.ingest_path(path, source="cli")
    assert not created and done.status is BatchStatus.COMPLETED
    assert (done.total_rows, done.accepted_rows, done.rejected_rows, done.duplicate_rows) == (40, 38, 1, 1)
    assert count(app, "SELECT COUNT(*) FROM payments") == 38
    assert count(app, "SELECT COUNT(DISTINCT payment_id) FROM payments") == 38
    assert issues(app, done.batch_id) == [
        (7, "invalid", "amount: must be a decimal number"),
        (35, "duplicate", "payment_id: r_1 duplicates line 3"),
    ]
    queued = [pid for m in parts(app).queue.receive(10) for pid in m.body["paymentIds"]]
    assert sorted(queued) == sorted(f"r_{n}" for n in range(40) if n not in (5, 33))
    assert app.bus.query(verify_audit_log).ok


def test_a_second_ingester_of_the_same_batch_stops_when_the_first_is_ahead(app: Application, tmp_path: Path) -> None:
    path = write(tmp_path / "race.csv", HEADER + "".join(f"race_{n},1.00,USD\n" for n in range(30)))
    batches = parts(app).batches
    registered = batches.register_file(path, source="cli")
    other = PaymentBatches(app.bus.uow_factory, app.blobs, app.clock, chunk_rows=7)  # e.g. another process
    raced = False

    def meanwhile(done: int, total: int) -> None:
        nonlocal raced
        if not raced:
            raced = True
            other.ingest(registered.batch.batch_id)

    final = batches.ingest(registered.batch.batch_id, progress=meanwhile)
    assert raced and final.status is BatchStatus.COMPLETED
    assert (final.total_rows, final.accepted_rows) == (30, 30)
    assert count(app, "SELECT COUNT(*) FROM payments") == 30


def test_a_file_without_the_header_is_refused_before_anything_is_stored(app: Application, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as refused:
        parts(app).batches.ingest_path(write(tmp_path / "nohead.csv", "p1,1.00,USD\n"), source="cli")
    assert refused.value.field == "header"
    with pytest.raises(InvalidInput) as empty:
        parts(app).batches.ingest_path(write(tmp_path / "empty.csv", ""), source="cli")
    assert empty.value.field == "body"
    assert count(app, "SELECT COUNT(*) FROM payment_batches") == 0


def test_odd_bytes_are_reported_as_rows_not_crashes(app: Application, tmp_path: Path) -> None:
    long_line = b"x" * (MAX_LINE_BYTES + 10)
    body = (
        b"\xef\xbb\xbf" + HEADER.encode() + b"ok,1.00,USD\n" + b"\xff\xfe,1.00,USD\n" + long_line + b"\nok2,2.00,USD\n"
    )
    batch, _ = parts(app).batches.ingest_path(write(tmp_path / "odd.csv", body), source="cli")
    assert (batch.accepted_rows, batch.rejected_rows) == (2, 2)
    assert issues(app, batch.batch_id) == [
        (3, "invalid", "row is not valid UTF-8 text"),
        (4, "invalid", f"line is longer than {MAX_LINE_BYTES} bytes"),
    ]


def test_a_user_id_column_links_rows_to_members_and_refuses_unknown_ones(app: Application, tmp_path: Path) -> None:
    app.bus.handle(commands.CreateMember(email="cy@example.com", name="Cy", user_id="cy"))
    body = "payment_id,amount,currency,user_id\nu_1,100.00,USD,cy\nu_2,5.00,USD,ghost\nu_3,5.00,USD,\n"
    batch, _ = parts(app).batches.ingest_path(write(tmp_path / "users.csv", body), source="cli")
    assert (batch.accepted_rows, batch.rejected_rows) == (2, 1)
    assert issues(app, batch.batch_id) == [(3, "invalid", "user_id: no member ghost")]
    parts(app).worker.drain(until_idle_seconds=0.2)
    assert app.bus.query(lambda uow: uow.members.get("cy")).balance == 100 + 10


def test_a_payments_trail_starts_with_the_file_chunk_that_created_it(app: Application, tmp_path: Path) -> None:
    path = write(tmp_path / "trail.csv", HEADER + "".join(f"tr_{n},1.00,USD\n" for n in range(10)))
    batch, _ = parts(app).batches.ingest_path(path, source="cli", actor="ops")
    parts(app).worker.drain()
    trail = app.bus.query(payment_audit, "tr_8", 100, None).items
    assert [e.action for e in trail] == [
        "batch.rows_accepted",
        "payment.processing",
        "payment.processed",
        "payment.notified",
    ]
    created = trail[0]
    assert (created.actor, created.subject_id) == ("ops", batch.batch_id)
    assert (created.details_dict()["firstLine"], created.details_dict()["lastLine"]) == (9, 11)


def test_the_digest_of_a_chunk_catches_a_payment_edited_after_ingestion(app: Application, tmp_path: Path) -> None:
    path = write(tmp_path / "digest.csv", HEADER + "".join(f"d_{n},1.00,USD\n" for n in range(10)))
    parts(app).batches.ingest_path(path, source="cli")
    assert app.bus.query(verify_audit_log).ok
    with app.bus.uow_factory() as uow:
        uow.connection.execute("UPDATE payments SET amount_minor = 100000 WHERE payment_id = 'd_4'")
        uow.commit()
    result = app.bus.query(verify_audit_log)
    assert result.chain.ok and not result.ok
    (problem,) = result.changed_rows
    assert "lines 2-8 no longer match the digest" in problem


def test_the_inbox_ingests_a_settled_file_then_moves_it_to_done(app: Application, tmp_path: Path) -> None:
    inbox = app.settings.inbox_dir
    inbox.mkdir(parents=True)
    good = write(inbox / "drop.csv", HEADER + "in_1,1.00,USD\nin_2,2.00,USD\n")
    bad = write(inbox / "junk.csv", "not,a,payments,file\n")
    fresh = write(inbox / "fresh.csv", HEADER + "in_3,1.00,USD\n")
    old = os.stat(good).st_mtime - 10
    for path in (good, bad):
        os.utime(path, (old, old))
    worker = parts(app).batch_worker
    worker.wall_clock = lambda: os.stat(fresh).st_mtime + 0.5  # fresh.csv is still being written
    found = worker.scan_inbox()
    assert len(found) == 2
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["drop.csv", "junk.csv"]
    assert fresh.exists()
    statuses = {b.file_name: (b.status, b.source, b.error) for b in (parts(app).batches.get(i) for i in found) if b}
    assert statuses["drop.csv"] == (BatchStatus.COMPLETED, "inbox", None)
    assert statuses["junk.csv"][0] is BatchStatus.FAILED and "header" in (statuses["junk.csv"][2] or "")
    assert count(app, "SELECT COUNT(*) FROM payments WHERE payment_id IN ('in_1', 'in_2')") == 2


def test_a_stopping_worker_leaves_the_batch_resumable_at_a_chunk_boundary(app: Application, tmp_path: Path) -> None:
    path = write(tmp_path / "stop.csv", HEADER + "".join(f"s_{n},1.00,USD\n" for n in range(30)))
    batches = parts(app).batches
    registered = batches.register_file(path, source="cli")
    stop = threading.Event()
    stop.set()
    paused = batches.ingest(registered.batch.batch_id, stop=stop)
    assert paused.status is BatchStatus.PROCESSING and paused.total_rows == 7
    parts(app).batch_worker.start()  # as `accrue serve` does at start: resume unfinished batches
    try:
        from tests.conftest import wait_for

        wait_for(lambda: batches.get(paused.batch_id).status is BatchStatus.COMPLETED)  # type: ignore[union-attr]
    finally:
        parts(app).batch_worker.stop()
    assert count(app, "SELECT COUNT(*) FROM payments") == 30
