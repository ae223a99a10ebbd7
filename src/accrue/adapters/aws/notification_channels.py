"""DynamoDB repositories for member channel preferences and the de-duplicated channel sends.

A stored notification gets a queue item (``NOTIFYQ#``) in the same transaction, and the commit
wakes the notifications worker (one message on the notifications queue, forwarded by the stream).
Each send is one item keyed by a number derived from its de-duplication key, so planning the same
notification twice finds the sends already there. Due pending sends are listed on GSI2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.dynamodb_uow import Session, Write
from accrue.adapters.aws.repositories import ENTITY, member_group
from accrue.adapters.aws.table import GSI1, GSI2, PARTITION_KEY
from accrue.domain.errors import ConcurrencyConflict
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

NOTIFICATIONS_QUEUE = "notifications"


def send_id_for(dedupe_key: str) -> int:
    """A stable positive 63-bit id for one send."""
    return int.from_bytes(hashlib.blake2b(dedupe_key.encode(), digest_size=8).digest(), "big") >> 1


def stage_queued_notification(session: Session, notification: Notification, dedupe_key: str) -> None:
    """Called by the notification repository when it stores a notification: queue it for channels."""
    item: dict[str, Any] = {
        ENTITY: "notification_queue",
        "notification_id": notification.notification_id,
        "dedupe_key": dedupe_key,
        **keys.notification_queue_listing(notification.notification_id),
    }
    session.stage(
        Write(
            "Put",
            keys.notification_queue(notification.notification_id),
            item=item,
            group=member_group(notification.user_id),
        )
    )
    session.wake(NOTIFICATIONS_QUEUE)


class DynamoPreferenceRepository(PreferenceRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, user_id: str) -> Preferences:
        item = self.session.get(keys.preferences(user_id))
        return codec.from_attributes(Preferences, item) if item else Preferences(user_id=user_id)

    def put(self, preferences: Preferences) -> None:
        if preferences.updated_at is None:
            raise ValueError("preferences need updated_at to be stored")
        item = {ENTITY: "preferences", **codec.to_attributes(preferences)}
        self.session.stage(Write("Put", keys.preferences(preferences.user_id), item=item), replace=True)


def _record(item: dict[str, Any]) -> SendRecord:
    return SendRecord(
        dedupe_key=str(item["dedupe_key"]),
        notification_id=str(item["notification_id"]),
        user_id=str(item["user_id"]),
        channel=Channel(str(item["channel"])),
        status=SendStatus(str(item["status"])),
        attempts=int(item["attempts"]),
        reason=item.get("reason"),
        updated_at=datetime.fromisoformat(str(item["updated_at"]).replace("Z", "+00:00")),
    )


class DynamoNotificationSendRepository(NotificationSendRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def queued(self, limit: int) -> list[QueuedNotification]:
        markers: list[dict[str, Any]] = []
        for items, _ in self.session.query(
            IndexName=GSI1.name,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": GSI1.partition_key},
            ExpressionAttributeValues={":pk": str(keys.Prefix.NOTIFY_QUEUE)},
            Limit=limit,
        ):
            markers.extend(items)
            if len(markers) >= limit:
                break
        markers = markers[:limit]
        # The index lags: confirm each marker, then read the notifications it points at.
        fresh = self.session.batch_get([keys.notification_queue(str(m["notification_id"])) for m in markers])
        if not fresh:
            return []
        notes = self.session.batch_get([keys.notification(str(m["dedupe_key"])) for m in fresh])
        by_key = {str(n["dedupe_key"]): codec.from_attributes(Notification, n) for n in notes}
        found = [
            QueuedNotification(notification=by_key[str(m["dedupe_key"])], dedupe_key=str(m["dedupe_key"]))
            for m in fresh
            if str(m["dedupe_key"]) in by_key
        ]
        return sorted(found, key=lambda q: q.notification.notification_id)

    def plan(self, notification: Notification, sends: Sequence[PlannedSend], now: datetime) -> None:
        notification_id = notification.notification_id
        # Stored unqueued by this unit of work, or queued (the marker names the notification).
        note = self.session.unqueued_notifications.get(notification_id)
        marker = None
        if note is None:
            marker = self.session.get(keys.notification_queue(notification_id))
            note = self.session.get(keys.notification(str(marker["dedupe_key"]))) if marker else None
        if note is not None:
            existing = {
                int(i["send_id"])
                for i in self.session.batch_get([keys.channel_send(send_id_for(s.dedupe_key)) for s in sends])
            }
            for send in sends:
                key = send.dedupe_key
                send_id = send_id_for(key)
                if send_id in existing:
                    continue  # an existing key is left alone
                item: dict[str, Any] = {
                    ENTITY: "channel_send",
                    "send_id": send_id,
                    "dedupe_key": key,
                    "notification_id": notification_id,
                    "notification_key": str(note["dedupe_key"]),
                    "user_id": str(note["user_id"]),
                    "channel": send.channel.value,
                    "status": str(send.status),
                    "attempts": send.attempts,
                    "created_at": keys.sortable_time(now),
                    "updated_at": keys.sortable_time(now),
                    **keys.sends_of(notification_id, key),
                }
                if send.reason:
                    item["reason"] = send.reason[:1000]
                if send.status is SendStatus.PENDING:
                    due = send.retry_at or now
                    item["next_attempt_at"] = keys.sortable_time(due)
                    item.update(keys.due_listing(keys.Prefix.SEND, due, str(send_id)))
                self.session.stage(
                    Write.insert(
                        keys.channel_send(send_id),
                        item,
                        conflict=lambda: ConcurrencyConflict("these sends were planned concurrently; retry"),
                    )
                )
        if marker is not None:
            self.session.stage(Write("Delete", keys.notification_queue(notification_id)), replace=True)

    def claim_due(self, now: datetime, limit: int) -> list[PendingSend]:
        candidates: list[dict[str, Any]] = []
        for items, _ in self.session.query(
            IndexName=GSI2.name,
            KeyConditionExpression="#pk = :pk AND #sk <= :due",
            ExpressionAttributeNames={"#pk": GSI2.partition_key, "#sk": GSI2.sort_key},
            ExpressionAttributeValues={
                ":pk": keys.join(keys.Prefix.SEND, "due"),
                ":due": keys.join(keys.sortable_time(now), "~"),
            },
            Limit=limit,
        ):
            candidates.extend(items)
            if len(candidates) >= limit:
                break
        fresh = [
            i
            for i in self.session.batch_get([keys.channel_send(int(c["send_id"])) for c in candidates[:limit]])
            if i["status"] == str(SendStatus.PENDING) and str(i.get("next_attempt_at", "")) <= keys.sortable_time(now)
        ]
        notes = {
            str(n["dedupe_key"]): codec.from_attributes(Notification, n)
            for n in self.session.batch_get([keys.notification(str(i["notification_key"])) for i in fresh])
        }
        claimed: list[PendingSend] = []
        for item in sorted(fresh, key=lambda i: (str(i["next_attempt_at"]), int(i["send_id"]))):
            notification = notes.get(str(item["notification_key"]))
            send_id = int(item["send_id"])
            if notification is None:
                # Nothing left to send (the notification is gone): settle it, or it stays due forever.
                self.finish(send_id, SendStatus.FAILED, now, reason="the notification no longer exists")
                continue
            self.session.stage(
                Write(
                    "Update",
                    keys.channel_send(send_id),
                    update="SET #status = :sending, attempts = attempts + :one, updated_at = :now "
                    "REMOVE next_attempt_at, #gpk, #gsk",
                    condition="#status = :pending",
                    names={"#status": "status", "#gpk": GSI2.partition_key, "#gsk": GSI2.sort_key},
                    values={
                        ":sending": str(SendStatus.SENDING),
                        ":pending": str(SendStatus.PENDING),
                        ":one": 1,
                        ":now": keys.sortable_time(now),
                    },
                    conflict=lambda: ConcurrencyConflict("a send was claimed concurrently; retry"),
                ),
                replace=True,
            )
            claimed.append(
                PendingSend(
                    send_id=send_id,
                    dedupe_key=str(item["dedupe_key"]),
                    channel=Channel(str(item["channel"])),
                    notification=notification,
                    attempts=int(item["attempts"]) + 1,
                )
            )
        return claimed

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
        names = {"#status": "status", "#gpk": GSI2.partition_key, "#gsk": GSI2.sort_key}
        values: dict[str, Any] = {":status": str(status), ":now": keys.sortable_time(now)}
        sets = ["#status = :status", "updated_at = :now"]
        removes: list[str] = []
        if reason:
            sets.append("reason = :reason")
            values[":reason"] = reason[:1000]
        else:
            removes.append("reason")
        if status is SendStatus.PENDING and retry_at is not None:
            due = keys.due_listing(keys.Prefix.SEND, retry_at, str(send_id))
            sets += ["next_attempt_at = :at", "#gpk = :gpk", "#gsk = :gsk"]
            values.update(
                {":at": keys.sortable_time(retry_at), ":gpk": due[GSI2.partition_key], ":gsk": due[GSI2.sort_key]}
            )
        else:
            removes += ["next_attempt_at", "#gpk", "#gsk"]
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        self.session.stage(
            Write(
                "Update",
                keys.channel_send(send_id),
                update=update,
                condition=f"attribute_exists({PARTITION_KEY})",
                names=names,
                values=values,
            ),
            replace=True,
        )

    def for_notification(self, notification_id: str) -> list[SendRecord]:
        found: list[dict[str, Any]] = []
        for items, _ in self.session.query(
            IndexName=GSI1.name,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": GSI1.partition_key},
            ExpressionAttributeValues={":pk": keys.join(keys.Prefix.SENDS, notification_id)},
        ):
            found.extend(items)
        fresh = self.session.batch_get([keys.channel_send(int(i["send_id"])) for i in found])
        order = list(Channel)
        return [
            _record(i) for i in sorted(fresh, key=lambda i: (str(i["created_at"]), order.index(Channel(i["channel"]))))
        ]
