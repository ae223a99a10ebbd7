"""SQLite repositories for member channel preferences and the de-duplicated channel sends."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from accrue.adapters.sqlite.codec import iso, parse_iso
from accrue.adapters.sqlite.repositories import notification_from_row
from accrue.domain.notification_channels import (
    Channel,
    PendingSend,
    PlannedSend,
    Preferences,
    QueuedNotification,
    SendRecord,
    SendStatus,
)
from accrue.domain.notifications import Notification
from accrue.ports import NotificationSendRepository, PreferenceRepository


class SqlitePreferenceRepository(PreferenceRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, user_id: str) -> Preferences:
        row = self.conn.execute("SELECT * FROM notification_preferences WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            return Preferences(user_id=user_id)
        return Preferences(
            user_id=user_id,
            email=bool(row["email"]),
            sms=bool(row["sms"]),
            push=bool(row["push"]),
            updated_at=parse_iso(row["updated_at"]),
        )

    def put(self, preferences: Preferences) -> None:
        if preferences.updated_at is None:
            raise ValueError("preferences need updated_at to be stored")
        self.conn.execute(
            "INSERT INTO notification_preferences (user_id, email, sms, push, updated_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, sms = excluded.sms, "
            "push = excluded.push, updated_at = excluded.updated_at",
            (
                preferences.user_id,
                int(preferences.email),
                int(preferences.sms),
                int(preferences.push),
                iso(preferences.updated_at),
            ),
        )


class SqliteNotificationSendRepository(NotificationSendRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def queued(self, limit: int) -> list[QueuedNotification]:
        # In the order they were queued (the queue's rowid), read from the queue's own b-tree: ordering
        # by the notification's seq would walk every notification ever stored to find the few queued.
        rows = self.conn.execute(
            "SELECT n.* FROM notification_queue q JOIN notifications n ON n.notification_id = q.notification_id "
            "ORDER BY q.rowid LIMIT ?",
            (limit,),
        ).fetchall()
        return [QueuedNotification(notification=notification_from_row(r), dedupe_key=r["dedupe_key"]) for r in rows]

    def plan(self, notification: Notification, sends: Sequence[PlannedSend], now: datetime) -> None:
        at = iso(now)
        self.conn.executemany(
            "INSERT INTO notification_sends (dedupe_key, notification_id, user_id, channel, status, reason, "
            "attempts, next_attempt_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (dedupe_key) DO NOTHING",
            [
                (
                    send.dedupe_key,
                    notification.notification_id,
                    notification.user_id,
                    send.channel.value,
                    str(send.status),
                    send.reason[:1000] if send.reason else None,
                    send.attempts,
                    (send.retry_at or now).timestamp() if send.status is SendStatus.PENDING else None,
                    at,
                    at,
                )
                for send in sends
            ],
        )
        self.conn.execute("DELETE FROM notification_queue WHERE notification_id = ?", (notification.notification_id,))

    def claim_due(self, now: datetime, limit: int) -> list[PendingSend]:
        rows = self.conn.execute(
            "SELECT s.send_id, s.dedupe_key, s.channel, s.attempts, n.* FROM notification_sends s "
            "JOIN notifications n ON n.notification_id = s.notification_id "
            "WHERE s.status = 'pending' AND s.next_attempt_at <= ? ORDER BY s.next_attempt_at, s.send_id LIMIT ?",
            (now.timestamp(), limit),
        ).fetchall()
        if rows:
            self.conn.executemany(
                "UPDATE notification_sends SET status = 'sending', attempts = attempts + 1, next_attempt_at = NULL, "
                "updated_at = ? WHERE send_id = ? AND status = 'pending'",
                [(iso(now), r["send_id"]) for r in rows],
            )
        return [
            PendingSend(
                send_id=r["send_id"],
                dedupe_key=r["dedupe_key"],
                channel=Channel(r["channel"]),
                notification=notification_from_row(r),
                attempts=r["attempts"] + 1,
            )
            for r in rows
        ]

    def finish(
        self,
        send_id: int,
        status: SendStatus,
        now: datetime,
        *,
        reason: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        if status is SendStatus.PENDING and retry_at is None:
            raise ValueError("a send returned to pending needs retry_at")
        self.conn.execute(
            "UPDATE notification_sends SET status = ?, reason = ?, next_attempt_at = ?, updated_at = ? "
            "WHERE send_id = ?",
            (
                str(status),
                reason[:1000] if reason else None,
                retry_at.timestamp() if status is SendStatus.PENDING and retry_at is not None else None,
                iso(now),
                send_id,
            ),
        )

    def for_notification(self, notification_id: str) -> list[SendRecord]:
        # A send's key is the notification's key, ':' and the channel (``send_key``): a range of the
        # unique key index finds them, with no index of sends by notification to keep up per send.
        rows = self.conn.execute(
            "SELECT s.* FROM notifications n JOIN notification_sends s "
            "ON s.dedupe_key > n.dedupe_key || ':' AND s.dedupe_key < n.dedupe_key || ';' "
            "AND s.notification_id = n.notification_id "
            "WHERE n.notification_id = ? ORDER BY s.send_id",
            (notification_id,),
        ).fetchall()
        return [
            SendRecord(
                dedupe_key=r["dedupe_key"],
                notification_id=r["notification_id"],
                user_id=r["user_id"],
                channel=Channel(r["channel"]),
                status=SendStatus(r["status"]),
                attempts=r["attempts"],
                reason=r["reason"],
                updated_at=parse_iso(r["updated_at"]),
            )
            for r in rows
        ]
