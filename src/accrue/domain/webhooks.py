"""Webhooks, in and out: what an inbound event asks of us, and how our events leave.

Inbound: a provider adapter verifies the signature on the raw bytes and parses the payload into an
``InboundEvent``; its ``order`` (when there is one) becomes a paid order that earns points.
Outbound: our events are offered to subscribed endpoints as Standard Webhooks messages; each
delivery is retried on a schedule (Standard Webhooks / Svix style) until it succeeds, the schedule
runs out, or the endpoint answers 410 Gone.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from accrue.domain.errors import DomainError, InvalidInput, RuleViolation

# -- inbound ------------------------------------------------------------------------------------

PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class WebhookRejected(DomainError):
    """The request is not provably from the provider: missing or bad signature, or a stale timestamp.

    The HTTP layer answers 401 and nothing is stored or applied.
    """


class InboundStatus(enum.StrEnum):
    APPLIED = "applied"  # the event changed state (e.g. an order that earned points)
    IGNORED = "ignored"  # verified and recorded, but not an event we act on
    DUPLICATE = "duplicate"  # this provider's event id was seen before: nothing applied again


@dataclass(frozen=True, slots=True)
class InboundItem:
    sku: str
    quantity: int
    price: Decimal
    category: str | None = None


@dataclass(frozen=True, slots=True)
class InboundOrder:
    """A paid order announced by a provider. The member is named by id or by email."""

    order_id: str
    amount: Decimal
    currency: str
    user_id: str | None = None
    email: str | None = None
    items: tuple[InboundItem, ...] = ()


@dataclass(frozen=True, slots=True)
class InboundEvent:
    provider: str
    # The provider's id for this delivery: the de-duplication key (with the provider).
    event_id: str
    event_type: str
    order: InboundOrder | None = None


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """The record of one verified inbound event (kept so a replay is recognised)."""

    provider: str
    event_id: str
    event_type: str
    status: InboundStatus
    received_at: datetime
    member_id: str | None = None
    reference: str | None = None
    blob_key: str | None = None


def inbound_blob_key(provider: str, event_id: str, received_at: datetime) -> str:
    """Where the raw payload and headers are archived; dated folders keep listings short."""
    safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", event_id)[:200] or "event"
    return f"webhooks/inbound/{provider}/{received_at:%Y/%m/%d}/{safe_id}.json"


# -- outbound -----------------------------------------------------------------------------------

# Our event (class name) -> the public event type subscribers choose from.
OUTBOUND_EVENT_TYPES: Mapping[str, str] = {
    "PointsEarned": "points.earned",
    "TierUpgraded": "tier.upgraded",
    "MilestonesReached": "milestones.reached",
    "ReferralSignedUp": "referral.signed_up",
    "PayoutCompleted": "payout.completed",
    "PaymentProcessed": "payment.processed",
    "PaymentFailed": "payment.failed",
}
PUBLIC_EVENT_TYPES = frozenset(OUTBOUND_EVENT_TYPES.values())

# Standard Webhooks' recommended schedule (the Svix schedule): immediately, then 5 s, 5 min, 30 min,
# 2 h, 5 h, 10 h, 10 h after each failure. Eight attempts over about 27.6 hours.
DEFAULT_RETRY_SCHEDULE_SECONDS: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class UrlRefused(RuleViolation):
    """A well-formed URL that may not receive webhooks (HTTP 422): its host does not resolve, or
    resolves to an address this service must not call (SSRF), or it carries credentials."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"url: {rule}", details={"field": "url", "rule": rule})
        self.rule = rule


class EndpointStatus(enum.StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the schedule ran out, or the endpoint is gone (410)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Delay before each attempt: ``delays[0]`` before the first, ``delays[n]`` after the n-th failure."""

    delays_seconds: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_SECONDS

    def __post_init__(self) -> None:
        if not self.delays_seconds:
            raise InvalidInput("retrySchedule", "needs at least one attempt")
        if any(d < 0 for d in self.delays_seconds):
            raise InvalidInput("retrySchedule", "delays must not be negative")

    @property
    def max_attempts(self) -> int:
        return len(self.delays_seconds)

    def first_attempt_at(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.delays_seconds[0])

    def next_attempt_at(self, attempts_made: int, now: datetime) -> datetime | None:
        """When to try again after ``attempts_made`` failed attempts; None when the schedule is spent."""
        if attempts_made >= self.max_attempts:
            return None
        return now + timedelta(seconds=self.delays_seconds[attempts_made])


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]
    secret: str
    created_at: datetime
    status: EndpointStatus = EndpointStatus.ENABLED
    description: str | None = None
    disabled_reason: str | None = None

    def wants(self, event_type: str) -> bool:
        return self.status is EndpointStatus.ENABLED and event_type in self.event_types


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    endpoint_id: str
    # The message id (``webhook-id``): our event id, the same on every retry so receivers de-duplicate.
    event_id: str
    event_type: str
    payload: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    member_id: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    attempt_log: tuple[DeliveryAttempt, ...] = field(default_factory=tuple)


class AttemptOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    ENDPOINT_GONE = "endpoint_gone"


def classify_attempt(status_code: int | None) -> AttemptOutcome:
    """2xx succeeds; 410 Gone disables the endpoint; everything else (3xx included: redirects are
    not followed, a redirect could point anywhere) is a failure to retry."""
    if status_code is not None and 200 <= status_code < 300:
        return AttemptOutcome.SUCCEEDED
    if status_code == 410:
        return AttemptOutcome.ENDPOINT_GONE
    return AttemptOutcome.RETRY


def validate_event_types(values: Sequence[str]) -> tuple[str, ...]:
    if not values:
        raise InvalidInput("events", "must name at least one event type")
    seen: list[str] = []
    for index, value in enumerate(values):
        if value not in PUBLIC_EVENT_TYPES:
            raise InvalidInput(f"events[{index}]", f"must be one of {', '.join(sorted(PUBLIC_EVENT_TYPES))}")
        if value not in seen:
            seen.append(value)
    return tuple(seen)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# Internal details that never leave in a payload (a report's location is a path on our storage).
INTERNAL_FIELDS = frozenset({"report_location", "report_key"})


def outbound_payload(event_name: str, event_data: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body subscribers receive: ``{type, timestamp, data}`` (Standard Webhooks' shape)."""
    data = {_camel(key): value for key, value in event_data.items() if key not in INTERNAL_FIELDS}
    return {
        "type": OUTBOUND_EVENT_TYPES[event_name],
        "timestamp": data.get("occurredAt"),
        "data": data,
    }
