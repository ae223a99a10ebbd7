"""DynamoDB repositories for inbound webhook events, subscriber endpoints and their deliveries.

An inbound event is one item keyed by provider and event id (recorded once). A delivery is one
item with its attempt log inside, plus a claim item per (endpoint, event) so an event is queued
once per endpoint. Due pending deliveries are listed on GSI2; storing one wakes the notifications
worker, which also runs the webhook delivery worker on AWS.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.dynamodb_uow import Session, Write
from accrue.adapters.aws.notification_channels import NOTIFICATIONS_QUEUE
from accrue.adapters.aws.repositories import ENTITY, page
from accrue.adapters.aws.table import GSI1, GSI2, PARTITION_KEY
from accrue.domain.errors import ConcurrencyConflict, Conflict
from accrue.domain.webhooks import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EndpointStatus,
    ReceivedWebhook,
    WebhookEndpoint,
)
from accrue.ports import Page, WebhookDeliveryRepository, WebhookEndpointRepository, WebhookEventRepository

ERASED_PAYLOAD = '{"erased":true}'
MEMBER_EVENTS = "WEBHOOKEVT#"


class DynamoWebhookEventRepository(WebhookEventRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def seen(self, provider: str, event_id: str) -> bool:
        key = keys.webhook_event(provider, event_id)
        return self.session.staged(key) is not None or self.session.get(key, projection=(PARTITION_KEY,)) is not None

    def record(self, received: ReceivedWebhook) -> bool:
        if self.seen(received.provider, received.event_id):
            return False
        item = {ENTITY: "webhook_event", **codec.to_attributes(received)}
        if received.member_id:
            item[GSI1.partition_key] = keys.member_partition(received.member_id)
            item[GSI1.sort_key] = keys.join(
                MEMBER_EVENTS.rstrip("#"),
                keys.sortable_time(received.received_at),
                received.provider,
                received.event_id,
            )
        self.session.stage(
            Write.insert(
                keys.webhook_event(received.provider, received.event_id),
                item,
                conflict=lambda: ConcurrencyConflict("this webhook event was recorded concurrently; retry"),
            )
        )
        return True

    def _of_member(self, member_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for items, _ in self.session.query(
            IndexName=GSI1.name,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": GSI1.partition_key, "#sk": GSI1.sort_key},
            ExpressionAttributeValues={":pk": keys.member_partition(member_id), ":prefix": MEMBER_EVENTS},
        ):
            found.extend(items)
        return found

    def for_member(self, member_id: str) -> list[ReceivedWebhook]:
        return [codec.from_attributes(ReceivedWebhook, i) for i in self._of_member(member_id)]

    def forget_member(self, member_id: str) -> list[str]:
        blob_keys: list[str] = []
        for item in self._of_member(member_id):
            if item.get("blob_key"):
                blob_keys.append(str(item["blob_key"]))
            self.session.stage(
                Write(
                    "Update",
                    keys.webhook_event(str(item["provider"]), str(item["event_id"])),
                    update="REMOVE member_id, blob_key, #gpk, #gsk",
                    names={"#gpk": GSI1.partition_key, "#gsk": GSI1.sort_key},
                ),
                replace=True,
            )
        return blob_keys


class DynamoWebhookEndpointRepository(WebhookEndpointRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, endpoint: WebhookEndpoint) -> None:
        item = {ENTITY: "webhook_endpoint", **codec.to_attributes(endpoint)}
        item.update(keys.endpoint_listing(endpoint.created_at, endpoint.endpoint_id))
        self.session.stage(
            Write.insert(
                keys.endpoint(endpoint.endpoint_id),
                item,
                conflict=lambda: Conflict(f"endpoint {endpoint.endpoint_id} already exists"),
            )
        )

    def get(self, endpoint_id: str) -> WebhookEndpoint | None:
        item = self.session.get(keys.endpoint(endpoint_id))
        return codec.from_attributes(WebhookEndpoint, item) if item else None

    def page(self, limit: int, cursor: str | None) -> Page[WebhookEndpoint]:
        items, next_cursor = page(
            self.session,
            index=GSI1.name,
            partition=str(keys.Prefix.ENDPOINTS),
            sort_prefix="",
            limit=limit,
            cursor=cursor,
        )
        return Page([codec.from_attributes(WebhookEndpoint, i) for i in items], next_cursor)

    def subscribed_to(self, event_type: str) -> list[WebhookEndpoint]:
        found: list[WebhookEndpoint] = []
        for items, _ in self.session.query(
            IndexName=GSI1.name,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": GSI1.partition_key},
            ExpressionAttributeValues={":pk": str(keys.Prefix.ENDPOINTS)},
            ScanIndexForward=True,
        ):
            found.extend(e for e in (codec.from_attributes(WebhookEndpoint, i) for i in items) if e.wants(event_type))
        return found

    def disable(self, endpoint_id: str, reason: str, now: datetime) -> None:
        self.session.stage(
            Write(
                "Update",
                keys.endpoint(endpoint_id),
                update="SET #status = :disabled, disabled_reason = :reason, updated_at = :now",
                condition=f"attribute_exists({PARTITION_KEY})",
                names={"#status": "status"},
                values={
                    ":disabled": str(EndpointStatus.DISABLED),
                    ":reason": reason[:500],
                    ":now": keys.sortable_time(now),
                },
            ),
            replace=True,
        )


def _delivery(item: dict[str, Any]) -> Delivery:
    return codec.from_attributes(Delivery, item)


class DynamoWebhookDeliveryRepository(WebhookDeliveryRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, delivery: Delivery) -> bool:
        claim = keys.delivery_claim(delivery.endpoint_id, delivery.event_id)
        if self.session.staged(claim) is not None or self.session.get(claim) is not None:
            return False
        item = {ENTITY: "webhook_delivery", **codec.to_attributes(delivery)}
        item.update(keys.delivery_listing(delivery.endpoint_id, delivery.created_at, delivery.delivery_id))
        if delivery.status is DeliveryStatus.PENDING and delivery.next_attempt_at is not None:
            item.update(keys.due_listing(keys.Prefix.DELIVERY, delivery.next_attempt_at, delivery.delivery_id))
        self.session.stage(
            Write.insert(
                claim,
                {ENTITY: "webhook_delivery_claim", "delivery_id": delivery.delivery_id},
                conflict=lambda: ConcurrencyConflict("this delivery was queued concurrently; retry"),
            )
        )
        self.session.stage(Write("Put", keys.delivery(delivery.delivery_id), item=item))
        self.session.wake(NOTIFICATIONS_QUEUE)
        return True

    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Delivery]:
        candidates: list[dict[str, Any]] = []
        for items, _ in self.session.query(
            IndexName=GSI2.name,
            KeyConditionExpression="#pk = :pk AND #sk <= :due",
            ExpressionAttributeNames={"#pk": GSI2.partition_key, "#sk": GSI2.sort_key},
            ExpressionAttributeValues={
                ":pk": keys.join(keys.Prefix.DELIVERY, "due"),
                ":due": keys.join(keys.sortable_time(now), "~"),
            },
            Limit=limit,
        ):
            candidates.extend(items)
            if len(candidates) >= limit:
                break
        fresh = [
            _delivery(i)
            for i in self.session.batch_get([keys.delivery(str(c["delivery_id"])) for c in candidates[:limit]])
            if i["status"] == str(DeliveryStatus.PENDING)
        ]
        due = sorted(
            (d for d in fresh if d.next_attempt_at is not None and d.next_attempt_at <= now),
            key=lambda d: (d.next_attempt_at, d.delivery_id),
        )
        lease = datetime.fromtimestamp(now.timestamp() + lease_seconds, now.tzinfo)
        for delivery in due:
            listing = keys.due_listing(keys.Prefix.DELIVERY, lease, delivery.delivery_id)
            self.session.stage(
                Write(
                    "Update",
                    keys.delivery(delivery.delivery_id),
                    update="SET next_attempt_at = :lease, #gsk = :gsk",
                    condition="#status = :pending AND next_attempt_at = :seen",
                    names={"#status": "status", "#gsk": GSI2.sort_key},
                    values={
                        ":lease": keys.sortable_time(lease),
                        ":gsk": listing[GSI2.sort_key],
                        ":pending": str(DeliveryStatus.PENDING),
                        ":seen": keys.sortable_time(delivery.next_attempt_at),  # type: ignore[arg-type]
                    },
                    conflict=lambda: ConcurrencyConflict("a delivery was claimed concurrently; retry"),
                ),
                replace=True,
            )
        return due

    def get(self, delivery_id: str) -> Delivery | None:
        item = self.session.get(keys.delivery(delivery_id))
        return _delivery(item) if item else None

    def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        next_attempt_at: datetime | None,
    ) -> None:
        error = attempt.error[:1000] if attempt.error else None
        logged = codec.to_attributes(
            DeliveryAttempt(attempt.attempt, attempt.attempted_at, attempt.status_code, error, attempt.duration_ms)
        )
        names = {"#status": "status", "#gpk": GSI2.partition_key, "#gsk": GSI2.sort_key}
        values: dict[str, Any] = {
            ":status": str(status),
            ":attempts": attempt.attempt,
            ":log": [logged],
            ":empty": [],
            ":now": keys.sortable_time(attempt.attempted_at),
        }
        sets = [
            "#status = :status",
            "attempts = :attempts",
            "attempt_log = list_append(if_not_exists(attempt_log, :empty), :log)",
            "updated_at = :now",
        ]
        removes: list[str] = []
        for name, value in (("last_status_code", attempt.status_code), ("last_error", error)):
            if value is None:
                removes.append(name)
            else:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = value
        if status is DeliveryStatus.PENDING and next_attempt_at is not None:
            listing = keys.due_listing(keys.Prefix.DELIVERY, next_attempt_at, delivery_id)
            sets += ["next_attempt_at = :next", "#gpk = :gpk", "#gsk = :gsk"]
            values.update(
                {
                    ":next": keys.sortable_time(next_attempt_at),
                    ":gpk": listing[GSI2.partition_key],
                    ":gsk": listing[GSI2.sort_key],
                }
            )
        else:
            removes += ["next_attempt_at", "#gpk", "#gsk"]
        self.session.stage(
            Write(
                "Update",
                keys.delivery(delivery_id),
                update="SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else ""),
                condition=f"attribute_exists({PARTITION_KEY})",
                names=names,
                values=values,
            ),
            replace=True,
        )

    def _of_endpoint(self, endpoint_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for items, _ in self.session.query(
            IndexName=GSI1.name,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": GSI1.partition_key, "#sk": GSI1.sort_key},
            ExpressionAttributeValues={
                ":pk": keys.join(keys.Prefix.ENDPOINT, endpoint_id),
                ":prefix": keys.join(keys.Prefix.DELIVERY, ""),
            },
        ):
            found.extend(items)
        return found

    def fail_pending(self, endpoint_id: str, reason: str, now: datetime) -> int:
        listed = self._of_endpoint(endpoint_id)
        fresh = self.session.batch_get([keys.delivery(str(i["delivery_id"])) for i in listed])
        pending = [i for i in fresh if i["status"] == str(DeliveryStatus.PENDING)]

        def fail(item: dict[str, Any]) -> None:
            item.update(
                {
                    "status": str(DeliveryStatus.FAILED),
                    "last_error": reason[:1000],
                    "updated_at": keys.sortable_time(now),
                }
            )
            for name in ("next_attempt_at", GSI2.partition_key, GSI2.sort_key):
                item.pop(name, None)

        for item in pending:
            self.session.rewrite(
                keys.delivery(str(item["delivery_id"])),
                item,
                fail,
                condition="#status = :pending",
                names={"#status": "status"},
                values={":pending": str(DeliveryStatus.PENDING)},
                conflict=lambda: ConcurrencyConflict("a delivery changed concurrently; retry"),
            )
        return len(pending)

    def list_for_endpoint(self, endpoint_id: str, limit: int, cursor: str | None) -> Page[Delivery]:
        items, next_cursor = page(
            self.session,
            index=GSI1.name,
            partition=keys.join(keys.Prefix.ENDPOINT, endpoint_id),
            sort_prefix=keys.join(keys.Prefix.DELIVERY, ""),
            limit=limit,
            cursor=cursor,
        )
        return Page([_delivery(i) for i in items], next_cursor)

    def forget_member(self, member_id: str) -> int:
        # Deliveries are listed per endpoint; erasure is rare, so it reads them all once (a scan).
        quoted = json.dumps(member_id)
        changed = 0

        def erase(item: dict[str, Any]) -> None:
            item["payload"] = ERASED_PAYLOAD
            item.pop("member_id", None)

        for item in self.session.scan(
            FilterExpression="#e = :d AND (member_id = :m OR contains(payload, :q))",
            ExpressionAttributeNames={"#e": ENTITY},
            ExpressionAttributeValues={":d": "webhook_delivery", ":m": member_id, ":q": quoted},
        ):
            self.session.rewrite(keys.delivery(str(item["delivery_id"])), item, erase)
            changed += 1
        return changed
