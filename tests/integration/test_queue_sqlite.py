"""The SQLite queue keeps SQS's promises: visibility timeout, receive counts, delays, a dead-letter
queue after maxReceiveCount receives, redrive, retention; and sends inside a unit of work."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from accrue.adapters.sqlite.database import Database
from accrue.adapters.sqlite.queue import SqliteQueue, SqliteQueueWriter
from accrue.ports import QueueCounts


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = Database(tmp_path / "queue.db")
    db.migrate()
    return db


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def queue(database: Database, clock: ManualClock) -> SqliteQueue:
    return SqliteQueue(database, "payments", visibility_timeout_seconds=30, max_receive_count=3, clock=clock)


def test_a_received_message_is_hidden_for_the_visibility_timeout_then_delivered_again(
    queue: SqliteQueue, clock: ManualClock
) -> None:
    (message_id,) = queue.send_batch([{"paymentIds": ["p1"]}])
    first = queue.receive(10)
    assert [(m.message_id, m.body, m.receive_count) for m in first] == [(message_id, {"paymentIds": ["p1"]}, 1)]
    assert queue.receive(10) == []
    assert queue.counts() == QueueCounts(visible=0, in_flight=1, delayed=0, dead=0)
    clock.advance(30)
    again = queue.receive(10)
    assert [(m.message_id, m.receive_count) for m in again] == [(message_id, 2)]
    assert again[0].receipt_handle != first[0].receipt_handle


def test_a_deleted_message_is_gone_and_a_stale_receipt_deletes_nothing(queue: SqliteQueue, clock: ManualClock) -> None:
    queue.send({"n": 1})
    stale = queue.receive()[0]
    clock.advance(31)
    fresh = queue.receive()[0]
    queue.delete(stale.receipt_handle)  # the message was delivered again since: SQS ignores it
    assert queue.counts().in_flight == 1
    queue.delete(fresh.receipt_handle)
    clock.advance(60)
    assert queue.receive() == [] and queue.counts() == QueueCounts(0, 0, 0, 0)


def test_a_delayed_message_is_invisible_until_its_delay_has_passed(queue: SqliteQueue, clock: ManualClock) -> None:
    queue.send({"n": 1}, delay_seconds=5)
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, delayed=1, dead=0)
    assert queue.receive() == []
    clock.advance(5)
    assert [m.body for m in queue.receive()] == [{"n": 1}]


def test_changing_visibility_delivers_again_after_the_new_timeout_and_keeps_the_error(
    queue: SqliteQueue, clock: ManualClock
) -> None:
    queue.send({"n": 1})
    message = queue.receive()[0]
    queue.change_visibility(message.receipt_handle, 2, error="RuntimeError: boom")
    clock.advance(1.9)
    assert queue.receive() == []
    clock.advance(0.2)
    assert queue.receive()[0].receive_count == 2


def test_a_message_received_three_times_goes_to_the_dead_letter_queue_on_the_next_receive(
    queue: SqliteQueue, clock: ManualClock
) -> None:
    (message_id,) = queue.send_batch([{"paymentIds": ["p1"]}])
    for attempt in (1, 2, 3):
        (message,) = queue.receive()
        assert message.receive_count == attempt
        queue.change_visibility(message.receipt_handle, 0, error=f"RuntimeError: attempt {attempt}")
    assert queue.receive() == []
    (dead,) = queue.dead_letters()
    assert (dead.message_id, dead.receive_count, dead.last_error) == (message_id, 3, "RuntimeError: attempt 3")
    assert queue.counts() == QueueCounts(visible=0, in_flight=0, delayed=0, dead=1)


def test_redrive_puts_a_dead_letter_back_with_a_fresh_receive_count(queue: SqliteQueue, clock: ManualClock) -> None:
    (message_id,) = queue.send_batch([{"n": 1}])
    for _ in range(3):
        queue.change_visibility(queue.receive()[0].receipt_handle, 0)
    assert queue.receive() == []
    assert queue.redrive(message_id) is True
    assert queue.redrive(message_id) is False  # no longer a dead letter
    assert queue.redrive("not-a-number") is False
    (message,) = queue.receive()
    assert (message.message_id, message.receive_count) == (message_id, 1)
    assert queue.dead_letters() == []


def test_messages_past_the_retention_period_are_dropped(database: Database, clock: ManualClock) -> None:
    queue = SqliteQueue(database, "payments", retention_seconds=14 * 86_400, clock=clock)
    queue.send({"old": True})
    clock.advance(10 * 86_400)
    queue.send({"old": False})
    clock.advance(5 * 86_400)
    assert [m.body for m in queue.receive(10)] == [{"old": False}]
    queue.send({"n": 3})
    clock.advance(15 * 86_400)
    assert queue.purge_expired() == 2
    assert queue.counts() == QueueCounts(0, 0, 0, 0)


def test_queues_in_one_table_do_not_see_each_others_messages(database: Database, clock: ManualClock) -> None:
    one = SqliteQueue(database, "one", clock=clock)
    two = SqliteQueue(database, "two", clock=clock)
    one.send({"q": 1})
    assert two.receive() == []
    assert [m.body for m in one.receive()] == [{"q": 1}]


def test_message_ids_are_never_reused_so_receipts_stay_unique(queue: SqliteQueue) -> None:
    (first,) = queue.send_batch([{"n": 1}])
    queue.delete(queue.receive()[0].receipt_handle)
    (second,) = queue.send_batch([{"n": 2}])
    assert int(second) > int(first)


def test_a_send_inside_a_transaction_exists_only_if_it_commits(database: Database, queue: SqliteQueue) -> None:
    conn = database.connection()
    conn.execute("BEGIN IMMEDIATE")
    SqliteQueueWriter(conn, queue.clock).send_batch("payments", [{"n": 1}, {"n": 2}])
    conn.execute("ROLLBACK")
    assert queue.receive(10) == []
    conn.execute("BEGIN IMMEDIATE")
    SqliteQueueWriter(conn, queue.clock).send_batch("payments", [{"n": 3}], delay_seconds=0)
    conn.execute("COMMIT")
    assert [m.body for m in queue.receive(10)] == [{"n": 3}]


def test_receive_waits_for_a_message_up_to_the_wait_time(database: Database) -> None:
    import threading

    queue = SqliteQueue(database, "payments", poll_seconds=0.02)
    threading.Timer(0.1, lambda: queue.send({"late": True})).start()
    received = queue.receive(1, wait_seconds=5)
    assert [m.body for m in received] == [{"late": True}]
    assert queue.receive(1, wait_seconds=0.1) == []


def test_an_idle_poll_does_not_wait_for_the_writer_lock(queue: SqliteQueue, database: Database) -> None:
    # Consumers poll many times a second; an empty queue must not queue them behind (or ahead of)
    # the API's writes. Holding the writer lock on another thread, an empty receive still returns.
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.write():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    try:
        started = time.monotonic()
        assert queue.receive(10) == []
        assert time.monotonic() - started < 1
    finally:
        release.set()
        thread.join(10)
    queue.send({"n": 1})
    assert [m.body for m in queue.receive(10)] == [{"n": 1}]
