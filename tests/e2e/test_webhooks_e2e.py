"""Webhooks in, webhooks out and email notifications against a real server process: a Stripe payment
signed with the ``stripe`` library becomes points and a tier upgrade; the upgrade reaches a loopback
subscriber (failing twice first) verified with ``standardwebhooks``, and reaches the member's inbox on
a loopback SMTP server only when email is allowed."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from standardwebhooks.webhooks import Webhook

from tests.conftest import LiveServer, start_server, stop_server, wait_for
from tests.notification_support import SmtpSink, text_of
from tests.webhook_support import Receiver

pytestmark = pytest.mark.slow

STRIPE_SECRET = "whsec_e2e_stripe_signing_secret_0123456789"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def server(tmp_path: Path, smtp: SmtpSink) -> Iterator[LiveServer]:
    running = start_server(
        tmp_path,
        ACCRUE_STRIPE_WEBHOOK_SECRETS=STRIPE_SECRET,
        ACCRUE_WEBHOOKS_ALLOW_LOOPBACK="true",
        ACCRUE_WEBHOOK_RETRY_SCHEDULE_SECONDS="[0, 0.2, 0.2, 0.2]",
        ACCRUE_WEBHOOK_POLL_SECONDS="0.1",
        ACCRUE_SMTP_HOST="127.0.0.1",
        ACCRUE_SMTP_PORT=str(smtp.port),
        ACCRUE_NOTIFICATION_POLL_SECONDS="0.1",
    )
    yield running
    stop_server(running)


def stripe_payment(event_id: str, user_id: str, amount_cents: int) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": f"pi_{event_id}",
                    "object": "payment_intent",
                    "amount": amount_cents,
                    "amount_received": amount_cents,
                    "currency": "usd",
                    "metadata": {"userId": user_id},
                }
            },
        }
    ).encode()


def post_stripe(server: LiveServer, body: bytes, secret: str = STRIPE_SECRET) -> httpx.Response:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret)
    return httpx.post(
        f"{server.url}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        timeout=30,
    )


def email_sends(server: LiveServer, user_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{server.db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT channel, status FROM notification_sends WHERE user_id = ? ORDER BY send_id", (user_id,)
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def test_a_signed_payment_upgrades_a_member_and_both_the_subscriber_and_the_inbox_hear_of_it(
    server: LiveServer, smtp: SmtpSink, receiver: Receiver
) -> None:
    with server.client() as api:
        endpoint = api.post("/webhook-endpoints", json={"url": receiver.url, "events": ["tier.upgraded"]})
        assert endpoint.status_code == 201, endpoint.text
        secret = endpoint.json()["data"]["secret"]
        receiver.statuses = [500, 502]

        allowed = api.post("/users", json={"email": "hal@example.com", "name": "Hal"}).json()["data"]["userId"]
        quiet = api.post("/users", json={"email": "ivy@example.com", "name": "Ivy"}).json()["data"]["userId"]
        off = api.put(f"/users/{quiet}/preferences", json={"email": False, "sms": True, "push": True})
        assert off.status_code == 200, off.text

        # The same signed event delivered eight times at once is applied once.
        body = stripe_payment("evt_e2e_1", allowed, 1_200_000)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: post_stripe(server, body), range(8)))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert sorted(a.json()["data"]["status"] for a in answers) == ["applied"] + ["duplicate"] * 7
        assert api.get(f"/points/{allowed}").json()["data"]["tier"] == "SILVER"

        # A tampered copy and a stale one change nothing.
        tampered = body.replace(b"1200000", b"9900000")
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), STRIPE_SECRET)
        refused = httpx.post(f"{server.url}/webhooks/stripe", content=tampered, headers={"Stripe-Signature": header})
        assert refused.status_code == 401
        stale_header = stripe.WebhookSignature.generate_signature_header(
            body.decode(), STRIPE_SECRET, timestamp=int(time.time()) - 600
        )
        stale = httpx.post(f"{server.url}/webhooks/stripe", content=body, headers={"Stripe-Signature": stale_header})
        assert stale.status_code == 401

        quiet_body = stripe_payment("evt_e2e_2", quiet, 1_200_000)
        assert post_stripe(server, quiet_body).json()["data"]["status"] == "applied"

        # Email allowed: the rendered tier-upgrade template arrives over SMTP.
        def upgrade_mail() -> list[Any]:
            return [m for m in smtp.to("hal@example.com") if m["Subject"] == "Loyalty Program Tier Upgrade"]

        [mail] = wait_for(upgrade_mail)  # type: ignore[misc]
        assert "you've been upgraded to our SILVER tier!" in text_of(mail)
        assert "Current Points: 1300" in text_of(mail)

        # Email off: every send of the quiet member is settled, and none of them is an email.
        wait_for(
            lambda: len(email_sends(server, quiet)) == 6 and all(s != "pending" for _, s in email_sends(server, quiet))
        )
        assert ("email", "skipped") in email_sends(server, quiet)
        assert smtp.to("ivy@example.com") == []

        # The subscriber failed twice, then got each upgrade exactly once more, all verifiably signed.
        def settled() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = api.get(
                f"/webhook-endpoints/{endpoint.json()['data']['id']}/deliveries"
            ).json()["data"]["deliveries"]
            return found if len(found) == 2 and all(d["status"] == "succeeded" for d in found) else None

        delivered = wait_for(settled)
        assert isinstance(delivered, list)
    successes = [r for r in receiver.requests if r.status == 200]
    assert len(successes) == 2
    assert sorted(Webhook(secret).verify(r.body, r.headers)["data"]["userId"] for r in successes) == sorted(
        [allowed, quiet]
    )
    assert [r.status for r in receiver.requests].count(500) == 1
    assert [r.status for r in receiver.requests].count(502) == 1
    assert mail["Message-ID"]
    assert len(upgrade_mail()) == 1
