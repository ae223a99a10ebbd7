"""Inbound webhook adapters, one per provider dialect, looked up by provider name.

A new integration is one more ``InboundWebhookAdapter`` (verify the raw bytes, parse into an
``InboundEvent``) registered under its name; ``bootstrap`` builds the registry from the settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from accrue.adapters.inbound.shopify import ShopifyAdapter
from accrue.adapters.inbound.standard import StandardWebhooksAdapter
from accrue.adapters.inbound.stripe import StripeAdapter
from accrue.ports import InboundWebhookAdapter


def build_registry(
    *,
    stripe_secrets: Sequence[str] = (),
    shopify_secrets: Sequence[str] = (),
    standard_sources: Mapping[str, Sequence[str]] | None = None,
    tolerance_seconds: int = 300,
) -> dict[str, InboundWebhookAdapter]:
    """Only providers with secrets are enabled: an unconfigured provider is unknown (404)."""
    registry: dict[str, InboundWebhookAdapter] = {}
    if stripe_secrets:
        registry["stripe"] = StripeAdapter(stripe_secrets, tolerance_seconds)
    if shopify_secrets:
        registry["shopify"] = ShopifyAdapter(shopify_secrets)
    for source, secrets in (standard_sources or {}).items():
        registry[source] = StandardWebhooksAdapter(source, secrets, tolerance_seconds)
    return registry


__all__ = ["ShopifyAdapter", "StandardWebhooksAdapter", "StripeAdapter", "build_registry"]
