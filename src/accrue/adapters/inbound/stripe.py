"""Stripe: ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">[,v1=...]``.

Several ``v1`` signatures may arrive (Stripe signs with every active secret while one is rolled)
and several secrets may be configured: any match is enough. The timestamp must be within the
tolerance (300 s by default) in either direction. A paid payment intent or charge whose metadata
names ``userId`` becomes a paid order; its order id comes from ``metadata.orderId`` or from the
payment intent, so the ``payment_intent.succeeded`` and ``charge.succeeded`` of one payment make one
order, not two.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime

from accrue.adapters.inbound import _payload as p
from accrue.domain.money import from_minor_units
from accrue.domain.webhooks import InboundEvent, InboundOrder, WebhookRejected
from accrue.ports import InboundWebhookAdapter

PAID_EVENT_TYPES = frozenset({"payment_intent.succeeded", "charge.succeeded"})


class StripeAdapter(InboundWebhookAdapter):
    provider = "stripe"

    def __init__(self, secrets: Sequence[str], tolerance_seconds: int = 300) -> None:
        if not secrets:
            raise ValueError("the Stripe adapter needs at least one signing secret")
        self.secrets = tuple(s.encode() for s in secrets)
        self.tolerance_seconds = tolerance_seconds

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None:
        header = headers.get("stripe-signature")
        if not header:
            raise WebhookRejected("Stripe-Signature header is missing")
        timestamp: int | None = None
        signatures: list[str] = []
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key == "t":
                try:
                    timestamp = int(value)
                except ValueError:
                    raise WebhookRejected("Stripe-Signature: t is not a unix timestamp") from None
            elif key == "v1" and value:
                signatures.append(value)
        if timestamp is None or not signatures:
            raise WebhookRejected("Stripe-Signature: needs t= and at least one v1=")
        signed = str(timestamp).encode() + b"." + body
        expected = [hmac.new(secret, signed, hashlib.sha256).hexdigest() for secret in self.secrets]
        if not any(hmac.compare_digest(e, s) for e in expected for s in signatures):
            raise WebhookRejected("Stripe-Signature: no v1 signature matches the payload")
        if abs(now.timestamp() - timestamp) > self.tolerance_seconds:
            raise WebhookRejected(f"Stripe-Signature: timestamp outside the {self.tolerance_seconds} s tolerance")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent:
        event = p.load_json(body)
        event_id = p.required_text(event.get("id"), "id")
        event_type = p.required_text(event.get("type"), "type")
        if event_type not in PAID_EVENT_TYPES:
            return InboundEvent(provider=self.provider, event_id=event_id, event_type=event_type)
        data = p.obj(event.get("data"), "data")
        payment = p.obj(data.get("object"), "data.object")
        metadata = p.obj(payment.get("metadata") or {}, "data.object.metadata")
        user_id = p.required_text(metadata.get("userId"), "data.object.metadata.userId", max_length=128)
        currency = p.currency(payment.get("currency"), "data.object.currency")
        is_intent = event_type == "payment_intent.succeeded"
        amount_field = "amount_received" if is_intent and "amount_received" in payment else "amount"
        minor = p.whole_number(payment.get(amount_field), f"data.object.{amount_field}", minimum=1)
        payment_ref = payment.get("id") if is_intent else (payment.get("payment_intent") or payment.get("id"))
        ref = p.required_text(payment_ref, "data.object.id", max_length=120)
        explicit = metadata.get("orderId")
        order_id = (
            p.order_id(explicit, "data.object.metadata.orderId")
            if explicit not in (None, "")
            else p.order_id(f"stripe_{ref}", "data.object.id")
        )
        return InboundEvent(
            provider=self.provider,
            event_id=event_id,
            event_type=event_type,
            order=InboundOrder(
                order_id=order_id,
                amount=from_minor_units(minor, currency),
                currency=currency,
                user_id=user_id,
            ),
        )
