"""SQLite connections, pragmas, the in-process writer lock and versioned migrations."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

MIGRATIONS_PACKAGE = "accrue.adapters.sqlite.migrations"


class Database:
    """One SQLite file. A connection per thread; one writer at a time inside this process.

    SQLite allows one writer per file. Serialising writers in-process with a lock (instead of
    letting threads spin in SQLite's busy handler) keeps latency flat under contention; other
    processes (a CLI import next to the server) still coordinate through ``busy_timeout``.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 30_000):
        self.path = str(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.busy_timeout_ms = busy_timeout_ms
        self.write_lock = threading.RLock()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
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
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: in-process lock, then BEGIN IMMEDIATE; commit or roll back."""
        conn = self.connection()
        with self.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def group(self) -> Iterator[None]:
        """One SQLite transaction around several units of work opened on this thread meanwhile.

        Each unit of work inside becomes a savepoint: its commit releases it, its rollback undoes
        only its own writes. Everything becomes durable at once when the group ends (one fsync
        instead of one per unit of work); if the group fails, none of it happened.
        """
        conn = self.connection()
        if conn.in_transaction:
            raise RuntimeError("a transaction is already open on this thread")
        with self.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            self._local.group = True
            try:
                yield
            except BaseException:
                if conn.in_transaction:  # some errors (disk full, I/O) end the transaction themselves
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                self._local.group = False

    def in_group(self) -> bool:
        """True while this thread is inside ``group()``."""
        return bool(getattr(self._local, "group", False))

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
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
