"""Inbound webhooks over the HTTP API: payloads signed by the providers' own schemes (the ``stripe``
library's signature header, Shopify's base64 HMAC, the ``standardwebhooks`` library), then applied
once, or refused with nothing stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from accrue.bootstrap import Application, bootstrap
from accrue.config import Settings
from accrue.entrypoints.api.app import create_app
from tests.conftest import auth, make_settings

STRIPE_SECRET = "whsec_stripe_current_0123456789abcdef"
STRIPE_OLD_SECRET = "whsec_stripe_previous_0123456789abcd"
SHOPIFY_SECRET = "shpss_shopify_app_secret_0123456789abcdef"
POS_SECRET = "whsec_" + base64.b64encode(b"point-of-sale-signing-key-24b").decode()
POS_NEXT_SECRET = "whsec_" + base64.b64encode(b"point-of-sale-next-key-000024").decode()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        workers_enabled=False,
        stripe_webhook_secrets=[STRIPE_SECRET, STRIPE_OLD_SECRET],
        shopify_webhook_secrets=[SHOPIFY_SECRET],
        standard_webhook_secrets={"pos": [POS_SECRET, POS_NEXT_SECRET]},
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Application]:
    application = bootstrap(settings)
    yield application
    application.close()


@pytest.fixture
def client(app: Application) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


@pytest.fixture
def member(client: TestClient) -> dict[str, Any]:
    created = client.post("/users", json={"email": "Dana@Example.com", "name": "Dana"}, headers=auth())
    assert created.status_code == 201, created.text
    data: dict[str, Any] = created.json()["data"]
    return data


def points(client: TestClient, user_id: str) -> int:
    return int(client.get(f"/points/{user_id}", headers=auth()).json()["data"]["balance"])


def orders(client: TestClient, user_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get("/orders", params={"userId": user_id}, headers=auth()).json()["data"][
        "orders"
    ]
    return found


def stored_events(app: Application) -> list[sqlite3.Row]:
    assert app.database is not None
    return app.database.connection().execute("SELECT * FROM webhook_events ORDER BY seq").fetchall()


def archived(app: Application) -> list[str]:
    assert app.blobs is not None
    return app.blobs.list("webhooks/inbound/")


# -- Stripe ---------------------------------------------------------------------------------------


def stripe_event(user_id: str, *, event_id: str = "evt_1", kind: str = "payment_intent.succeeded") -> bytes:
    if kind == "payment_intent.succeeded":
        obj = {
            "id": "pi_3Q",
            "object": "payment_intent",
            "amount": 15000,
            "amount_received": 15000,
            "currency": "usd",
            "metadata": {"userId": user_id},
        }
    elif kind == "charge.succeeded":
        obj = {
            "id": "ch_3Q",
            "object": "charge",
            "amount": 15000,
            "currency": "usd",
            "payment_intent": "pi_3Q",
            "metadata": {"userId": user_id},
        }
    else:
        obj = {"id": "cus_1", "object": "customer", "email": "dana@example.com"}
    event = {"id": event_id, "object": "event", "type": kind, "data": {"object": obj}, "livemode": False}
    return json.dumps(event).encode()


def stripe_headers(body: bytes, secret: str = STRIPE_SECRET, timestamp: int | None = None) -> dict[str, str]:
    # The signature header exactly as Stripe's own library computes it.
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def test_a_signed_stripe_payment_earns_points_once_and_a_replay_is_a_duplicate(
    client: TestClient, app: Application, member: dict[str, Any]
) -> None:
    user_id = member["userId"]
    body = stripe_event(user_id)
    first = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert data["status"] == "applied"
    assert data["orderId"] == "stripe_pi_3Q"
    assert data["pointsEarned"] == 15  # floor(150.00 x 0.10)
    assert points(client, user_id) == 100 + 15

    replay = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert replay.status_code == 200
    assert replay.json()["data"]["status"] == "duplicate"
    assert points(client, user_id) == 115
    assert [o["orderId"] for o in orders(client, user_id)] == ["stripe_pi_3Q"]
    assert len(stored_events(app)) == 1


def test_the_charge_event_of_an_already_paid_intent_adds_no_second_order(
    client: TestClient, member: dict[str, Any]
) -> None:
    user_id = member["userId"]
    intent = stripe_event(user_id, event_id="evt_pi")
    charge = stripe_event(user_id, event_id="evt_ch", kind="charge.succeeded")
    assert client.post("/webhooks/stripe", content=intent, headers=stripe_headers(intent)).json()["data"]["status"] == (
        "applied"
    )
    second = client.post("/webhooks/stripe", content=charge, headers=stripe_headers(charge))
    assert second.status_code == 200
    assert second.json()["data"]["status"] == "ignored"
    assert "already recorded" in second.json()["data"]["message"]
    assert points(client, user_id) == 115
    assert len(orders(client, user_id)) == 1


def test_metadata_order_id_names_the_order(client: TestClient, member: dict[str, Any]) -> None:
    user_id = member["userId"]
    event = json.loads(stripe_event(user_id, event_id="evt_named"))
    event["data"]["object"]["metadata"]["orderId"] = "web-1001"
    body = json.dumps(event).encode()
    answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.json()["data"]["orderId"] == "web-1001"
    assert [o["orderId"] for o in orders(client, user_id)] == ["web-1001"]


def test_a_tampered_stripe_body_is_refused_and_nothing_is_stored(
    client: TestClient, app: Application, member: dict[str, Any]
) -> None:
    body = stripe_event(member["userId"])
    headers = stripe_headers(body)
    tampered = body.replace(b"15000", b"95000")
    answer = client.post("/webhooks/stripe", content=tampered, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHORIZED"
    assert "no v1 signature matches" in answer.json()["error"]["message"]
    assert points(client, member["userId"]) == 100
    assert stored_events(app) == []
    assert archived(app) == []


def test_a_stripe_signature_made_with_another_secret_is_refused(
    client: TestClient, app: Application, member: dict[str, Any]
) -> None:
    body = stripe_event(member["userId"])
    answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body, secret="whsec_not_ours_at_all"))
    assert answer.status_code == 401
    assert stored_events(app) == []


# A future timestamp moves toward the window while the test runs: well past it, not at the edge.
@pytest.mark.parametrize("age_seconds", [301, 3600, -330], ids=["just-stale", "an-hour-old", "from-the-future"])
def test_a_stripe_timestamp_outside_the_300_s_tolerance_is_refused(
    client: TestClient, app: Application, member: dict[str, Any], age_seconds: int
) -> None:
    body = stripe_event(member["userId"])
    headers = stripe_headers(body, timestamp=int(time.time()) - age_seconds)
    answer = client.post("/webhooks/stripe", content=body, headers=headers)
    assert answer.status_code == 401
    assert "tolerance" in answer.json()["error"]["message"]
    assert stored_events(app) == []
    assert points(client, member["userId"]) == 100


def test_during_secret_rotation_the_previous_secret_and_extra_v1_signatures_are_accepted(
    client: TestClient, member: dict[str, Any]
) -> None:
    body = stripe_event(member["userId"], event_id="evt_rot")
    signed_old = stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_OLD_SECRET)
    # Stripe sends one v1 per active secret while a secret is rolled; one of them is enough.
    header = signed_old + ",v1=" + "0" * 64
    answer = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": header})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["status"] == "applied"


@pytest.mark.parametrize(
    "header",
    [None, "", "t=abc,v1=00", "v1=" + "0" * 64, "t=1700000000"],
    ids=["absent", "empty", "bad-t", "no-t", "no-v1"],
)
def test_a_missing_or_malformed_stripe_signature_header_is_refused(
    client: TestClient, app: Application, member: dict[str, Any], header: str | None
) -> None:
    body = stripe_event(member["userId"])
    headers = {} if header is None else {"Stripe-Signature": header}
    answer = client.post("/webhooks/stripe", content=body, headers=headers)
    assert answer.status_code == 401
    assert stored_events(app) == []


def test_a_verified_payment_without_a_member_id_is_a_400_naming_the_field_and_nothing_is_recorded(
    client: TestClient, app: Application, member: dict[str, Any]
) -> None:
    event = json.loads(stripe_event(member["userId"]))
    del event["data"]["object"]["metadata"]["userId"]
    body = json.dumps(event).encode()
    answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.status_code == 400
    assert answer.json()["error"]["details"]["field"] == "data.object.metadata.userId"
    assert stored_events(app) == []


def test_a_payment_for_an_unknown_member_is_404_and_can_be_retried_later(client: TestClient, app: Application) -> None:
    body = stripe_event("usr_nobody", event_id="evt_later")
    answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.status_code == 404
    assert stored_events(app) == []  # not recorded: the provider's retry is not taken for a replay
    client.post("/users", json={"email": "late@example.com", "name": "Late", "userId": "usr_nobody"}, headers=auth())
    retried = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert retried.json()["data"]["status"] == "applied"


def test_an_event_type_we_do_not_act_on_is_recorded_as_ignored_and_then_seen_as_a_duplicate(
    client: TestClient, app: Application, member: dict[str, Any]
) -> None:
    body = stripe_event(member["userId"], event_id="evt_cus", kind="customer.created")
    first = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert first.json()["data"]["status"] == "ignored"
    again = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert again.json()["data"]["status"] == "duplicate"
    assert points(client, member["userId"]) == 100


def test_the_raw_payload_and_headers_are_archived_and_findable_by_member(
    client: TestClient, app: Application, member: dict[str, Any]
) -> None:
    body = stripe_event(member["userId"], event_id="evt_arch")
    headers = stripe_headers(body)
    client.post("/webhooks/stripe", content=body, headers={**headers, "Authorization": "Bearer not-archived"})
    [row] = stored_events(app)
    assert row["member_id"] == member["userId"]
    assert row["reference"] == "order:stripe_pi_3Q"
    assert app.blobs is not None
    document = json.loads(app.blobs.get(row["blob_key"]))
    assert document["body"] == body.decode()  # byte for byte what was signed
    assert document["headers"]["stripe-signature"] == headers["Stripe-Signature"]
    assert "authorization" not in document["headers"]
    with app.bus.uow_factory(readonly=True) as uow:
        assert [r.blob_key for r in uow.webhook_events.for_member(member["userId"])] == [row["blob_key"]]


def test_an_unconfigured_provider_is_not_found(client: TestClient) -> None:
    answer = client.post("/webhooks/hubspot", content=b"{}")
    assert answer.status_code == 404
    assert answer.json()["error"]["details"]["field"] == "provider"


def test_twelve_concurrent_deliveries_of_one_event_apply_it_once(
    app: Application, member: dict[str, Any], client: TestClient
) -> None:
    body = stripe_event(member["userId"], event_id="evt_race")
    receiver = app.services["webhook_receiver"]

    def deliver(_: int) -> str:
        headers = {k.lower(): v for k, v in stripe_headers(body).items()}
        return str(receiver.receive("stripe", body, headers).status)

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(deliver, range(12)))
    assert statuses.count("applied") == 1
    assert statuses.count("duplicate") == 11
    assert points(client, member["userId"]) == 115


# -- Shopify --------------------------------------------------------------------------------------


def shopify_order(email: str = "dana@EXAMPLE.com") -> bytes:
    return json.dumps(
        {
            "id": 820982911946154508,
            "email": email,
            "total_price": "250.00",
            "currency": "USD",
            "financial_status": "paid",
            "line_items": [
                {"sku": "TV-55", "quantity": 1, "price": "200.00", "product_type": "electronics"},
                {"sku": None, "variant_id": 42, "quantity": 2, "price": "25.00"},
            ],
        }
    ).encode()


def shopify_headers(body: bytes, *, secret: str = SHOPIFY_SECRET, webhook_id: str = "b54557e4-1") -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": webhook_id,
        "Content-Type": "application/json",
    }


def test_a_signed_shopify_order_earns_points_for_the_member_with_that_email_once(
    client: TestClient, member: dict[str, Any]
) -> None:
    body = shopify_order()
    first = client.post("/webhooks/shopify", content=body, headers=shopify_headers(body))
    assert first.status_code == 200, first.text
    assert first.json()["data"]["status"] == "applied"
    assert first.json()["data"]["pointsEarned"] == 25
    [order] = orders(client, member["userId"])
    assert order["orderId"] == "shopify_820982911946154508"
    assert [(i["sku"], i["category"]) for i in order["items"]] == [("TV-55", "electronics"), ("item-42", None)]

    replay = client.post("/webhooks/shopify", content=body, headers=shopify_headers(body))
    assert replay.json()["data"]["status"] == "duplicate"
    assert points(client, member["userId"]) == 125


def test_a_tampered_or_wrongly_signed_shopify_order_is_refused(
    client: TestClient, app: Application, member: dict[str, Any]
) -> None:
    body = shopify_order()
    tampered = body.replace(b"250.00", b"950.00")
    assert client.post("/webhooks/shopify", content=tampered, headers=shopify_headers(body)).status_code == 401
    wrong = shopify_headers(body, secret="someone-elses-secret")
    assert client.post("/webhooks/shopify", content=body, headers=wrong).status_code == 401
    no_hmac = {k: v for k, v in shopify_headers(body).items() if k != "X-Shopify-Hmac-Sha256"}
    assert client.post("/webhooks/shopify", content=body, headers=no_hmac).status_code == 401
    assert stored_events(app) == []
    assert points(client, member["userId"]) == 100


def test_a_shopify_order_for_an_email_that_is_no_member_is_404(client: TestClient, app: Application) -> None:
    body = shopify_order("stranger@example.com")
    answer = client.post("/webhooks/shopify", content=body, headers=shopify_headers(body))
    assert answer.status_code == 404
    assert answer.json()["error"]["details"]["field"] == "email"
    assert stored_events(app) == []


def test_a_shopify_delivery_without_its_webhook_id_is_a_400(client: TestClient, member: dict[str, Any]) -> None:
    body = shopify_order()
    headers = {k: v for k, v in shopify_headers(body).items() if k != "X-Shopify-Webhook-Id"}
    answer = client.post("/webhooks/shopify", content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["details"]["field"] == "X-Shopify-Webhook-Id"


# -- Standard Webhooks ----------------------------------------------------------------------------


def pos_message(user_id: str, order_id: str = "pos-77") -> str:
    return json.dumps(
        {
            "type": "order.paid",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {"orderId": order_id, "userId": user_id, "amount": "42.50", "currency": "USD"},
        }
    )


def standard_headers(
    payload: str, *, secret: str = POS_SECRET, msg_id: str = "msg_2Jk", at: datetime | None = None
) -> dict[str, str]:
    timestamp = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, timestamp, payload),
        "content-type": "application/json",
    }


def test_a_standard_webhooks_message_from_a_configured_source_is_applied_once(
    client: TestClient, member: dict[str, Any]
) -> None:
    payload = pos_message(member["userId"])
    first = client.post("/webhooks/pos", content=payload, headers=standard_headers(payload))
    assert first.status_code == 200, first.text
    assert first.json()["data"] | {"message": ""} == {
        "provider": "pos",
        "eventId": "msg_2Jk",
        "eventType": "order.paid",
        "status": "applied",
        "message": "",
        "orderId": "pos-77",
        "pointsEarned": 4,
    }
    replay = client.post("/webhooks/pos", content=payload, headers=standard_headers(payload))
    assert replay.json()["data"]["status"] == "duplicate"
    assert points(client, member["userId"]) == 104


def test_the_next_secret_of_a_source_is_accepted_while_rotating(client: TestClient, member: dict[str, Any]) -> None:
    payload = pos_message(member["userId"], order_id="pos-78")
    answer = client.post("/webhooks/pos", content=payload, headers=standard_headers(payload, secret=POS_NEXT_SECRET))
    assert answer.json()["data"]["status"] == "applied"


@pytest.mark.parametrize("case", ["tampered", "wrong-secret", "stale", "future", "no-signature"])
def test_a_standard_webhooks_message_that_fails_verification_is_refused(
    client: TestClient, app: Application, member: dict[str, Any], case: str
) -> None:
    payload = pos_message(member["userId"])
    body = payload
    if case == "tampered":
        headers = standard_headers(payload)
        body = payload.replace("42.50", "4250.00")
    elif case == "wrong-secret":
        headers = standard_headers(payload, secret="whsec_" + base64.b64encode(b"x" * 24).decode())
    elif case == "stale":
        headers = standard_headers(payload, at=datetime.now(UTC) - timedelta(minutes=6))
    elif case == "future":
        headers = standard_headers(payload, at=datetime.now(UTC) + timedelta(minutes=6))
    else:
        headers = {k: v for k, v in standard_headers(payload).items() if k != "webhook-signature"}
    answer = client.post("/webhooks/pos", content=body, headers=headers)
    assert answer.status_code == 401
    assert stored_events(app) == []
    assert archived(app) == []
    assert points(client, member["userId"]) == 100


def test_a_standard_webhooks_message_can_name_the_member_by_email(client: TestClient, member: dict[str, Any]) -> None:
    payload = json.dumps(
        {"type": "payment.completed", "data": {"orderId": "pos-9", "email": "DANA@example.com", "amount": 150}}
    )
    answer = client.post("/webhooks/pos", content=payload, headers=standard_headers(payload, msg_id="msg_email"))
    assert answer.json()["data"]["status"] == "applied"
    assert answer.json()["data"]["pointsEarned"] == 15


def test_forgetting_a_member_unlinks_their_events_and_hands_back_the_archive_keys_but_replays_stay_refused(
    client: TestClient, app: Application, member: dict[str, Any]
) -> None:
    body = stripe_event(member["userId"], event_id="evt_gdpr")
    client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    [row] = stored_events(app)
    with app.bus.uow_factory() as uow:
        keys = uow.webhook_events.forget_member(member["userId"])
        uow.commit()
    assert keys == [row["blob_key"]]
    with app.bus.uow_factory(readonly=True) as uow:
        assert uow.webhook_events.for_member(member["userId"]) == []
    replay = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert replay.json()["data"]["status"] == "duplicate"
