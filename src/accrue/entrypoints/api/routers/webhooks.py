"""Webhooks: receiving signed provider events, and the endpoints that subscribe to ours."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from accrue.bootstrap import Application
from accrue.domain.webhooks import Delivery, WebhookEndpoint, WebhookRejected
from accrue.entrypoints.api.errors import ApiError
from accrue.entrypoints.api.routing import application, router
from accrue.entrypoints.api.schemas import ApiModel, Envelope, ResponseModel, ok
from accrue.entrypoints.api.security import Admin
from accrue.service_layer.webhooks_in import WebhookReceiver
from accrue.service_layer.webhooks_out import WebhookEndpoints

api = router()
App = Annotated[Application, Depends(application)]
ProviderPath = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
EndpointIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$", alias="id")]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

# The public event types (``domain.webhooks.PUBLIC_EVENT_TYPES``), spelled out for the schema.
EventType = Literal[
    "points.earned",
    "tier.upgraded",
    "milestones.reached",
    "referral.signed_up",
    "payout.completed",
    "payment.processed",
    "payment.failed",
]


class WebhookReceived(ResponseModel):
    provider: str
    event_id: str
    event_type: str
    status: Literal["applied", "ignored", "duplicate"] = Field(
        description="applied: it changed state; ignored: recorded, nothing to do; duplicate: seen before"
    )
    message: str
    order_id: str | None = None
    points_earned: int | None = None


class CreateEndpointRequest(ApiModel):
    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="http(s) URL whose host resolves only to public addresses (422 otherwise)",
    )
    events: list[EventType] = Field(min_length=1, max_length=20)
    description: str | None = Field(default=None, max_length=200)


class EndpointOut(ResponseModel):
    id: str
    url: str
    events: list[str]
    status: Literal["enabled", "disabled"]
    description: str | None = None
    disabled_reason: str | None = None
    created_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="Standard Webhooks signing secret (whsec_...); shown only once")


class EndpointPage(ResponseModel):
    endpoints: list[EndpointOut]
    next_cursor: str | None = None


class AttemptOut(ResponseModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int


class DeliveryOut(ResponseModel):
    id: str
    event_id: str = Field(description="Also the webhook-id header: the same on every retry")
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: datetime
    payload: dict[str, Any]
    attempt_log: list[AttemptOut]


class DeliveryPage(ResponseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None = None


def _receiver(app: Application) -> WebhookReceiver:
    receiver: WebhookReceiver = app.services["webhook_receiver"]
    return receiver


def _endpoints(app: Application) -> WebhookEndpoints:
    endpoints: WebhookEndpoints = app.services["webhook_endpoints"]
    return endpoints


def _endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=endpoint.endpoint_id,
        url=endpoint.url,
        events=list(endpoint.event_types),
        status=endpoint.status.value,
        description=endpoint.description,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_at,
    )


def _delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.delivery_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status.value,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        payload=json.loads(delivery.payload),
        attempt_log=[
            AttemptOut(
                attempt=a.attempt,
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in delivery.attempt_log
        ],
    )


@api.post(
    "/webhooks/{provider}",
    response_model=Envelope[WebhookReceived],
    tags=["webhooks"],
    summary="Receive a provider's signed webhook",
    description=(
        "Authenticated by the provider's signature on the raw body (not by a bearer token): Stripe "
        "(`Stripe-Signature`), Shopify (`X-Shopify-Hmac-Sha256`, `X-Shopify-Webhook-Id`) or Standard "
        "Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) for configured custom sources. "
        "A bad or missing signature, or a timestamp outside the tolerance, is 401 and nothing is stored. "
        "An event id seen before is 200 with status `duplicate` and nothing is applied again."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
        }
    },
)
async def receive_webhook(provider: ProviderPath, request: Request, app: App) -> dict[str, object]:
    # The raw bytes, exactly as signed: parsing first could change them.
    body = await request.body()
    headers = dict(request.headers.items())
    try:
        result = await run_in_threadpool(_receiver(app).receive, provider, body, headers)
    except WebhookRejected as exc:
        raise ApiError(401, exc.message, details={"provider": provider}) from None
    return ok(
        WebhookReceived(
            provider=result.provider,
            event_id=result.event_id,
            event_type=result.event_type,
            status=result.status.value,
            message=result.message,
            order_id=result.order_id,
            points_earned=result.points_earned,
        )
    )


@api.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=Envelope[EndpointCreated],
    tags=["webhooks"],
    summary="Subscribe a URL to our events",
)
def create_endpoint(body: CreateEndpointRequest, app: App, principal: Admin) -> dict[str, object]:
    endpoint = _endpoints(app).create(body.url, list(body.events), body.description)
    return ok(EndpointCreated(**_endpoint_out(endpoint).model_dump(), secret=endpoint.secret))


@api.get("/webhook-endpoints", response_model=Envelope[EndpointPage], tags=["webhooks"])
def list_endpoints(app: App, principal: Admin, limit: Limit = 50, cursor: Cursor = None) -> dict[str, object]:
    page = _endpoints(app).list(limit, cursor)
    return ok(EndpointPage(endpoints=[_endpoint_out(e) for e in page.items], next_cursor=page.next_cursor))


@api.get(
    "/webhook-endpoints/{id}/deliveries",
    response_model=Envelope[DeliveryPage],
    tags=["webhooks"],
    summary="Deliveries to an endpoint, newest first, each with its attempts",
)
def list_deliveries(
    endpoint_id: EndpointIdPath, app: App, principal: Admin, limit: Limit = 20, cursor: Cursor = None
) -> dict[str, object]:
    page = _endpoints(app).deliveries(endpoint_id, limit, cursor)
    return ok(DeliveryPage(deliveries=[_delivery_out(d) for d in page.items], next_cursor=page.next_cursor))
