"""Group commit on a real SQLite file: concurrent writes share one transaction (one fsync) and each
stays atomic; a writer returns only once its write is durable; a failed commit fails every writer
of the group and leaves nothing."""

from __future__ import annotations

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
