"""SQLite connections, pragmas, the in-process writer lock and versioned migrations."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

MIGRATIONS_PACKAGE = "accrue.adapters.sqlite.migrations"
T = TypeVar("T")


class GroupCommitFailed(sqlite3.OperationalError):
    """The shared transaction this write was part of could not be committed: nothing was written."""


class _Group:
    """One SQLite transaction shared by the writes that ran while it was open."""

    __slots__ = ("done", "error", "memo", "started", "units")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.units = 0
        # Answers that hold for the whole transaction (no other connection writes while it is
        # open); whoever changes what an answer depends on clears it, and so does any rollback.
        self.memo: dict[object, object] = {}


class WriteUnit:
    """One atomic write (a savepoint) inside the shared transaction; see ``Database.begin_write``."""

    __slots__ = ("_db", "conn", "group", "name", "outermost")

    def __init__(
        self, db: Database, conn: sqlite3.Connection, name: str | None, group: _Group, outermost: bool
    ) -> None:
        self._db = db
        self.conn = conn
        self.name = name
        self.group = group
        self.outermost = outermost

    def commit(self) -> None:
        """Keep the unit's writes; returns once they are durable (raises if the group failed)."""
        self._db._end(self, keep=True)

    def rollback(self) -> None:
        """Undo the unit's writes only."""
        self._db._end(self, keep=False)


class Database:
    """One SQLite file: a reading connection per thread, and one writing connection shared by all
    threads of this process, one writer at a time.

    **Group commit.** Concurrent writers share SQLite transactions: each write is a savepoint
    (atomic on its own, isolated because writers take turns), and the transaction is committed -
    one fsync - when no other writer is queued (or the group is big or old enough). A writer gets
    control back only after the commit that made its write durable; if that commit fails, every
    writer of the group gets the error and none of their writes exist. With one writer at a time
    this is exactly one transaction per write.

    Serialising writers in-process with a lock (instead of letting threads spin in SQLite's busy
    handler) keeps latency flat under contention; other processes (a CLI import next to the server)
    still coordinate through ``busy_timeout``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 30_000,
        group_max_units: int = 64,
        group_max_seconds: float = 0.005,
    ):
        self.path = str(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.busy_timeout_ms = busy_timeout_ms
        self.group_max_units = group_max_units
        self.group_max_seconds = group_max_seconds
        self.write_lock = threading.RLock()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._group: _Group | None = None
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._jobs_lock = threading.Lock()
        self._writer_thread: threading.Thread | None = None
        self._commits: ThreadPoolExecutor | None = None
        self._loop_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWriter] = (
            weakref.WeakKeyDictionary()
        )
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Zero deleted and overwritten content (GDPR erasure): with it off, old copies of a row
        # linger in free space of its page. Debian builds default to ON; others may not.
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -65536")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's reading connection (it sees committed data only)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def writing(self) -> bool:
        """True while this thread holds an open write unit."""
        return bool(getattr(self._local, "depth", 0))

    def writers_waiting(self) -> bool:
        """True while some writer waits for the lock: long-running background work should end its
        group early and let it in."""
        return self._queued > 0

    def writer_connection(self) -> sqlite3.Connection:
        """The shared writing connection; only for the thread that holds an open write unit."""
        if not self.writing() or self._writer is None:
            raise RuntimeError("no write unit is open on this thread")
        return self._writer

    # -- writes -----------------------------------------------------------------------------------

    def begin_write(self) -> WriteUnit:
        """Open an atomic write: a savepoint in the shared transaction (opened if none is).

        End it with ``commit()`` or ``rollback()`` on the same thread. Units opened while this
        thread already holds one nest inside it (and become durable with it).
        """
        depth: int = getattr(self._local, "depth", 0)
        outermost = depth == 0
        if outermost:
            with self._queued_lock:
                self._queued += 1
            try:
                self.write_lock.acquire()
            finally:
                with self._queued_lock:
                    self._queued -= 1
        try:
            if self._writer is None:
                self._writer = self._connect()
            conn = self._writer
            group = self._group
            name: str | None = None
            if group is None:
                # The unit that opens the transaction needs no savepoint: nothing else is in it
                # until this unit ends (it holds the lock), so undoing it is a plain ROLLBACK.
                # Savepoints cost: SQLite copies every page first changed inside one (3x slower
                # bulk inserts).
                conn.execute("BEGIN IMMEDIATE")
                group = self._group = _Group()
            else:
                # Named by depth: one open savepoint per depth at a time, and the same few names
                # keep their statements in the connection's cache (a new name is parsed anew).
                name = f"w{depth}"
                conn.execute(f"SAVEPOINT {name}")
        except BaseException:
            if outermost:
                self._finish_group(force=True)
            raise
        if outermost:
            group.units += 1
        self._local.depth = depth + 1
        return WriteUnit(self, conn, name, group, outermost)

    def _end(self, unit: WriteUnit, *, keep: bool, hand_on: bool = True) -> None:
        conn = unit.conn
        self._local.depth -= 1
        try:
            if not keep:
                unit.group.memo.clear()
            if conn.in_transaction:
                if unit.name is None:
                    if not keep:
                        conn.execute("ROLLBACK")
                else:
                    if not keep:
                        conn.execute(f"ROLLBACK TO {unit.name}")
                    conn.execute(f"RELEASE {unit.name}")
            elif unit.name is None and not keep:
                pass  # the opener's transaction ended with an error that the caller is handling
            elif unit.group.error is None:
                # An error (disk full, I/O) ended the shared transaction: what the group held is lost.
                unit.group.error = sqlite3.OperationalError("the shared transaction was aborted by an error")
        except BaseException as exc:  # noqa: BLE001 - whatever failed, the group must not commit
            unit.group.error = unit.group.error or exc
        if unit.outermost:
            self._finish_group(force=not hand_on)
            if not keep:
                return  # nothing of this unit is left to wait for
            unit.group.done.wait()
            if unit.group.error is not None:
                raise GroupCommitFailed(f"the write was not committed: {unit.group.error}") from unit.group.error

    def _finish_group(self, *, force: bool) -> None:
        """Called by an outermost writer holding the lock: commit now, or leave it to the next one."""
        group = self._group
        try:
            if group is None:
                return
            with self._queued_lock:
                others_queued = self._queued > 0
            young = time.monotonic() - group.started < self.group_max_seconds
            conn = self._writer
            assert conn is not None
            if (
                not force
                and group.error is None
                and conn.in_transaction
                and others_queued
                and young
                and group.units < self.group_max_units
            ):
                return  # the next writer in line commits (or hands on) after its own write
            self._group = None
            try:
                _commit_group(conn, group)
            finally:
                group.done.set()
        finally:
            self.write_lock.release()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One atomic write on the shared connection; durable when the block exits without error."""
        unit = self.begin_write()
        try:
            yield unit.conn
        except BaseException:
            unit.rollback()
            raise
        unit.commit()

    # -- the writer thread ---------------------------------------------------------------------

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Run ``job`` (which opens units of work) on this database's writer thread.

        The writer thread takes every job queued meanwhile (up to ``group_max_units``) and runs them
        in one transaction, each job a savepoint of its own: a job that raises undoes only its own
        writes. The future completes once the job's writes are durable (or with its exception, or
        with ``GroupCommitFailed`` if the shared commit failed). Callers in an event loop await
        ``asyncio.wrap_future(...)``: no thread per request, no queue of threads on the lock.
        """
        future: Future[T] = Future()
        with self._jobs_lock:
            if self._writer_thread is None:
                self._writer_thread = threading.Thread(target=self._run_jobs, name="sqlite-writer", daemon=True)
                self._writer_thread.start()
            self._jobs.put((job, future))
        return future

    def _run_jobs(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.group_max_units:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._jobs.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[Callable[[], Any], Future[Any]]]) -> None:
        _settle(batch, self.run_group([job for job, _ in batch]))

    def run_group(self, jobs: Sequence[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run ``jobs`` on this thread as one transaction, each in a savepoint of its own, and
        return once it is durable: per job (True, its result) or (False, what it raised, its writes
        undone). If the shared commit fails, every job gets ``GroupCommitFailed``."""
        try:
            unit = self.begin_write()
            try:
                outcomes = [self._run_job(job) for job in jobs]
            except BaseException:
                unit.rollback()
                raise
            # Committed now, not handed on to a background writer waiting for the lock: the jobs'
            # callers are waiting for this commit; the background's work is not.
            self._end(unit, keep=True, hand_on=False)
        except BaseException as exc:  # noqa: BLE001 - the shared commit failed: every job failed
            failure = exc if isinstance(exc, GroupCommitFailed) else GroupCommitFailed(str(exc))
            outcomes = [(False, failure)] * len(jobs)
        return outcomes

    def _run_job(self, job: Callable[[], Any]) -> tuple[bool, Any]:
        """One job of a group in a savepoint of its own: (True, its result), or (False, what it
        raised) with its writes undone."""
        unit = self.begin_write()
        try:
            result = job()
        except BaseException as exc:  # noqa: BLE001 - handed to the job's caller
            unit.rollback()
            return False, exc
        unit.commit()
        return True, result

    # -- writes from an event loop -----------------------------------------------------------------

    def _commit_executor(self) -> ThreadPoolExecutor:
        with self._jobs_lock:
            if self._commits is None:
                self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")
            return self._commits

    async def write_in_loop(self, job: Callable[[], T]) -> T:
        """Run ``job`` (which opens units of work) on the calling event loop's own thread, and
        return once its writes are durable.

        Jobs queued while a group runs or commits form the next group: each job a savepoint of one
        transaction, run one after the other on the loop; only the COMMIT (the fsync) runs in a
        thread, while the loop goes on serving. Same guarantees as ``submit``, without handing each
        request to another thread and back (which cost more CPU than the job). Jobs must be quick
        and must not wait on I/O: they hold the loop while they run.
        """
        loop = asyncio.get_running_loop()
        writer = self._loop_writers.get(loop)
        if writer is None:
            writer = self._loop_writers[loop] = _LoopWriter(self, loop)
        return await writer.run(job)

    @contextmanager
    def group(self) -> Iterator[None]:
        """Several units of work on this thread as one outer unit: each inner one is atomic on its
        own, all become durable together, and if the block raises none of them happened."""
        with self.write():
            yield

    def migrate(self) -> list[str]:
        """Apply every migration not yet applied, each in its own transaction. Returns the new ones."""
        conn = self.connection()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        files = sorted(
            (f for f in resources.files(MIGRATIONS_PACKAGE).iterdir() if f.name.endswith(".sql")),
            key=lambda f: f.name,
        )
        done: list[str] = []
        for file in files:
            version = file.name.removesuffix(".sql")
            if version in applied:
                continue
            sql = file.read_text(encoding="utf-8")
            with self.write_lock:
                # executescript commits implicitly; wrap the whole file in one explicit transaction.
                try:
                    conn.executescript(
                        "BEGIN IMMEDIATE;\n"
                        + sql
                        + f"\nINSERT INTO schema_migrations VALUES ('{version}', datetime('now'));"
                        + "\nCOMMIT;"
                    )
                except sqlite3.Error:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            done.append(version)
        return done

    def close(self) -> None:
        with self._jobs_lock:
            thread, self._writer_thread = self._writer_thread, None
            if thread is not None:
                self._jobs.put(None)
        if thread is not None:
            thread.join(10)
        commits, self._commits = self._commits, None
        if commits is not None:
            commits.shutdown(wait=True)
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
        self._writer = None
        self._group = None


def _commit_group(conn: sqlite3.Connection, group: _Group) -> None:
    """Commit the group's transaction unless it failed; on any failure the group's error says why
    (every writer of the group is told) and nothing of it stays."""
    try:
        if group.error is None and conn.in_transaction:
            conn.execute("COMMIT")
    except BaseException as exc:  # noqa: BLE001 - told to every writer of the group
        group.error = exc
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _settle(
    batch: Sequence[tuple[Callable[[], Any], Future[Any] | asyncio.Future[Any]]], outcomes: list[tuple[bool, Any]]
) -> None:
    """Hand each job's outcome to its caller (a caller that went away, cancelled, is skipped)."""
    for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class _LoopWriter:
    """The groups of one event loop (see ``Database.write_in_loop``); one drain task at a time."""

    # Another process (a CLI import) holds SQLite's write lock: how long to wait between tries.
    BUSY_PAUSE_SECONDS = 0.005

    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop) -> None:
        self.db = db
        self.loop = loop
        self.pending: deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = deque()
        self.running: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self.drain: asyncio.Task[None] | None = None

    async def run(self, job: Callable[[], T]) -> T:
        future: asyncio.Future[T] = self.loop.create_future()
        self.pending.append((job, future))
        if self.drain is None:
            self.drain = self.loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, outcomes = await self._one_group()
                _settle(batch, outcomes)
        finally:
            self.drain = None
            for _, future in [*self.running, *self.pending]:  # cancelled: the loop is closing
                if not future.done():
                    future.cancel()
            self.running.clear()
            self.pending.clear()

    async def _one_group(self) -> tuple[list[tuple[Callable[[], Any], asyncio.Future[Any]]], list[tuple[bool, Any]]]:
        max_units = self.db.group_max_units
        batch = self.running = []
        try:
            group = await self._open()
        except Exception as exc:  # noqa: BLE001 - no transaction (I/O error): the waiting jobs fail
            while self.pending and len(batch) < max_units:
                batch.append(self.pending.popleft())
            return batch, [(False, GroupCommitFailed(f"the write was not committed: {exc}"))] * len(batch)
        try:
            while self.pending and len(batch) < max_units:
                batch.append(self.pending.popleft())
            outcomes = self._run(batch, group)
            # In a thread (the fsync) while the loop serves; this thread still holds the lock.
            assert self.db._writer is not None
            commit = self.db._commit_executor().submit(_commit_group, self.db._writer, group)
            try:
                await asyncio.wrap_future(commit)
            except asyncio.CancelledError:
                commit.result()  # the loop is closing: let the COMMIT finish before anything else
                raise
        except Exception as exc:  # noqa: BLE001 - the group must not commit; its writers are told
            group.error = group.error or exc
        finally:
            self._close(group)
        self.running = []
        if group.error is not None:
            failure = GroupCommitFailed(f"the write was not committed: {group.error}")
            outcomes = [(False, failure)] * len(batch)
        return batch, outcomes

    async def _open(self) -> _Group:
        """Take the writer lock for this thread without blocking the loop, and open (or join) the
        shared transaction. Returns with the lock held."""
        db = self.db
        while True:
            while not db.write_lock.acquire(blocking=False):
                # A thread of this process writes: wait for it in a thread, then try again. Counted
                # as queued, so that the thread hands its open transaction on to this group (no
                # fsync of its own) and background loops stop early (``writers_waiting``).
                with db._queued_lock:
                    db._queued += 1
                try:
                    await self.loop.run_in_executor(None, self._wait_for_lock)
                finally:
                    with db._queued_lock:
                        db._queued -= 1
            try:
                group = self._begin()
            except BaseException:
                db.write_lock.release()
                raise
            if group is not None:
                return group
            db.write_lock.release()
            await asyncio.sleep(self.BUSY_PAUSE_SECONDS)

    def _wait_for_lock(self) -> None:
        with self.db.write_lock:
            pass

    def _begin(self) -> _Group | None:
        """The open group, or a new one; None if another process holds SQLite's write lock (the
        loop must not sit in SQLite's busy handler)."""
        db = self.db
        if db._writer is None:
            db._writer = db._connect()
        conn = db._writer
        group = db._group
        if group is not None and conn.in_transaction:
            return group  # left open by a thread of this process for the next writer: join it
        if group is not None:  # its transaction ended with an error: what it held is lost
            group.error = group.error or sqlite3.OperationalError("the shared transaction was aborted by an error")
            db._group = None
            group.done.set()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            return None
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(db.busy_timeout_ms)}")
        group = db._group = _Group()
        return group

    def _run(self, batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]], group: _Group) -> list[tuple[bool, Any]]:
        """Each job in a savepoint of the open transaction, on this thread (which holds the lock)."""
        db = self.db
        outcomes: list[tuple[bool, Any]] = []
        db._local.depth = 1  # units opened by the jobs nest in the group
        try:
            for job, future in batch:
                if future.done():  # cancelled before it ran
                    outcomes.append((False, None))
                    continue
                group.units += 1
                outcomes.append(db._run_job(job))
        finally:
            db._local.depth = 0
        return outcomes

    def _close(self, group: _Group) -> None:
        db = self.db
        conn = db._writer
        if conn is not None and conn.in_transaction:  # the commit never ran (cancelled)
            group.error = group.error or GroupCommitFailed("the shared transaction was abandoned")
            conn.execute("ROLLBACK")
        if db._group is group:
            db._group = None
        group.done.set()
        db.write_lock.release()
