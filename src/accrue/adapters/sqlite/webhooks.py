"""SQLite repositories for inbound webhook events, subscriber endpoints and their deliveries."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import cast

from accrue.adapters.sqlite.codec import dumps, encode_cursor, iso, loads, parse_iso
from accrue.adapters.sqlite.repositories import page_bounds
from accrue.domain.webhooks import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EndpointStatus,
    InboundStatus,
    ReceivedWebhook,
    WebhookEndpoint,
)
from accrue.ports import (
    Page,
    WebhookDeliveryRepository,
    WebhookEndpointRepository,
    WebhookEventRepository,
)

ERASED_PAYLOAD = '{"erased":true}'


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _from_epoch(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _received(row: sqlite3.Row) -> ReceivedWebhook:
    return ReceivedWebhook(
        provider=row["provider"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=InboundStatus(row["status"]),
        received_at=parse_iso(row["received_at"]),
        member_id=row["member_id"],
        reference=row["reference"],
        blob_key=row["blob_key"],
    )


class SqliteWebhookEventRepository(WebhookEventRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def seen(self, provider: str, event_id: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM webhook_events WHERE provider = ? AND event_id = ?", (provider, event_id)
        ).fetchone()
        return row is not None

    def record(self, received: ReceivedWebhook) -> bool:
        cur = self.conn.execute(
            "INSERT INTO webhook_events (provider, event_id, event_type, status, member_id, reference, blob_key, "
            "received_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (provider, event_id) DO NOTHING",
            (
                received.provider,
                received.event_id,
                received.event_type,
                str(received.status),
                received.member_id,
                received.reference,
                received.blob_key,
                iso(received.received_at),
            ),
        )
        return cur.rowcount == 1

    def for_member(self, member_id: str) -> list[ReceivedWebhook]:
        rows = self.conn.execute(
            "SELECT * FROM webhook_events WHERE member_id = ? ORDER BY seq", (member_id,)
        ).fetchall()
        return [_received(r) for r in rows]

    def forget_member(self, member_id: str) -> list[str]:
        keys = [
            r[0]
            for r in self.conn.execute(
                "SELECT blob_key FROM webhook_events WHERE member_id = ? AND blob_key IS NOT NULL", (member_id,)
            )
        ]
        self.conn.execute(
            "UPDATE webhook_events SET member_id = NULL, blob_key = NULL WHERE member_id = ?", (member_id,)
        )
        return keys


def _endpoint(row: sqlite3.Row) -> WebhookEndpoint:
    return WebhookEndpoint(
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        event_types=tuple(loads(row["event_types"])),
        secret=row["secret"],
        created_at=parse_iso(row["created_at"]),
        status=EndpointStatus(row["status"]),
        description=row["description"],
        disabled_reason=row["disabled_reason"],
    )


class SqliteWebhookEndpointRepository(WebhookEndpointRepository):
    def __init__(self, conn: sqlite3.Connection, memo: dict[object, object] | None = None) -> None:
        self.conn = conn
        # The write transaction's memo (``Database``): every write committed asks which endpoints
        # want its events, and the answer holds until an endpoint changes or the transaction ends.
        self.memo = memo

    def _changed(self) -> None:
        if self.memo is not None:
            self.memo.clear()

    def add(self, endpoint: WebhookEndpoint) -> None:
        self._changed()
        self.conn.execute(
            "INSERT INTO webhook_endpoints (endpoint_id, url, event_types, secret, status, description, "
            "disabled_reason, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                endpoint.endpoint_id,
                endpoint.url,
                dumps(list(endpoint.event_types)),
                endpoint.secret,
                str(endpoint.status),
                endpoint.description,
                endpoint.disabled_reason,
                iso(endpoint.created_at),
                iso(endpoint.created_at),
            ),
        )

    def get(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = self.conn.execute("SELECT * FROM webhook_endpoints WHERE endpoint_id = ?", (endpoint_id,)).fetchone()
        return _endpoint(row) if row else None

    def page(self, limit: int, cursor: str | None) -> Page[WebhookEndpoint]:
        before = page_bounds(cursor)
        rows = self.conn.execute(
            "SELECT * FROM webhook_endpoints WHERE seq < ? ORDER BY seq DESC LIMIT ?", (before, limit + 1)
        ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page([_endpoint(r) for r in rows[:limit]], next_cursor)

    def subscribed_to(self, event_type: str) -> list[WebhookEndpoint]:
        key = ("webhook_endpoints.subscribed_to", event_type)
        if self.memo is not None and key in self.memo:
            return list(cast(list[WebhookEndpoint], self.memo[key]))
        rows = self.conn.execute(
            "SELECT * FROM webhook_endpoints WHERE status = 'enabled' AND EXISTS "
            "(SELECT 1 FROM json_each(event_types) WHERE value = ?) ORDER BY seq",
            (event_type,),
        ).fetchall()
        found = [_endpoint(r) for r in rows]
        if self.memo is not None:
            self.memo[key] = list(found)
        return found

    def disable(self, endpoint_id: str, reason: str, now: datetime) -> None:
        self._changed()
        self.conn.execute(
            "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = ?, updated_at = ? "
            "WHERE endpoint_id = ?",
            (reason[:500], iso(now), endpoint_id),
        )


def _attempt(row: sqlite3.Row) -> DeliveryAttempt:
    return DeliveryAttempt(
        attempt=row["attempt"],
        attempted_at=parse_iso(row["attempted_at"]),
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=row["duration_ms"],
    )


def _delivery(row: sqlite3.Row, attempts: tuple[DeliveryAttempt, ...] = ()) -> Delivery:
    return Delivery(
        delivery_id=row["delivery_id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        payload=row["payload"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=_from_epoch(row["next_attempt_at"]),
        created_at=parse_iso(row["created_at"]),
        member_id=row["member_id"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        attempt_log=attempts,
    )


class SqliteWebhookDeliveryRepository(WebhookDeliveryRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, delivery: Delivery) -> bool:
        cur = self.conn.execute(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, event_id, event_type, member_id, payload, "
            "status, attempts, next_attempt_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            (
                delivery.delivery_id,
                delivery.endpoint_id,
                delivery.event_id,
                delivery.event_type,
                delivery.member_id,
                delivery.payload,
                str(delivery.status),
                delivery.attempts,
                _epoch(delivery.next_attempt_at),
                iso(delivery.created_at),
                iso(delivery.created_at),
            ),
        )
        return cur.rowcount == 1

    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Delivery]:
        rows = self.conn.execute(
            "SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, seq LIMIT ?",
            (now.timestamp(), limit),
        ).fetchall()
        if rows:
            self.conn.executemany(
                "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE delivery_id = ?",
                [(now.timestamp() + lease_seconds, r["delivery_id"]) for r in rows],
            )
        return [_delivery(r) for r in rows]

    def get(self, delivery_id: str) -> Delivery | None:
        row = self.conn.execute("SELECT * FROM webhook_deliveries WHERE delivery_id = ?", (delivery_id,)).fetchone()
        return _delivery(row, self._attempts([delivery_id]).get(delivery_id, ())) if row else None

    def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        next_attempt_at: datetime | None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO webhook_delivery_attempts (delivery_id, attempt, attempted_at, status_code, error, "
            "duration_ms) VALUES (?,?,?,?,?,?)",
            (
                delivery_id,
                attempt.attempt,
                iso(attempt.attempted_at),
                attempt.status_code,
                attempt.error[:1000] if attempt.error else None,
                attempt.duration_ms,
            ),
        )
        self.conn.execute(
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, last_status_code = ?, "
            "last_error = ?, updated_at = ? WHERE delivery_id = ?",
            (
                str(status),
                attempt.attempt,
                _epoch(next_attempt_at) if status is DeliveryStatus.PENDING else None,
                attempt.status_code,
                attempt.error[:1000] if attempt.error else None,
                iso(attempt.attempted_at),
                delivery_id,
            ),
        )

    def fail_pending(self, endpoint_id: str, reason: str, now: datetime) -> int:
        cur = self.conn.execute(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = ?, updated_at = ? "
            "WHERE endpoint_id = ? AND status = 'pending'",
            (reason[:1000], iso(now), endpoint_id),
        )
        return cur.rowcount

    def list_for_endpoint(self, endpoint_id: str, limit: int, cursor: str | None) -> Page[Delivery]:
        before = page_bounds(cursor)
        rows = self.conn.execute(
            "SELECT * FROM webhook_deliveries WHERE endpoint_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (endpoint_id, before, limit + 1),
        ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        rows = rows[:limit]
        attempts = self._attempts([r["delivery_id"] for r in rows])
        return Page([_delivery(r, attempts.get(r["delivery_id"], ())) for r in rows], next_cursor)

    def forget_member(self, member_id: str) -> int:
        # The member column holds the main member of an event; a payload may name another one (the
        # referred member of a referral), so any payload holding the id as a JSON string goes too.
        cur = self.conn.execute(
            "UPDATE webhook_deliveries SET payload = ?, member_id = NULL WHERE member_id = ? OR instr(payload, ?) > 0",
            (ERASED_PAYLOAD, member_id, json.dumps(member_id)),
        )
        return cur.rowcount

    def _attempts(self, delivery_ids: list[str]) -> dict[str, tuple[DeliveryAttempt, ...]]:
        found: dict[str, list[DeliveryAttempt]] = {}
        for start in range(0, len(delivery_ids), 500):
            part = delivery_ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self.conn.execute(
                f"SELECT * FROM webhook_delivery_attempts WHERE delivery_id IN ({marks}) ORDER BY delivery_id, attempt",
                part,
            ):
                found.setdefault(row["delivery_id"], []).append(_attempt(row))
        return {key: tuple(value) for key, value in found.items()}
