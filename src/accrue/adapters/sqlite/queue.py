"""Durable queues in SQLite with SQS semantics: the local stand-in for SQS and its dead-letter queue."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from accrue.adapters.sqlite.codec import dumps, loads
from accrue.adapters.sqlite.database import Database
from accrue.ports import DeadLetterMessage, Queue, QueueCounts, QueueMessage, QueueWriter

FOURTEEN_DAYS_SECONDS = 14 * 86_400
_INSERT = "INSERT INTO queue_messages (queue, body, visible_at, sent_at) VALUES (?,?,?,?)"


def insert_messages(
    conn: sqlite3.Connection, queue: str, bodies: Sequence[Mapping[str, Any]], now: float, delay_seconds: float
) -> list[str]:
    if not bodies:
        return []
    visible_at = now + max(delay_seconds, 0.0)
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue_messages'").fetchone()
    first = int(row[0]) if row else 0
    conn.executemany(_INSERT, [(queue, dumps(body), visible_at, now) for body in bodies])
    # AUTOINCREMENT inside one write transaction: ids follow the sequence without gaps or reuse.
    return [str(first + i + 1) for i in range(len(bodies))]


def _handle(receipt_handle: str) -> tuple[int, int] | None:
    message_id, _, count = receipt_handle.partition(":")
    try:
        return int(message_id), int(count)
    except ValueError:
        return None


class SqliteQueueWriter(QueueWriter):
    """Sends inside an open unit of work's transaction: the messages exist only if it commits."""

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self.clock = clock

    def send_batch(self, queue: str, bodies: Sequence[Mapping[str, Any]], *, delay_seconds: float = 0.0) -> None:
        insert_messages(self.conn, queue, bodies, self.clock(), delay_seconds)


class SqliteQueue(Queue):
    def __init__(
        self,
        db: Database,
        name: str,
        *,
        visibility_timeout_seconds: float = 30.0,
        max_receive_count: int = 3,
        retention_seconds: float = FOURTEEN_DAYS_SECONDS,
        poll_seconds: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_receive_count < 1:
            raise ValueError("max_receive_count must be at least 1")
        self.db = db
        self.name = name
        self.visibility_timeout_seconds = visibility_timeout_seconds
        self.max_receive_count = max_receive_count
        self.retention_seconds = retention_seconds
        self.poll_seconds = poll_seconds
        self.clock = clock
        self._arrived = threading.Event()

    def _anything_visible(self) -> bool:
        """A read on this thread's own connection: is any message of this queue ready now?"""
        row = (
            self.db.connection()
            .execute(
                "SELECT 1 FROM queue_messages WHERE queue = ? AND status = 'ready' AND visible_at <= ? LIMIT 1",
                (self.name, self.clock()),
            )
            .fetchone()
        )
        return row is not None

    def send_batch(self, bodies: Sequence[Mapping[str, Any]], *, delay_seconds: float = 0.0) -> list[str]:
        with self.db.write() as conn:
            ids = insert_messages(conn, self.name, bodies, self.clock(), delay_seconds)
        self._arrived.set()
        return ids

    def receive(
        self,
        max_messages: int = 10,
        *,
        visibility_timeout_seconds: float | None = None,
        wait_seconds: float = 0.0,
    ) -> list[QueueMessage]:
        timeout = self.visibility_timeout_seconds if visibility_timeout_seconds is None else visibility_timeout_seconds
        deadline = time.monotonic() + wait_seconds
        while True:
            self._arrived.clear()
            received = self._receive_now(max_messages, timeout)
            remaining = deadline - time.monotonic()
            if received or remaining <= 0:
                return received
            # Long polling: sends in this process wake us at once; others are seen on the next poll.
            self._arrived.wait(min(self.poll_seconds, remaining))

    def _receive_now(self, max_messages: int, timeout: float) -> list[QueueMessage]:
        received: list[QueueMessage] = []
        if not self._anything_visible():
            return received  # an idle poll (20 a second per consumer) never takes the writer lock
        with self.db.write() as conn:
            now = self.clock()
            oldest_kept = now - self.retention_seconds
            while len(received) < max_messages:
                rows = conn.execute(
                    "SELECT message_id, body, receive_count, sent_at FROM queue_messages "
                    "WHERE queue = ? AND status = 'ready' AND visible_at <= ? ORDER BY visible_at, message_id LIMIT ?",
                    (self.name, now, max_messages - len(received)),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    message_id, count = int(row[0]), int(row[2])
                    if row[3] < oldest_kept:
                        conn.execute("DELETE FROM queue_messages WHERE message_id = ?", (message_id,))
                    elif count >= self.max_receive_count:
                        # SQS redrive policy: received maxReceiveCount times and still here -> DLQ.
                        conn.execute(
                            "UPDATE queue_messages SET status = 'dead', dead_at = ? WHERE message_id = ?",
                            (now, message_id),
                        )
                    else:
                        conn.execute(
                            "UPDATE queue_messages SET receive_count = ?, visible_at = ? WHERE message_id = ?",
                            (count + 1, now + timeout, message_id),
                        )
                        received.append(
                            QueueMessage(
                                message_id=str(message_id),
                                body=loads(row[1]),
                                receipt_handle=f"{message_id}:{count + 1}",
                                receive_count=count + 1,
                                sent_at=datetime.fromtimestamp(row[3], UTC),
                            )
                        )
        return received

    def delete(self, receipt_handle: str) -> None:
        parsed = _handle(receipt_handle)
        if parsed is None:
            return
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM queue_messages WHERE message_id = ? AND receive_count = ? AND status = 'ready' "
                "AND queue = ?",
                (*parsed, self.name),
            )

    def delete_batch(self, receipt_handles: Sequence[str]) -> None:
        parsed = [p for p in (_handle(h) for h in receipt_handles) if p is not None]
        if not parsed:
            return
        with self.db.write() as conn:
            conn.executemany(
                "DELETE FROM queue_messages WHERE message_id = ? AND receive_count = ? AND status = 'ready' "
                "AND queue = ?",
                [(*p, self.name) for p in parsed],
            )

    def change_visibility(self, receipt_handle: str, timeout_seconds: float, *, error: str | None = None) -> None:
        parsed = _handle(receipt_handle)
        if parsed is None:
            return
        with self.db.write() as conn:
            conn.execute(
                "UPDATE queue_messages SET visible_at = ?, last_error = COALESCE(?, last_error) "
                "WHERE message_id = ? AND receive_count = ? AND status = 'ready' AND queue = ?",
                (self.clock() + max(timeout_seconds, 0.0), error[:2000] if error else None, *parsed, self.name),
            )
        if timeout_seconds <= 0:
            self._arrived.set()

    def dead_letters(self, limit: int = 100) -> list[DeadLetterMessage]:
        conn = self.db.connection()
        rows = conn.execute(
            "SELECT message_id, body, receive_count, last_error, sent_at FROM queue_messages "
            "WHERE queue = ? AND status = 'dead' ORDER BY dead_at, message_id LIMIT ?",
            (self.name, limit),
        ).fetchall()
        return [
            DeadLetterMessage(
                message_id=str(r[0]),
                body=loads(r[1]),
                receive_count=int(r[2]),
                last_error=r[3],
                sent_at=datetime.fromtimestamp(r[4], UTC),
            )
            for r in rows
        ]

    def redrive(self, message_id: str) -> bool:
        try:
            number = int(message_id)
        except ValueError:
            return False
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE queue_messages SET status = 'ready', receive_count = 0, visible_at = ?, dead_at = NULL "
                "WHERE message_id = ? AND status = 'dead' AND queue = ?",
                (self.clock(), number, self.name),
            )
        if cur.rowcount == 1:
            self._arrived.set()
            return True
        return False

    def counts(self) -> QueueCounts:
        row = (
            self.db.connection()
            .execute(
                "SELECT "
                "COALESCE(SUM(status = 'ready' AND visible_at <= :now), 0), "
                "COALESCE(SUM(status = 'ready' AND visible_at > :now AND receive_count > 0), 0), "
                "COALESCE(SUM(status = 'ready' AND visible_at > :now AND receive_count = 0), 0), "
                "COALESCE(SUM(status = 'dead'), 0) "
                "FROM queue_messages WHERE queue = :queue",
                {"now": self.clock(), "queue": self.name},
            )
            .fetchone()
        )
        return QueueCounts(visible=int(row[0]), in_flight=int(row[1]), delayed=int(row[2]), dead=int(row[3]))

    def purge_expired(self) -> int:
        with self.db.write() as conn:
            cur = conn.execute(
                "DELETE FROM queue_messages WHERE queue = ? AND sent_at < ?",
                (self.name, self.clock() - self.retention_seconds),
            )
        return cur.rowcount
