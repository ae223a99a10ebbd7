"""Idempotency keys in SQLite with Stripe's semantics."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from accrue.adapters.sqlite.database import Database
from accrue.ports import IdempotencyOutcome, IdempotencyStore, InProgress, Mismatch, Replay, Started


class SqliteIdempotencyStore(IdempotencyStore):
    def __init__(self, db: Database, *, ttl_seconds: float = 86_400, lock_seconds: float = 60) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        # A request that crashed mid-way leaves its key locked; after this long a retry may take it.
        self.lock_seconds = lock_seconds

    def begin(self, scope: str, key: str, request_hash: str, now: datetime) -> IdempotencyOutcome:
        ts = now.timestamp()
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT request_hash, state, status_code, body, locked_until, expires_at "
                "FROM idempotency_keys WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
            if row is not None and row["expires_at"] <= ts:
                conn.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))
                row = None
            if row is None:
                conn.execute(
                    "INSERT INTO idempotency_keys (scope, key, request_hash, state, locked_until, created_at, "
                    "expires_at) VALUES (?,?,?,'in_progress',?,?,?)",
                    (scope, key, request_hash, ts + self.lock_seconds, ts, ts + self.ttl_seconds),
                )
                return Started()
            if row["request_hash"] != request_hash:
                return Mismatch()
            if row["state"] == "completed":
                return Replay(status_code=row["status_code"], body=bytes(row["body"]))
            if row["locked_until"] > ts:
                return InProgress()
            conn.execute(
                "UPDATE idempotency_keys SET locked_until = ? WHERE scope = ? AND key = ?",
                (ts + self.lock_seconds, scope, key),
            )
            return Started()

    def complete(self, scope: str, key: str, status_code: int, body: bytes, now: datetime) -> None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE idempotency_keys SET state = 'completed', status_code = ?, body = ? "
                "WHERE scope = ? AND key = ?",
                (status_code, sqlite3.Binary(body), scope, key),
            )

    def release(self, scope: str, key: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND state = 'in_progress'",
                (scope, key),
            )

    def purge_expired(self, now: datetime) -> int:
        with self.db.write() as conn:
            return conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now.timestamp(),)).rowcount
