"""Group commit on a real SQLite file: concurrent writes share one transaction (one fsync) and each
stays atomic; a writer returns only once its write is durable; a failed commit fails every writer
of the group and leaves nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from accrue.adapters.sqlite.database import Database, GroupCommitFailed


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "g.db")
    database.migrate()
    with database.write() as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, who TEXT NOT NULL)")
        conn.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, note_id INTEGER NOT NULL REFERENCES notes (id))")
    yield database
    database.close()


def committed(db: Database) -> list[str]:
    """What another process would see on disk now."""
    with sqlite3.connect(db.path) as conn:
        return [r[0] for r in conn.execute("SELECT who FROM notes ORDER BY id")]


def count_commits(db: Database) -> list[str]:
    statements: list[str] = []
    with db.write():  # make sure the shared writing connection exists
        pass
    assert db._writer is not None
    db._writer.set_trace_callback(lambda sql: statements.append(sql) if sql == "COMMIT" else None)
    return statements


def run_while_others_queue(db: Database, first: Callable[[sqlite3.Connection], None], others: int) -> None:
    """Hold the writer lock in a first write until ``others`` writers are queued behind it."""
    deadline = time.monotonic() + 10
    with db.write() as conn:
        first(conn)
        while db._queued < others and time.monotonic() < deadline:
            time.sleep(0.001)
        assert db._queued == others


def test_writers_queued_behind_one_another_share_one_commit_and_each_is_durable_on_return(db: Database) -> None:
    commits = count_commits(db)
    seen_on_return: dict[str, bool] = {}

    def writer(name: str) -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO notes (who) VALUES (?)", (name,))
        seen_on_return[name] = name in committed(db)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(8)]

    def first(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO notes (who) VALUES ('first')")
        for thread in threads:
            thread.start()

    run_while_others_queue(db, first, others=8)
    for thread in threads:
        thread.join(10)
    assert sorted(committed(db)) == sorted(["first", *(f"t{n}" for n in range(8))])
    assert seen_on_return == {f"t{n}": True for n in range(8)}
    assert 1 <= len(commits) < 9  # nine writes, fewer fsyncs


def test_a_write_that_fails_inside_a_group_undoes_only_itself(db: Database) -> None:
    outcomes: dict[str, str] = {}

    def good(name: str) -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO notes (who) VALUES (?)", (name,))
        outcomes[name] = "ok"

    def bad() -> None:
        try:
            with db.write() as conn:
                conn.execute("INSERT INTO notes (who) VALUES ('half-done')")
                conn.execute("INSERT INTO notes (who) VALUES (NULL)")  # NOT NULL: this write fails
        except sqlite3.IntegrityError:
            outcomes["bad"] = "refused"

    threads = [
        threading.Thread(target=good, args=("a",)),
        threading.Thread(target=bad),
        threading.Thread(target=good, args=("b",)),
    ]

    def first(conn: sqlite3.Connection) -> None:
        for thread in threads:
            thread.start()

    run_while_others_queue(db, first, others=3)
    for thread in threads:
        thread.join(10)
    assert outcomes == {"a": "ok", "b": "ok", "bad": "refused"}
    assert sorted(committed(db)) == ["a", "b"]


def test_when_the_shared_commit_fails_every_writer_of_the_group_is_told_and_nothing_is_written(
    db: Database,
) -> None:
    errors: dict[str, BaseException] = {}

    def good() -> None:
        try:
            with db.write() as conn:
                conn.execute("INSERT INTO notes (who) VALUES ('innocent')")
        except GroupCommitFailed as exc:
            errors["good"] = exc

    def poison() -> None:
        # A foreign key checked only at COMMIT: the savepoint is released, the commit then fails.
        try:
            with db.write() as conn:
                conn.execute("PRAGMA defer_foreign_keys = ON")
                conn.execute("INSERT INTO child (note_id) VALUES (424242)")
        except GroupCommitFailed as exc:
            errors["poison"] = exc

    threads = [threading.Thread(target=good), threading.Thread(target=poison)]
    first_error: list[BaseException] = []

    def first(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO notes (who) VALUES ('first')")
        threads[0].start()
        while db._queued < 1:
            time.sleep(0.001)
        threads[1].start()

    try:
        run_while_others_queue(db, first, others=2)
    except GroupCommitFailed as exc:
        first_error.append(exc)
    for thread in threads:
        thread.join(10)
    assert first_error and set(errors) == {"good", "poison"}
    assert "FOREIGN KEY" in str(errors["good"])
    assert committed(db) == []
    # The database is usable again afterwards.
    with db.write() as conn:
        conn.execute("INSERT INTO notes (who) VALUES ('after')")
    assert committed(db) == ["after"]


def test_a_lone_writer_commits_at_once(db: Database) -> None:
    commits = count_commits(db)
    for n in range(3):
        with db.write() as conn:
            conn.execute("INSERT INTO notes (who) VALUES (?)", (f"solo{n}",))
        assert committed(db)[-1] == f"solo{n}"
    assert len(commits) == 3


def test_nested_writes_on_one_thread_become_durable_with_the_outer_one(db: Database) -> None:
    with db.group():
        with db.write() as conn:
            conn.execute("INSERT INTO notes (who) VALUES ('inner-1')")
        with pytest.raises(RuntimeError), db.write() as conn:
            conn.execute("INSERT INTO notes (who) VALUES ('inner-2')")
            raise RuntimeError("undo me")
        assert committed(db) == []
    assert committed(db) == ["inner-1"]


# -- writes from an event loop (what the HTTP API uses) ----------------------------------------------


def insert(db: Database, who: str) -> Callable[[], str]:
    def job() -> str:
        with db.write() as conn:
            conn.execute("INSERT INTO notes (who) VALUES (?)", (who,))
        return who

    return job


def test_jobs_queued_on_a_loop_run_on_its_thread_share_one_commit_and_each_is_durable_on_return(db: Database) -> None:
    commits = count_commits(db)
    ran_on: set[int] = set()
    seen_on_return: dict[str, bool] = {}

    async def one(who: str) -> None:
        job = insert(db, who)

        def traced() -> str:
            ran_on.add(threading.get_ident())
            return job()

        assert await db.write_in_loop(traced) == who
        seen_on_return[who] = who in committed(db)

    async def main() -> int:
        await asyncio.gather(*(one(f"w{n}") for n in range(20)))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert ran_on == {loop_thread}
    assert seen_on_return == {f"w{n}": True for n in range(20)}
    assert sorted(committed(db)) == sorted(f"w{n}" for n in range(20))
    # All 20 were queued before the drain task first ran: one group, one COMMIT (one fsync).
    assert len(commits) == 1


def test_a_failing_job_on_the_loop_undoes_only_itself_and_its_caller_gets_the_error(db: Database) -> None:
    def bad() -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO notes (who) VALUES ('half-done')")
            conn.execute("INSERT INTO notes (who) VALUES (NULL)")

    async def main() -> list[object]:
        return await asyncio.gather(
            db.write_in_loop(insert(db, "a")),
            db.write_in_loop(bad),
            db.write_in_loop(insert(db, "b")),
            return_exceptions=True,
        )

    a, error, b = asyncio.run(main())
    assert (a, b) == ("a", "b")
    assert isinstance(error, sqlite3.IntegrityError)
    assert sorted(committed(db)) == ["a", "b"]


def test_when_a_loop_groups_commit_fails_every_job_of_it_is_told_and_nothing_is_written(db: Database) -> None:
    def poison() -> None:
        with db.write() as conn:
            conn.execute("PRAGMA defer_foreign_keys = ON")
            conn.execute("INSERT INTO child (note_id) VALUES (424242)")

    async def main() -> list[object]:
        blocker = asyncio.ensure_future(db.write_in_loop(insert(db, "first")))  # commits alone
        await asyncio.sleep(0)
        group = [db.write_in_loop(insert(db, "innocent")), db.write_in_loop(poison)]
        return [await blocker, *await asyncio.gather(*group, return_exceptions=True)]

    first, innocent, poisoned = asyncio.run(main())
    assert first == "first"
    assert isinstance(innocent, GroupCommitFailed) and "FOREIGN KEY" in str(innocent)
    assert isinstance(poisoned, GroupCommitFailed)
    assert committed(db) == ["first"]
    assert asyncio.run(db.write_in_loop(insert(db, "after"))) == "after"
    assert committed(db) == ["first", "after"]


def test_the_loop_keeps_serving_while_a_thread_of_the_process_holds_the_writer_lock(db: Database) -> None:
    commits = count_commits(db)
    db.group_max_seconds = 60  # this test holds the thread's group open far longer than 5 ms
    held = threading.Event()
    release = threading.Event()

    def background_writer() -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO notes (who) VALUES ('thread')")
            held.set()
            release.wait(10)

    thread = threading.Thread(target=background_writer)
    thread.start()
    assert held.wait(10)

    async def main() -> tuple[str, int]:
        ticks = 0
        write = asyncio.ensure_future(db.write_in_loop(insert(db, "loop")))
        while ticks < 20:  # the loop is not blocked on the lock: it goes on running other work
            await asyncio.sleep(0.005)
            ticks += 1
        assert not write.done()
        release.set()
        return await write, ticks

    who, ticks = asyncio.run(main())
    thread.join(10)
    assert (who, ticks) == ("loop", 20)
    assert committed(db) == ["thread", "loop"]
    # The loop waited as a queued writer: the thread handed its open transaction on, one COMMIT.
    assert len(commits) == 1


def test_the_loop_keeps_serving_while_another_process_holds_sqlites_write_lock(db: Database) -> None:
    other = sqlite3.connect(db.path, isolation_level=None)  # a CLI import, say
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO notes (who) VALUES ('other process')")

    async def main() -> tuple[str, int]:
        ticks = 0
        write = asyncio.ensure_future(db.write_in_loop(insert(db, "loop")))
        while ticks < 20:
            await asyncio.sleep(0.005)
            ticks += 1
        assert not write.done()
        other.execute("COMMIT")
        return await write, ticks

    try:
        assert asyncio.run(main()) == ("loop", 20)
    finally:
        other.close()
    assert committed(db) == ["other process", "loop"]
