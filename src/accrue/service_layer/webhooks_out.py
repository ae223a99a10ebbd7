"""Outbound webhooks: subscriber endpoints, one delivery row per (endpoint, event), and the worker
that sends them.

Our events reach ``enqueue_deliveries`` through the event outbox (after the state change committed);
it writes one ``pending`` delivery per subscribed endpoint in the outbox handler's transaction, so
each is queued exactly once. The HTTP request happens later in ``WebhookDeliveryWorker``, outside
every transaction: a due delivery is leased (its next attempt moved past the request timeout), sent,
and its attempt recorded. A crash mid-request only delays the delivery until the lease expires; the
receiver de-duplicates by ``webhook-id`` (our event id), as Standard Webhooks prescribes.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any

from accrue.domain.errors import InvalidInput, NotFound
from accrue.domain.events import Event
from accrue.domain.ids import new_id
from accrue.domain.webhooks import (
    OUTBOUND_EVENT_TYPES,
    WEBHOOK_SECRET_PREFIX,
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    RetrySchedule,
    WebhookEndpoint,
    classify_attempt,
    outbound_payload,
    validate_event_types,
)
from accrue.ports import Page, UnitOfWork, WebhookSender
from accrue.service_layer.background import PollingWorker

log = logging.getLogger(__name__)

UowFactory = Callable[..., UnitOfWork]
MAX_URL_LENGTH = 2048
# Fields that name a member in our events, in order of preference (for erasure look-ups).
MEMBER_FIELDS = ("user_id", "member_id", "referrer_id")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def new_signing_secret() -> str:
    """24 random bytes, base64, with the Standard Webhooks prefix."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


# -- event handler ------------------------------------------------------------------------------


def enqueue_deliveries(
    event: Event,
    uow: UnitOfWork,
    clock: Callable[[], datetime],
    webhook_retry_schedule: RetrySchedule,
) -> None:
    """Queue one delivery of this event for every enabled endpoint subscribed to its type."""
    event_type = OUTBOUND_EVENT_TYPES.get(event.name)
    if event_type is None:
        return
    endpoints = uow.webhook_endpoints.subscribed_to(event_type)
    if not endpoints:
        return
    data = event.to_dict()
    payload = json.dumps(outbound_payload(event.name, data), default=_json_default, separators=(",", ":"))
    member_id = next((str(data[f]) for f in MEMBER_FIELDS if data.get(f)), None)
    now = clock()
    for endpoint in endpoints:
        uow.webhook_deliveries.add(
            Delivery(
                delivery_id=new_id("whd"),
                endpoint_id=endpoint.endpoint_id,
                event_id=event.event_id,
                event_type=event_type,
                payload=payload,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=webhook_retry_schedule.first_attempt_at(now),
                created_at=now,
                member_id=member_id,
            )
        )


# -- endpoints ----------------------------------------------------------------------------------


class WebhookEndpoints:
    """Creating and listing subscriber endpoints (the URL's DNS check runs outside any transaction)."""

    def __init__(self, uow_factory: UowFactory, sender: WebhookSender, clock: Callable[[], datetime]) -> None:
        self.uow_factory = uow_factory
        self.sender = sender
        self.clock = clock

    def create(self, url: str, events: Sequence[str], description: str | None = None) -> WebhookEndpoint:
        url = url.strip()
        if not url:
            raise InvalidInput("url", "is required")
        if len(url) > MAX_URL_LENGTH:
            raise InvalidInput("url", f"must be at most {MAX_URL_LENGTH} characters")
        event_types = validate_event_types(events)
        self.sender.check_url(url)
        endpoint = WebhookEndpoint(
            endpoint_id=new_id("whe"),
            url=url,
            event_types=event_types,
            secret=new_signing_secret(),
            created_at=self.clock(),
            description=description,
        )
        with self.uow_factory() as uow:
            uow.webhook_endpoints.add(endpoint)
            uow.commit()
        return endpoint

    def list(self, limit: int, cursor: str | None) -> Page[WebhookEndpoint]:
        with self.uow_factory(readonly=True) as uow:
            return uow.webhook_endpoints.page(limit, cursor)

    def deliveries(self, endpoint_id: str, limit: int, cursor: str | None) -> Page[Delivery]:
        with self.uow_factory(readonly=True) as uow:
            if uow.webhook_endpoints.get(endpoint_id) is None:
                raise NotFound(f"webhook endpoint {endpoint_id} not found", details={"field": "endpointId"})
            return uow.webhook_deliveries.list_for_endpoint(endpoint_id, limit, cursor)


# -- delivery worker ------------------------------------------------------------------------------


class WebhookDeliveryWorker(PollingWorker):
    def __init__(
        self,
        uow_factory: UowFactory,
        sender: WebhookSender,
        clock: Callable[[], datetime],
        schedule: RetrySchedule,
        *,
        lease_seconds: float = 60.0,
        batch_size: int = 20,
        poll_seconds: float = 1.0,
        concurrency: int = 8,
    ) -> None:
        self.uow_factory = uow_factory
        self.sender = sender
        self.clock = clock
        self.schedule = schedule
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        super().__init__(thread_name="webhook-delivery", poll_seconds=poll_seconds)

    def run_once(self) -> int:
        """Attempt every due delivery once; returns how many were attempted."""
        with self.uow_factory() as uow:
            batch = uow.webhook_deliveries.claim_due(self.clock(), self.batch_size, self.lease_seconds)
            uow.commit()
        # One endpoint's deliveries go one after another, in order (after a 410 the rest are not
        # sent); different endpoints in parallel, so one slow endpoint does not hold up the others.
        by_endpoint: dict[str, list[Delivery]] = {}
        for delivery in batch:
            by_endpoint.setdefault(delivery.endpoint_id, []).append(delivery)
        groups = list(by_endpoint.values())
        if len(groups) == 1:
            self._attempt_in_order(groups[0])
        elif groups:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="webhook-send")
            list(self._pool.map(self._attempt_in_order, groups))
        return len(batch)

    def _attempt_in_order(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                self._attempt(delivery)
            except Exception:
                # The lease expires and the delivery is tried again.
                log.exception("webhook delivery %s could not be attempted", delivery.delivery_id)

    def drain(self, max_rounds: int = 100) -> None:
        """Attempt until nothing is due now (tests and CLI)."""
        for _ in range(max_rounds):
            if self.run_once() == 0:
                return

    def _attempt(self, delivery: Delivery) -> None:
        with self.uow_factory(readonly=True) as uow:
            endpoint = uow.webhook_endpoints.get(delivery.endpoint_id)
        if endpoint is None or not endpoint.wants(delivery.event_type):
            with self.uow_factory() as uow:
                uow.webhook_deliveries.fail_pending(delivery.endpoint_id, "endpoint disabled", self.clock())
                uow.commit()
            return
        started = self.clock()
        result = self.sender.deliver(endpoint.url, endpoint.secret, delivery.event_id, started, delivery.payload)
        number = delivery.attempts + 1
        outcome = classify_attempt(result.status_code) if result.error is None else AttemptOutcome.RETRY
        error = result.error
        if error is None and outcome is not AttemptOutcome.SUCCEEDED:
            error = f"HTTP {result.status_code}"
        attempt = DeliveryAttempt(
            attempt=number,
            attempted_at=started,
            status_code=result.status_code,
            error=error,
            duration_ms=result.duration_ms,
        )
        now = self.clock()
        with self.uow_factory() as uow:
            if outcome is AttemptOutcome.SUCCEEDED:
                uow.webhook_deliveries.record_attempt(delivery.delivery_id, attempt, DeliveryStatus.SUCCEEDED, None)
            elif outcome is AttemptOutcome.ENDPOINT_GONE:
                uow.webhook_deliveries.record_attempt(delivery.delivery_id, attempt, DeliveryStatus.FAILED, None)
                uow.webhook_endpoints.disable(endpoint.endpoint_id, "the endpoint answered 410 Gone", now)
                uow.webhook_deliveries.fail_pending(
                    endpoint.endpoint_id, "endpoint disabled: it answered 410 Gone", now
                )
                log.warning("webhook endpoint %s answered 410 Gone and was disabled", endpoint.endpoint_id)
            else:
                retry_at = self.schedule.next_attempt_at(number, now)
                status = DeliveryStatus.PENDING if retry_at is not None else DeliveryStatus.FAILED
                uow.webhook_deliveries.record_attempt(delivery.delivery_id, attempt, status, retry_at)
            uow.commit()

    def _after_stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# Every event we publish, to the one handler that queues its deliveries (merged in bootstrap).
EVENT_HANDLERS: dict[str, dict[str, Callable[..., None]]] = {
    event_name: {"deliver_webhooks": enqueue_deliveries} for event_name in OUTBOUND_EVENT_TYPES
}
