"""Shopify: ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw body with the app secret.

Shopify signs no timestamp, so replays are caught by ``X-Shopify-Webhook-Id`` (the de-duplication
key). ``orders/create`` becomes an order for the member with the customer's email.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime

from accrue.adapters.inbound import _payload as p
from accrue.domain.errors import InvalidInput
from accrue.domain.webhooks import InboundEvent, InboundOrder, WebhookRejected
from accrue.ports import InboundWebhookAdapter

ORDER_TOPICS = frozenset({"orders/create"})


class ShopifyAdapter(InboundWebhookAdapter):
    provider = "shopify"

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("the Shopify adapter needs at least one signing secret")
        self.secrets = tuple(s.encode() for s in secrets)

    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None:
        given = headers.get("x-shopify-hmac-sha256")
        if not given:
            raise WebhookRejected("X-Shopify-Hmac-Sha256 header is missing")
        for secret in self.secrets:
            expected = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()
            if hmac.compare_digest(expected, given.strip()):
                return
        raise WebhookRejected("X-Shopify-Hmac-Sha256 does not match the payload")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent:
        event_id = headers.get("x-shopify-webhook-id", "").strip()
        if not event_id:
            raise InvalidInput("X-Shopify-Webhook-Id", "is required (it identifies the delivery)")
        topic = headers.get("x-shopify-topic", "").strip()
        if not topic:
            raise InvalidInput("X-Shopify-Topic", "is required")
        order = p.load_json(body)
        if topic not in ORDER_TOPICS:
            return InboundEvent(provider=self.provider, event_id=event_id, event_type=topic)
        customer = order.get("customer")
        if not isinstance(customer, dict):
            customer = {}
        email = p.required_text(
            order.get("email") or order.get("contact_email") or customer.get("email"), "email", max_length=254
        )
        shopify_id = p.required_text(order.get("id"), "id", max_length=64)
        currency = p.currency(order.get("currency"), "currency")
        return InboundEvent(
            provider=self.provider,
            event_id=event_id,
            event_type=topic,
            order=InboundOrder(
                order_id=p.order_id(f"shopify_{shopify_id}", "id"),
                amount=p.amount(order.get("total_price"), "total_price"),
                currency=currency,
                email=email,
                items=p.items(order.get("line_items"), "line_items", category_key="product_type"),
            ),
        )
