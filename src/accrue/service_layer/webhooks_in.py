"""Receiving provider webhooks: verify the raw bytes, archive them, apply each event id once.

Order of work, and why:
1. the provider's adapter verifies the signature on the raw bytes (nothing is read or stored from an
   unverified request: 401);
2. the verified bytes are parsed into an ``InboundEvent`` (a payload we cannot use is a 400 naming
   the field, and nothing is stored);
3. an event id already recorded answers at once (``duplicate``), without archiving or applying;
4. the raw payload and headers are archived to the blob store, outside any database transaction
   (it is file or network I/O; a retry overwrites the same key);
5. one transaction records the event id (UNIQUE per provider) together with its effect (a paid order
   through the ``CreateOrder`` handler), so a concurrent or later replay can never apply it twice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from accrue.domain.commands import CreateOrder, OrderItem
from accrue.domain.errors import NotFound
from accrue.domain.members import Member
from accrue.domain.orders import Order
from accrue.domain.webhooks import (
    InboundEvent,
    InboundOrder,
    InboundStatus,
    ReceivedWebhook,
    inbound_blob_key,
)
from accrue.ports import BlobStore, InboundWebhookAdapter, UnitOfWork

# Credentials of our own API never belong in an archive, whoever sent them.
UNARCHIVED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

CreateOrderHandler = Callable[[CreateOrder, UnitOfWork], Order]


@dataclass(frozen=True, slots=True)
class InboundResult:
    provider: str
    event_id: str
    event_type: str
    status: InboundStatus
    message: str
    order_id: str | None = None
    points_earned: int | None = None


def archive_document(
    provider: str, event_id: str, body: bytes, headers: Mapping[str, str], received_at: datetime
) -> bytes:
    document: dict[str, Any] = {
        "provider": provider,
        "eventId": event_id,
        "receivedAt": received_at.isoformat(),
        "headers": {k: v for k, v in sorted(headers.items()) if k not in UNARCHIVED_HEADERS},
    }
    try:
        document["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        document["bodyBase64"] = base64.b64encode(body).decode()
    return json.dumps(document, ensure_ascii=False, indent=1).encode()


class WebhookReceiver:
    def __init__(
        self,
        adapters: Mapping[str, InboundWebhookAdapter],
        uow_factory: Callable[..., UnitOfWork],
        blobs: BlobStore,
        clock: Callable[[], datetime],
        create_order: CreateOrderHandler,
    ) -> None:
        self.adapters = adapters
        self.uow_factory = uow_factory
        self.blobs = blobs
        self.clock = clock
        self.create_order = create_order

    @property
    def providers(self) -> list[str]:
        return sorted(self.adapters)

    def receive(self, provider: str, body: bytes, headers: Mapping[str, str]) -> InboundResult:
        adapter = self.adapters.get(provider)
        if adapter is None:
            raise NotFound(
                f"no webhook provider named '{provider}' is configured",
                details={"field": "provider", "configured": self.providers},
            )
        lowered = {name.lower(): value for name, value in headers.items()}
        now = self.clock()
        adapter.verify(body, lowered, now)
        event = adapter.parse(body, lowered)
        if self._seen(provider, event.event_id):
            return self._duplicate(event)
        blob_key = inbound_blob_key(provider, event.event_id, now)
        self.blobs.put(blob_key, archive_document(provider, event.event_id, body, lowered, now), "application/json")
        return self._apply(event, blob_key, now)

    def _seen(self, provider: str, event_id: str) -> bool:
        with self.uow_factory(readonly=True) as uow:
            return uow.webhook_events.seen(provider, event_id)

    def _duplicate(self, event: InboundEvent) -> InboundResult:
        return InboundResult(
            provider=event.provider,
            event_id=event.event_id,
            event_type=event.event_type,
            status=InboundStatus.DUPLICATE,
            message="event already received; nothing applied again",
        )

    def _apply(self, event: InboundEvent, blob_key: str, now: datetime) -> InboundResult:
        with self.uow_factory() as uow:
            if event.order is None:
                if not uow.webhook_events.record(
                    ReceivedWebhook(
                        provider=event.provider,
                        event_id=event.event_id,
                        event_type=event.event_type,
                        status=InboundStatus.IGNORED,
                        received_at=now,
                        blob_key=blob_key,
                    )
                ):
                    return self._duplicate(event)
                uow.commit()
                return InboundResult(
                    provider=event.provider,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    status=InboundStatus.IGNORED,
                    message=f"event type '{event.event_type}' is not acted on; recorded",
                )
            order = event.order
            member = _member_for(uow, order, event.provider)
            already = uow.orders.get(order.order_id) is not None
            recorded = uow.webhook_events.record(
                ReceivedWebhook(
                    provider=event.provider,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    status=InboundStatus.IGNORED if already else InboundStatus.APPLIED,
                    received_at=now,
                    member_id=member.user_id,
                    reference=f"order:{order.order_id}",
                    blob_key=blob_key,
                )
            )
            if not recorded:
                return self._duplicate(event)
            if already:
                # Another event of the same payment (charge.succeeded after payment_intent.succeeded),
                # or an order already posted through the API: it earned its points then.
                uow.commit()
                return InboundResult(
                    provider=event.provider,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    status=InboundStatus.IGNORED,
                    message=f"order {order.order_id} was already recorded; no points added",
                    order_id=order.order_id,
                )
            created = self.create_order(
                CreateOrder(
                    user_id=member.user_id,
                    amount=order.amount,
                    currency=order.currency,
                    order_id=order.order_id,
                    items=tuple(
                        OrderItem(sku=i.sku, quantity=i.quantity, price=i.price, category=i.category)
                        for i in order.items
                    ),
                ),
                uow,
            )
        return InboundResult(
            provider=event.provider,
            event_id=event.event_id,
            event_type=event.event_type,
            status=InboundStatus.APPLIED,
            message="webhook processed: order recorded",
            order_id=created.order_id,
            points_earned=created.points_earned,
        )


def _member_for(uow: UnitOfWork, order: InboundOrder, provider: str) -> Member:
    member: Member | None = None
    if order.user_id is not None:
        member = uow.members.get(order.user_id)
        field = "userId"
    else:
        member = uow.members.get_by_email(order.email or "")
        field = "email"
    if member is None or member.erased:
        raise NotFound(
            f"the {provider} event names no known member (by {field})",
            details={"field": field},
        )
    return member
