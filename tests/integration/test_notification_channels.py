"""Channel delivery of notifications: email over real SMTP to an aiosmtpd server on loopback, SMS and
push to the local outbox; member preferences honoured; never sent twice for one event."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accrue.adapters.local.outbox_channels import LocalChannelOutbox, LocalOutboxNotifier
from accrue.adapters.local.templates import JinjaRenderer
from accrue.bootstrap import Application, bootstrap
from accrue.config import Settings
from accrue.domain.notification_channels import Channel, ChannelMessage, SendStatus
from accrue.entrypoints.api.app import create_app
from accrue.service_layer.notify import EMAIL_LAYOUT_TEMPLATE, NotificationDispatcher
from tests.conftest import auth, make_settings
from tests.contract.test_core_repositories import notification
from tests.notification_support import SmtpSink, html_of, text_of


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpSink) -> Settings:
    return make_settings(
        tmp_path,
        workers_enabled=False,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_from="Loyalty Program <loyalty@accrue.test>",
        smtp_timeout_seconds=5,
        notification_retry_base_seconds=0,
        notification_max_attempts=3,
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


def dispatcher(app: Application) -> NotificationDispatcher:
    found: NotificationDispatcher = app.services["notification_dispatcher"]
    return found


def outbox(app: Application) -> LocalChannelOutbox:
    found: LocalChannelOutbox = app.services["channel_outbox"]
    return found


def enrol(client: TestClient, email: str = "fay@example.com", phone: str | None = "+44 20 7946 0000") -> str:
    body: dict[str, Any] = {"email": email, "name": "Fay"}
    if phone:
        body["phone"] = phone
    created = client.post("/users", json=body, headers=auth())
    assert created.status_code == 201, created.text
    return str(created.json()["data"]["userId"])


def upgrade_to_silver(client: TestClient, app: Application, user_id: str) -> None:
    # 12 000.00 earns 1 200 qualifying points: BRONZE -> SILVER, and milestones 100 and 500.
    order = client.post("/orders", json={"userId": user_id, "amount": "12000.00"}, headers=auth())
    assert order.status_code == 201, order.text
    app.worker.drain()  # the core handlers store the notifications
    dispatcher(app).drain()


def sends(app: Application, kind: str, user_id: str) -> dict[str, tuple[SendStatus, str | None]]:
    with app.bus.uow_factory(readonly=True) as uow:
        page = uow.notifications.list(user_id, 50, None)
        [notification] = [n for n in page.items if n.type == kind]
        records = uow.notification_sends.for_notification(notification.notification_id)
    return {r.channel.value: (r.status, r.reason) for r in records}


def test_a_tier_upgrade_with_email_allowed_arrives_over_smtp_with_the_rendered_template(
    client: TestClient, app: Application, smtp: SmtpSink
) -> None:
    user_id = enrol(client)
    upgrade_to_silver(client, app, user_id)

    mails = smtp.to("fay@example.com")
    [upgrade] = [m for m in mails if m["Subject"] == "Loyalty Program Tier Upgrade"]
    text = text_of(upgrade)
    assert "Dear Valued Member," in text
    assert "you've been upgraded to our SILVER tier!" in text
    assert "Previous Tier: BRONZE" in text
    assert "Current Points: 1300" in text
    assert "• 5% bonus points on all purchases" in text
    assert "• Priority customer support" in text
    html = html_of(upgrade)
    assert "<h1" in html and "SILVER" in html
    assert upgrade["From"] == "Loyalty Program <loyalty@accrue.test>"
    assert upgrade["Message-ID"].endswith("@accrue.test>")
    assert [m["Subject"] for m in mails].count("Loyalty Program Milestone Achievement") == 1
    assert sends(app, "tier_upgrade", user_id) == {
        "email": (SendStatus.SENT, None),
        "sms": (SendStatus.SENT, None),
        "push": (SendStatus.SENT, None),
    }
    # SMS and push went to the local outbox, in their own words.
    [sms] = [m for m in outbox(app).messages(Channel.SMS, user_id) if "SILVER" in m.body]
    assert sms.recipient == "+44 20 7946 0000"
    assert sms.body == "Loyalty: Upgraded to SILVER! Enjoy exclusive benefits."
    [push] = [m for m in outbox(app).messages(Channel.PUSH, user_id) if "SILVER" in m.body]
    assert push.body == "Congratulations! You've been upgraded to SILVER tier!"
    # The stored notification is unchanged for GET /notifications.
    listed = client.get("/notifications", params={"userId": user_id}, headers=auth()).json()["data"]
    assert sorted(n["type"] for n in listed["notifications"]) == ["milestone", "tier_upgrade"]


def test_with_email_turned_off_the_tier_upgrade_email_is_not_sent(
    client: TestClient, app: Application, smtp: SmtpSink
) -> None:
    user_id = enrol(client)
    turned = client.put(
        f"/users/{user_id}/preferences", json={"email": False, "sms": True, "push": True}, headers=auth()
    )
    assert turned.status_code == 200, turned.text
    upgrade_to_silver(client, app, user_id)

    assert smtp.to("fay@example.com") == []
    assert sends(app, "tier_upgrade", user_id)["email"] == (SendStatus.SKIPPED, "email turned off by the member")
    assert sends(app, "tier_upgrade", user_id)["sms"] == (SendStatus.SENT, None)
    assert any("SILVER" in m.body for m in outbox(app).messages(Channel.SMS, user_id))


def test_a_member_without_a_phone_gets_no_sms_and_that_is_recorded(client: TestClient, app: Application) -> None:
    user_id = enrol(client, phone=None)
    upgrade_to_silver(client, app, user_id)
    assert sends(app, "tier_upgrade", user_id)["sms"] == (SendStatus.SKIPPED, "no sms address")
    assert outbox(app).messages(Channel.SMS, user_id) == []


def test_a_notification_queued_again_or_dispatched_again_is_not_sent_twice(
    client: TestClient, app: Application, smtp: SmtpSink
) -> None:
    user_id = enrol(client)
    upgrade_to_silver(client, app, user_id)
    before = len(smtp.messages)
    assert app.database is not None
    conn = app.database.connection()
    # Re-queue every notification, as a replayed trigger or a restored backup would.
    conn.execute("INSERT INTO notification_queue SELECT notification_id, created_at FROM notifications")
    dispatcher(app).drain()
    dispatcher(app).drain()
    assert len(smtp.messages) == before
    assert conn.execute("SELECT COUNT(*) FROM notification_sends").fetchone()[0] == 6  # 2 notifications x 3
    assert len(outbox(app).messages(Channel.SMS, user_id)) == 2


def test_a_send_claimed_before_a_crash_is_never_sent_again(
    client: TestClient, app: Application, smtp: SmtpSink
) -> None:
    user_id = enrol(client)
    client.post("/orders", json={"userId": user_id, "amount": "12000.00"}, headers=auth())
    app.worker.drain()
    dispatcher(app).plan_queued()
    # Claim every due send as a dispatcher would, then "crash" before sending any of them.
    with app.bus.uow_factory() as uow:
        claimed = uow.notification_sends.claim_due(app.clock(), 100)
        uow.commit()
    assert len(claimed) == 6
    dispatcher(app).drain()
    assert smtp.messages == []
    assert {status for status, _ in sends(app, "tier_upgrade", user_id).values()} == {SendStatus.SENDING}


def test_an_smtp_server_that_is_down_is_retried_and_the_email_then_arrives_once(
    client: TestClient, app: Application, smtp: SmtpSink
) -> None:
    user_id = enrol(client)
    smtp.stop()
    client.post("/orders", json={"userId": user_id, "amount": "12000.00"}, headers=auth())
    app.worker.drain()
    dispatcher(app).run_once()  # one attempt: refused
    status, reason = sends(app, "tier_upgrade", user_id)["email"]
    assert status is SendStatus.PENDING
    assert reason is not None and "ConnectionRefusedError" in reason

    smtp.start()
    dispatcher(app).drain()
    assert len([m for m in smtp.to("fay@example.com") if m["Subject"] == "Loyalty Program Tier Upgrade"]) == 1
    assert sends(app, "tier_upgrade", user_id)["email"] == (SendStatus.SENT, None)


def test_an_email_that_keeps_failing_is_given_up_after_the_last_attempt(
    client: TestClient, app: Application, smtp: SmtpSink
) -> None:
    user_id = enrol(client)
    smtp.stop()
    upgrade_to_silver(client, app, user_id)
    dispatcher(app).drain()
    dispatcher(app).drain()
    status, reason = sends(app, "tier_upgrade", user_id)["email"]
    assert status is SendStatus.FAILED
    assert reason is not None and "ConnectionRefusedError" in reason


def test_opting_out_after_planning_but_before_sending_is_honoured(
    client: TestClient, app: Application, smtp: SmtpSink
) -> None:
    user_id = enrol(client)
    client.post("/orders", json={"userId": user_id, "amount": "12000.00"}, headers=auth())
    app.worker.drain()
    dispatcher(app).plan_queued()
    client.put(f"/users/{user_id}/preferences", json={"email": False, "sms": False, "push": False}, headers=auth())
    dispatcher(app).drain()
    assert smtp.messages == []
    assert outbox(app).messages(user_id=user_id) == []
    assert {s for s, _ in sends(app, "tier_upgrade", user_id).values()} == {SendStatus.SKIPPED}


def test_without_an_smtp_host_email_goes_to_the_local_outbox(tmp_path: Path) -> None:
    application = bootstrap(make_settings(tmp_path, workers_enabled=False))
    try:
        with TestClient(create_app(application)) as client:
            user_id = enrol(client)
            upgrade_to_silver(client, application, user_id)
        emails = outbox(application).messages(Channel.EMAIL, user_id)
        assert {m.subject for m in emails} == {"Loyalty Program Tier Upgrade", "Loyalty Program Milestone Achievement"}
        assert all(m.recipient == "fay@example.com" for m in emails)
        assert outbox(application).forget_member(user_id) == 6
        assert outbox(application).messages(user_id=user_id) == []
    finally:
        application.close()


# -- every channel local: planned and sent in one pass ----------------------------------------------


class RefusingOutbox(LocalOutboxNotifier):
    """A local outbox that refuses its first ``refusals`` messages, as a full disk would."""

    def __init__(self, outbox: LocalChannelOutbox, channel: Channel, refusals: int) -> None:
        super().__init__(outbox, channel)
        self.refusals = refusals

    def send(self, message: ChannelMessage) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise OSError("outbox unavailable")
        super().send(message)


class NoEmailLayout(JinjaRenderer):
    def render(self, template: str, context: Mapping[str, Any]) -> str:
        if template == EMAIL_LAYOUT_TEMPLATE:
            raise KeyError("the email layout is missing")
        return super().render(template, context)


def records(app: Application, kind: str, user_id: str) -> dict[str, tuple[SendStatus, int, str | None]]:
    with app.bus.uow_factory(readonly=True) as uow:
        [notification] = [n for n in uow.notifications.list(user_id, 50, None).items if n.type == kind]
        found = uow.notification_sends.for_notification(notification.notification_id)
    return {r.channel.value: (r.status, r.attempts, r.reason) for r in found}


@pytest.fixture
def local_app(tmp_path: Path) -> Iterator[Application]:
    application = bootstrap(make_settings(tmp_path, workers_enabled=False, notification_retry_base_seconds=0))
    yield application
    application.close()


def silver_order(app: Application) -> str:
    with TestClient(create_app(app)) as client:
        user_id = enrol(client)
        order = client.post("/orders", json={"userId": user_id, "amount": "12000.00"}, headers=auth())
        assert order.status_code == 201, order.text
    app.worker.drain()
    return user_id


def test_with_every_channel_local_the_handler_that_stores_a_notification_sends_it_at_once_and_once(
    local_app: Application,
) -> None:
    assert dispatcher(local_app).send_on_store
    user_id = silver_order(local_app)  # the outbox handlers ran: stored, planned and sent
    assert local_app.database is not None
    conn = local_app.database.connection()
    assert conn.execute("SELECT COUNT(*) FROM notification_queue").fetchone()[0] == 0  # nothing left for a round
    assert dispatcher(local_app).run_once() == 0
    sent = {channel: (SendStatus.SENT, 1, None) for channel in ("email", "sms", "push")}
    assert records(local_app, "tier_upgrade", user_id) == sent
    assert records(local_app, "milestone", user_id) == sent
    for channel in Channel:
        assert len(outbox(local_app).messages(channel, user_id)) == 2

    # Queued again by hand (as an operator would), or the same event handled again: nothing twice.
    conn.execute("INSERT INTO notification_queue SELECT notification_id, created_at FROM notifications")
    dispatcher(local_app).drain()
    assert conn.execute("SELECT COUNT(*) FROM notification_sends").fetchone()[0] == 6
    assert conn.execute("SELECT COUNT(*) FROM local_channel_outbox").fetchone()[0] == 6


def test_with_every_channel_local_one_round_sends_each_queued_message_as_it_is_planned_and_only_once(
    local_app: Application,
) -> None:
    assert dispatcher(local_app).sends_in_database
    dispatcher(local_app).send_at_once = False  # queued by the handlers, as with a channel on the network
    user_id = silver_order(local_app)
    assert dispatcher(local_app).run_once() == 2  # two notifications planned, and sent in the same round
    sent = {channel: (SendStatus.SENT, 1, None) for channel in ("email", "sms", "push")}
    assert records(local_app, "tier_upgrade", user_id) == sent
    assert records(local_app, "milestone", user_id) == sent
    for channel in Channel:
        assert len(outbox(local_app).messages(channel, user_id)) == 2
    [upgrade] = [m for m in outbox(local_app).messages(Channel.EMAIL, user_id) if "Tier Upgrade" in m.subject]
    assert "SILVER" in upgrade.body

    assert local_app.database is not None
    conn = local_app.database.connection()
    conn.execute("INSERT INTO notification_queue SELECT notification_id, created_at FROM notifications")
    dispatcher(local_app).drain()
    assert conn.execute("SELECT COUNT(*) FROM notification_sends").fetchone()[0] == 6
    assert conn.execute("SELECT COUNT(*) FROM local_channel_outbox").fetchone()[0] == 6


def test_a_local_channel_that_refuses_a_message_is_retried_and_then_sends_it_once(local_app: Application) -> None:
    dispatcher(local_app).notifiers[Channel.SMS] = RefusingOutbox(outbox(local_app), Channel.SMS, refusals=1)
    user_id = silver_order(local_app)
    dispatcher(local_app).plan_and_send()
    planned = {**records(local_app, "tier_upgrade", user_id), **records(local_app, "milestone", user_id)}
    assert planned["email"] == (SendStatus.SENT, 1, None)
    refused = [records(local_app, kind, user_id)["sms"] for kind in ("tier_upgrade", "milestone")]
    assert sorted(status for status, _, _ in refused) == [SendStatus.PENDING, SendStatus.SENT]
    assert (SendStatus.PENDING, 1, "OSError: outbox unavailable") in refused

    dispatcher(local_app).drain()  # the retry is due at once (base delay 0)
    for kind in ("tier_upgrade", "milestone"):
        assert records(local_app, kind, user_id)["sms"][0] is SendStatus.SENT
    assert len(outbox(local_app).messages(Channel.SMS, user_id)) == 2


def test_a_notification_that_cannot_be_rendered_sends_nothing_at_once_and_never_sends_that_message(
    tmp_path: Path,
) -> None:
    application = bootstrap(make_settings(tmp_path, workers_enabled=False), renderer=NoEmailLayout())
    try:
        user_id = silver_order(application)
        dispatcher(application).drain()
        # Planned only, then sent by the claiming path: the email, which cannot be rendered, is
        # left 'sending' for an operator; the other channels went out once.
        for kind in ("tier_upgrade", "milestone"):
            found = records(application, kind, user_id)
            assert found["email"][:2] == (SendStatus.SENDING, 1)
            assert found["sms"] == found["push"] == (SendStatus.SENT, 1, None)
        assert outbox(application).messages(Channel.EMAIL, user_id) == []
        assert len(outbox(application).messages(Channel.SMS, user_id)) == 2
    finally:
        application.close()


def test_reading_the_queue_costs_the_same_however_many_notifications_were_sent_before(
    local_app: Application,
) -> None:
    def store(first: int, count: int) -> None:
        with local_app.bus.uow_factory() as uow:
            for n in range(first, first + count):
                uow.notifications.add(notification(n), f"evt_{n}:tier_upgrade")
            uow.commit()

    def steps_to_read_three_queued() -> int:
        """SQLite virtual-machine steps spent by queued(3) (progress handler called every step)."""
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        with local_app.bus.uow_factory() as uow:
            conn = uow.notification_sends.conn  # type: ignore[attr-defined]
            conn.set_progress_handler(count, 1)
            try:
                assert len(uow.notification_sends.queued(3)) == 3
            finally:
                conn.set_progress_handler(None, 0)
        return steps

    def send_everything_queued() -> None:
        dispatcher(local_app).drain()

    store(0, 20)
    send_everything_queued()
    store(20, 3)
    few = steps_to_read_three_queued()
    send_everything_queued()
    store(23, 2000)
    send_everything_queued()
    store(2023, 3)
    many = steps_to_read_three_queued()
    assert many < 2 * few, (few, many)
