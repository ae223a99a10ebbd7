"""Custom sources signed per Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``, ``whsec_`` secrets), verified with the ``standardwebhooks`` library.

Each configured source is its own provider (``/webhooks/<source>``). The payload is
``{"type": ..., "data": {...}}``; ``order.created``, ``order.paid`` and ``payment.completed`` with
``data.orderId``, ``data.amount``, optional ``data.currency`` and ``data.items``, and the member as
``data.userId`` or ``data.email``, become a paid order.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from accrue.adapters.inbound import _payload as p
from accrue.domain.errors import InvalidInput
from accrue.domain.webhooks import InboundEvent, InboundOrder, WebhookRejected
from accrue.ports import InboundWebhookAdapter

ORDER_TYPES = frozenset({"order.created", "order.paid", "payment.completed"})


class StandardWebhooksAdapter(InboundWebhookAdapter):
    def __init__(self, provider: str, secrets: Sequence[str], tolerance_seconds: int = 300) -> None:
        if not secrets:
            raise ValueError(f"the {provider} source needs at least one whsec_ secret")
        self.provider = provider
        self.verifiers = tuple(Webhook(secret) for secret in secrets)
        self.tolerance_seconds = tolerance_seconds

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None:
        reason = "no matching signature"
        for verifier in self.verifiers:
            try:
                verifier.verify(body, dict(headers), json_parse=False)
            except (WebhookVerificationError, ValueError, binascii.Error) as exc:
                # ValueError covers a malformed signature list and a body that is not UTF-8.
                reason = str(exc) or type(exc).__name__
                continue
            break
        else:
            raise WebhookRejected(f"Standard Webhooks signature refused: {reason}")
        # The library applies its own fixed 5-minute window; ours may be stricter.
        timestamp = float(headers["webhook-timestamp"])
        if abs(now.timestamp() - timestamp) > self.tolerance_seconds:
            raise WebhookRejected(f"webhook-timestamp outside the {self.tolerance_seconds} s tolerance")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent:
        event_id = headers.get("webhook-id", "").strip()
        if not event_id:
            raise InvalidInput("webhook-id", "is required")
        message = p.load_json(body)
        event_type = p.required_text(message.get("type"), "type", max_length=100)
        if event_type not in ORDER_TYPES:
            return InboundEvent(provider=self.provider, event_id=event_id, event_type=event_type)
        data = p.obj(message.get("data"), "data")
        user_id = p.text(data.get("userId"), "data.userId", required=False, max_length=128)
        email = p.text(data.get("email"), "data.email", required=False, max_length=254)
        if user_id is None and email is None:
            raise InvalidInput("data.userId", "is required (or data.email)")
        return InboundEvent(
            provider=self.provider,
            event_id=event_id,
            event_type=event_type,
            order=InboundOrder(
                order_id=p.order_id(data.get("orderId"), "data.orderId"),
                amount=p.amount(data.get("amount"), "data.amount"),
                currency=p.currency(data.get("currency"), "data.currency"),
                user_id=user_id,
                email=email,
                items=p.items(data.get("items"), "data.items"),
            ),
        )
