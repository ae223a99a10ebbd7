"""Outbound webhooks to a real HTTP receiver on loopback: signed per Standard Webhooks (checked with
the ``standardwebhooks`` library on the receiving side), retried on a compressed schedule, an
endpoint answering 410 disabled, and private addresses refused (at creation and at delivery)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from accrue.adapters.local.http_sender import HttpxWebhookSender
from accrue.bootstrap import Application, bootstrap
from accrue.config import Settings
from accrue.domain.payments import PaymentFailed, PaymentProcessed
from accrue.domain.payouts import PayoutCompleted
from accrue.domain.referrals import ReferralSignedUp
from accrue.entrypoints.api.app import create_app
from accrue.service_layer.webhooks_out import WebhookDeliveryWorker
from tests.conftest import auth, make_settings, wait_for
from tests.webhook_support import Receiver

SCHEDULE = [0, 0.05, 0.05, 0.05]  # the Standard Webhooks schedule, compressed: 4 attempts


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        workers_enabled=False,
        webhooks_allow_loopback=True,
        webhook_retry_schedule_seconds=SCHEDULE,
        webhook_timeout_seconds=5,
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


def delivery_worker(app: Application) -> WebhookDeliveryWorker:
    worker: WebhookDeliveryWorker = app.services["webhook_delivery"]
    return worker


def subscribe(client: TestClient, url: str, events: list[str]) -> dict[str, Any]:
    created = client.post("/webhook-endpoints", json={"url": url, "events": events}, headers=auth())
    assert created.status_code == 201, created.text
    data: dict[str, Any] = created.json()["data"]
    return data


def buy(client: TestClient, amount: str = "150.00") -> str:
    user = client.post("/users", json={"email": "eve@example.com", "name": "Eve"}, headers=auth()).json()["data"]
    order = client.post("/orders", json={"userId": user["userId"], "amount": amount}, headers=auth())
    assert order.status_code == 201, order.text
    return str(user["userId"])


def run_until_settled(app: Application, seconds: float = 10.0) -> None:
    """Drain the event outbox, then attempt deliveries until none is pending."""
    app.worker.drain()
    assert app.database is not None
    conn = app.database.connection()

    def settled() -> bool:
        delivery_worker(app).run_once()
        return conn.execute("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'").fetchone()[0] == 0

    wait_for(settled, timeout=seconds, interval=0.02)


def deliveries(client: TestClient, endpoint_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/webhook-endpoints/{endpoint_id}/deliveries", headers=auth())
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]["deliveries"]
    return found


def test_creating_an_endpoint_returns_a_standard_webhooks_secret_once(client: TestClient, receiver: Receiver) -> None:
    created = subscribe(client, receiver.url, ["points.earned", "tier.upgraded"])
    assert created["id"].startswith("whe_")
    assert created["secret"].startswith("whsec_")
    assert created["status"] == "enabled"
    Webhook(created["secret"])  # the library accepts it as a signing secret
    listed = client.get("/webhook-endpoints", headers=auth()).json()["data"]["endpoints"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]


def test_an_event_is_delivered_signed_so_the_standardwebhooks_library_verifies_it(
    client: TestClient, app: Application, receiver: Receiver
) -> None:
    endpoint = subscribe(client, receiver.url, ["points.earned"])
    user_id = buy(client)
    run_until_settled(app)

    earned = [r for r in receiver.requests if json.loads(r.body)["data"]["reason"] == "earn"]
    assert len(earned) == 1
    request = earned[0]
    verified = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert verified["type"] == "points.earned"
    assert verified["data"]["userId"] == user_id
    assert verified["data"]["points"] == 15
    assert request.headers["webhook-id"] == verified["data"]["eventId"]
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(request.body, request.headers)


def test_a_receiver_failing_twice_then_succeeding_gets_exactly_one_successful_delivery(
    client: TestClient, app: Application, receiver: Receiver
) -> None:
    endpoint = subscribe(client, receiver.url, ["tier.upgraded"])
    receiver.statuses = [500, 503]
    buy(client, amount="12000.00")  # 1 200 points: BRONZE -> SILVER
    run_until_settled(app)

    assert [r.status for r in receiver.requests] == [500, 503, 200]
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # one message, three attempts
    for request in receiver.requests:
        Webhook(endpoint["secret"]).verify(request.body, request.headers)
    [delivery] = deliveries(client, endpoint["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 3
    assert [a["statusCode"] for a in delivery["attemptLog"]] == [500, 503, 200]
    assert delivery["payload"]["data"]["newTier"] == "SILVER"

    # Nothing is due any more: running the worker again sends nothing.
    delivery_worker(app).run_once()
    time.sleep(0.1)
    delivery_worker(app).run_once()
    assert len(receiver.requests) == 3


def test_a_delivery_that_fails_every_attempt_of_the_schedule_ends_failed(
    client: TestClient, app: Application, receiver: Receiver
) -> None:
    endpoint = subscribe(client, receiver.url, ["tier.upgraded"])
    receiver.statuses = [500] * 10
    buy(client, amount="12000.00")
    run_until_settled(app)
    [delivery] = deliveries(client, endpoint["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == len(SCHEDULE)
    assert len(receiver.requests) == len(SCHEDULE)


def test_an_endpoint_answering_410_is_disabled_and_receives_nothing_more(
    client: TestClient, app: Application, receiver: Receiver
) -> None:
    endpoint = subscribe(client, receiver.url, ["points.earned"])
    receiver.statuses = [410]
    buy(client)
    run_until_settled(app)
    assert len(receiver.requests) == 1
    listed = client.get("/webhook-endpoints", headers=auth()).json()["data"]["endpoints"]
    assert listed[0]["status"] == "disabled"
    assert "410" in listed[0]["disabledReason"]
    assert all(d["status"] == "failed" for d in deliveries(client, endpoint["id"]))

    client.post(
        "/transactions",
        json={"memberId": "usr_other", "transactionAmount": "50", "transactionType": "purchase"},
        headers=auth(),
    )
    run_until_settled(app)
    assert len(receiver.requests) == 1


def test_an_endpoint_only_receives_the_event_types_it_chose(
    client: TestClient, app: Application, receiver: Receiver
) -> None:
    endpoint = subscribe(client, receiver.url, ["payment.failed"])
    buy(client, amount="12000.00")
    run_until_settled(app)
    assert receiver.requests == []
    assert deliveries(client, endpoint["id"]) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/hook",
        "http://192.168.1.20:8080/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
    ],
)
def test_an_endpoint_at_a_private_address_is_refused(client: TestClient, url: str) -> None:
    answer = client.post("/webhook-endpoints", json={"url": url, "events": ["points.earned"]}, headers=auth())
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["details"]["field"] == "url"
    assert client.get("/webhook-endpoints", headers=auth()).json()["data"]["endpoints"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["points.earned"]}, "url"),
        ({"url": "https://example.com/x", "events": []}, "events"),
        ({"url": "https://example.com/x", "events": ["points.spent"]}, "events[0]"),
    ],
)
def test_a_malformed_endpoint_request_is_a_400_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    answer = client.post("/webhook-endpoints", json=body, headers=auth())
    assert answer.status_code == 400
    assert answer.json()["error"]["details"]["errors"][0]["field"] == field


def test_endpoints_are_for_admins_only(client: TestClient, receiver: Receiver) -> None:
    body = {"url": receiver.url, "events": ["points.earned"]}
    assert client.post("/webhook-endpoints", json=body, headers=auth("service", "pos")).status_code == 403
    assert client.get("/webhook-endpoints", headers=auth("member", "usr_1")).status_code == 403
    assert client.post("/webhook-endpoints", json=body).status_code == 401


def test_deliveries_of_an_unknown_endpoint_are_not_found(client: TestClient) -> None:
    assert client.get("/webhook-endpoints/whe_nope/deliveries", headers=auth()).status_code == 404


# -- loopback and DNS rebinding -------------------------------------------------------------------


def test_loopback_is_refused_unless_the_development_setting_allows_it(tmp_path: Path, receiver: Receiver) -> None:
    strict = bootstrap(make_settings(tmp_path, workers_enabled=False))
    try:
        with TestClient(create_app(strict)) as client:
            for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost"), "http://[::1]:9/x"):
                answer = client.post(
                    "/webhook-endpoints", json={"url": url, "events": ["points.earned"]}, headers=auth()
                )
                assert answer.status_code == 422, url
                assert "loopback" in answer.json()["error"]["message"]
    finally:
        strict.close()


def test_the_loopback_setting_is_refused_in_production(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ACCRUE_WEBHOOKS_ALLOW_LOOPBACK"):
        make_settings(tmp_path, env="production", jwt_secret="p" * 40, webhooks_allow_loopback=True)


class Rebinding:
    """A DNS answer that is public when the endpoint is created and loopback afterwards."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.calls = 0

    def __call__(self, host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.calls += 1
        address = "93.184.215.14" if self.calls == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


def test_a_name_that_rebinds_to_loopback_after_creation_is_refused_at_delivery(
    tmp_path: Path, receiver: Receiver
) -> None:
    assert receiver.server is not None
    port = receiver.server.server_address[1]
    sender = HttpxWebhookSender(timeout_seconds=2, allow_loopback=False, resolver=Rebinding(port))
    application = bootstrap(
        make_settings(tmp_path, workers_enabled=False, webhook_retry_schedule_seconds=[0]),
        webhook_sender=sender,
    )
    try:
        with TestClient(create_app(application)) as client:
            endpoint = subscribe(client, f"http://hooks.example.test:{port}/in", ["points.earned"])
            buy(client)
            run_until_settled(application)
            found = deliveries(client, endpoint["id"])
    finally:
        application.close()
    assert receiver.requests == []
    assert found
    for delivery in found:
        assert delivery["status"] == "failed"
        assert "loopback" in delivery["attemptLog"][0]["error"]


def test_events_of_referrals_payouts_and_payments_are_delivered_by_name_and_erasable_per_member(
    client: TestClient, app: Application, receiver: Receiver
) -> None:
    endpoint = subscribe(
        client, receiver.url, ["referral.signed_up", "payout.completed", "payment.processed", "payment.failed"]
    )
    events = [
        ReferralSignedUp(
            referral_id="ref_1",
            referrer_id="usr_referrer",
            referred_id="usr_referred",
            referral_code="ABCD2345",
            referral_count=5,
            reward_cents=1500,
            status="pending",
            total_rewards_cents=5500,
        ),
        PayoutCompleted(
            run_id="run_1",
            month="2026-02",
            referrers=3,
            rewards=7,
            total_cents=9500,
            report_key="payouts/2026-02/report.csv",
            report_location="/srv/var/blobs/payouts/2026-02/report.csv",
        ),
        PaymentProcessed(payment_id="pay_1", amount="20.00", currency="USD", amount_minor=2000, user_id="usr_payer"),
        PaymentFailed(payment_id="pay_2", amount="5.00", currency="USD", amount_minor=500, reason="declined"),
    ]
    with app.bus.uow_factory() as uow:
        for event in events:
            uow.emit(event)
        uow.commit()
    run_until_settled(app)

    verified = [Webhook(endpoint["secret"]).verify(r.body, r.headers) for r in receiver.requests]
    assert sorted(v["type"] for v in verified) == [
        "payment.failed",
        "payment.processed",
        "payout.completed",
        "referral.signed_up",
    ]
    payout = next(v for v in verified if v["type"] == "payout.completed")
    assert payout["data"]["totalCents"] == 9500
    assert "reportLocation" not in payout["data"]

    with app.bus.uow_factory() as uow:
        assert uow.webhook_deliveries.forget_member("usr_referred") == 1
        uow.commit()
    referral = next(d for d in deliveries(client, endpoint["id"]) if d["eventType"] == "referral.signed_up")
    assert referral["payload"] == {"erased": True}


def test_a_delivery_leased_by_a_worker_that_died_is_sent_once_the_lease_expires(
    client: TestClient, app: Application, receiver: Receiver
) -> None:
    endpoint = subscribe(client, receiver.url, ["tier.upgraded"])
    buy(client, amount="12000.00")
    app.worker.drain()
    with app.bus.uow_factory() as uow:
        # A worker leases the delivery for 0.3 s, then dies before sending anything.
        [leased] = uow.webhook_deliveries.claim_due(app.clock(), 10, 0.3)
        uow.commit()
    assert delivery_worker(app).run_once() == 0  # still leased: nobody else takes it
    assert receiver.requests == []
    time.sleep(0.35)
    run_until_settled(app)
    assert len(receiver.requests) == 1
    assert receiver.requests[0].headers["webhook-id"] == leased.event_id
    [delivery] = deliveries(client, endpoint["id"])
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1)
