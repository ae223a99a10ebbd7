"""Local stand-ins for the SMS and push providers (and for email when no SMTP host is set): each
message is written to the ``local_channel_outbox`` table, where it can be inspected.

On AWS the same ``Notifier`` port is implemented by SNS and SES adapters.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from accrue.adapters.sqlite.codec import iso, parse_iso
from accrue.adapters.sqlite.database import Database
from accrue.domain.notification_channels import Channel, ChannelMessage
from accrue.ports import Notifier


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    dedupe_key: str
    channel: str
    user_id: str
    recipient: str
    subject: str
    body: str
    created_at: datetime


class LocalChannelOutbox:
    def __init__(self, database: Database) -> None:
        self.database = database

    def append(self, message: ChannelMessage) -> bool:
        """False when a message with this de-duplication key is already in the outbox. Inside this
        thread's open write (a dispatcher sending as part of a unit of work) the row joins it: one
        statement is atomic by itself, and needs no savepoint of its own."""
        if self.database.writing():
            return self._insert(self.database.writer_connection(), message)
        with self.database.write() as conn:
            return self._insert(conn, message)

    @staticmethod
    def _insert(conn: sqlite3.Connection, message: ChannelMessage) -> bool:
        cur = conn.execute(
            "INSERT INTO local_channel_outbox (dedupe_key, channel, user_id, recipient, subject, body, created_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (dedupe_key) DO NOTHING",
            (
                message.dedupe_key,
                message.channel.value,
                message.user_id,
                message.recipient,
                message.subject,
                message.text,
                iso(datetime.now(UTC)),
            ),
        )
        return cur.rowcount == 1

    def messages(
        self, channel: Channel | None = None, user_id: str | None = None, limit: int = 100
    ) -> list[OutboxEntry]:
        clauses, params = ["1 = 1"], []
        if channel is not None:
            clauses.append("channel = ?")
            params.append(channel.value)
        if user_id is not None:
            clauses.append("user_id = ?")
            params.append(user_id)
        rows = self.database.connection().execute(
            f"SELECT * FROM local_channel_outbox WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [
            OutboxEntry(
                dedupe_key=r["dedupe_key"],
                channel=r["channel"],
                user_id=r["user_id"],
                recipient=r["recipient"],
                subject=r["subject"],
                body=r["body"],
                created_at=parse_iso(r["created_at"]),
            )
            for r in rows
        ]

    def forget_member(self, user_id: str) -> int:
        """Erase the member's messages (they hold the address and the text); returns how many."""
        with self.database.write() as conn:
            return conn.execute("DELETE FROM local_channel_outbox WHERE user_id = ?", (user_id,)).rowcount


class LocalOutboxNotifier(Notifier):
    def __init__(self, outbox: LocalChannelOutbox, channel: Channel) -> None:
        self.outbox = outbox
        self.channel = channel

    def send(self, message: ChannelMessage) -> None:
        if message.channel is not self.channel:
            raise ValueError(f"the {self.channel.value} outbox cannot send a {message.channel.value} message")
        self.outbox.append(message)
