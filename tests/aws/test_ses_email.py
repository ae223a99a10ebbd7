"""The e-mail channel through Amazon SES (API v2) on moto, driven by the notifications worker.

With ``ACCRUE_SES_FROM_ADDRESS`` set, a notification's e-mail is sent by SES from that verified
address while SMS and push are still published to the notifications topic; a send SES refuses is
retried and finally marked failed; without the setting every channel stays on the topic.

moto 5.2 keeps one body per SES v2 message (the HTML part when there is one), so the text part,
the header and the tags are read from the request the client made (a botocore hook on the same
client), and the subject, sender, recipient and HTML from moto's SES backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from moto.ses.models import ses_backends

from accrue.adapters.aws.ses_notifier import DEDUPE_HEADER, SesEmailNotifier, dedupe_tag_value
from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.domain.notification_channels import Channel, ChannelMessage, SendRecord, SendStatus
from accrue.domain.notifications import Notification
from accrue.entrypoints.lambdas import notifications_worker, runtime
from tests.aws.conftest import ACCOUNT, Aws, LambdaContext, pump_stream, settle_sqs, sqs_event
from tests.moto_support import REGION, client

SENDER = "loyalty@accrue.example"
PHONE = "+15555550123"


def ses_app(aws: Aws, **settings: Any) -> Iterator[tuple[Application, list[dict[str, Any]]]]:
    """An application on the same moto resources with SES settings, installed for the handlers;
    yields it with the SendEmail requests its SES client made."""
    sesv2 = client("sesv2")
    requests: list[dict[str, Any]] = []
    sesv2.meta.events.register(
        "provide-client-params.sesv2.SendEmail", lambda params, **_: requests.append(dict(params))
    )
    clients = {k: v for k, v in aws.clients.items() if k != "dynamodbstreams"}
    app = bootstrap(aws.settings.model_copy(update=settings), sesv2=sesv2, **clients)
    runtime.use(app)
    try:
        yield app, requests
    finally:
        runtime.use(aws.app)
        app.close()


@pytest.fixture
def with_ses(aws: Aws) -> Iterator[tuple[Application, list[dict[str, Any]]]]:
    client("sesv2").create_email_identity(EmailIdentity=SENDER)  # verified at once on moto
    yield from ses_app(aws, ses_from_address=SENDER)


@pytest.fixture
def unverified_sender(aws: Aws) -> Iterator[tuple[Application, list[dict[str, Any]]]]:
    # SES refuses a From address that is not a verified identity (MessageRejected).
    yield from ses_app(aws, ses_from_address=SENDER, notification_max_attempts=3, notification_retry_base_seconds=0)


def upgrade_ada(app: Application, aws: Aws, context: LambdaContext) -> None:
    """Ada (e-mail and phone) buys enough for a tier upgrade; the stream runs the notification handler."""
    app.bus.handle(commands.CreateMember(email="ada@example.com", name="Ada", phone=PHONE, user_id="ada"))
    app.bus.handle(commands.RecordTransaction(member_id="ada", amount=Decimal("12000"), transaction_type="purchase"))
    _, responses = pump_stream(aws, context)
    assert all(r == {"batchItemFailures": []} for r in responses)


def run_worker(aws: Aws, context: LambdaContext, event: dict[str, Any] | None = None) -> dict[str, Any]:
    url = aws.settings.notifications_queue_url
    assert url is not None
    event = event or sqs_event(aws, url)
    assert event["Records"], "the notifications worker was not woken"
    response = notifications_worker.handler(event, context)
    assert response == {"batchItemFailures": []}
    settle_sqs(aws, url, event, response)
    return event


def tier_notification(app: Application) -> Notification:
    notes = app.bus.query(lambda uow: uow.notifications.list("ada", 50, None).items)
    [tier] = [n for n in notes if n.type == "tier_upgrade"]
    return tier


def tier_sends(app: Application) -> list[SendRecord]:
    tier = tier_notification(app)
    return list(app.bus.query(lambda uow: uow.notification_sends.for_notification(tier.notification_id)))


def sent_by_ses() -> list[Any]:
    return list(ses_backends[ACCOUNT][REGION].sent_messages)


def test_the_email_goes_through_ses_while_sms_and_push_stay_on_the_topic(
    aws: Aws, with_ses: tuple[Application, list[dict[str, Any]]], context: LambdaContext
) -> None:
    app, requests = with_ses
    upgrade_ada(app, aws, context)
    run_worker(aws, context)

    # The purchase also reached milestones: one e-mail each; this is the tier upgrade's.
    [request] = [r for r in requests if r["Content"]["Simple"]["Headers"][0]["Value"].endswith(":tier_upgrade:email")]
    simple = request["Content"]["Simple"]
    assert len(sent_by_ses()) == len(requests)
    [message] = [m for m in sent_by_ses() if m.subject == simple["Subject"]["Data"]]
    assert message.source == SENDER == request["FromEmailAddress"]
    assert message.destinations == {"ToAddresses": ["ada@example.com"]}
    tier = tier_notification(app)
    assert message.subject == tier.subject
    # The rendered text and the e-mail layout around it (HTML), both UTF-8.
    text = simple["Body"]["Text"]["Data"]
    assert text == (tier.message.get("email") or tier.message["default"]) and "SILVER" in text and "•" in text
    assert message.body == simple["Body"]["Html"]["Data"] and message.body.lstrip().lower().startswith("<!doctype")
    assert f"{tier.subject}</" in message.body and "SILVER" in message.body
    assert {part["Charset"] for part in (simple["Subject"], *simple["Body"].values())} == {"UTF-8"}
    # The de-duplication key: verbatim in a header, as a digest in a tag.
    [header] = simple["Headers"]
    assert header["Name"] == DEDUPE_HEADER and header["Value"].endswith(":tier_upgrade:email")
    assert {"Name": "dedupe-key", "Value": dedupe_tag_value(header["Value"])} in request["EmailTags"]
    assert "ConfigurationSetName" not in request

    published = [p for p in aws.published() if ":tier_upgrade:" in p["dedupeKey"]]
    assert sorted(p["channel"] for p in published) == ["push", "sms"]
    assert next(p for p in published if p["channel"] == "sms")["recipient"] == PHONE
    assert {s.channel: s.status for s in tier_sends(app)} == {channel: SendStatus.SENT for channel in Channel}


def test_an_email_ses_refuses_is_retried_then_marked_failed(
    aws: Aws, unverified_sender: tuple[Application, list[dict[str, Any]]], context: LambdaContext
) -> None:
    app, requests = unverified_sender
    upgrade_ada(app, aws, context)
    url = aws.settings.notifications_queue_url
    assert url is not None
    event = sqs_event(aws, url)
    event["Records"] = event["Records"][:1]  # one invocation, one dispatcher round: one attempt
    run_worker(aws, context, event)
    [email] = [s for s in tier_sends(app) if s.channel is Channel.EMAIL]
    assert (email.status, email.attempts) == (SendStatus.PENDING, 1)
    assert email.reason is not None and "MessageRejected" in email.reason
    for _ in range(2):  # the delayed wake-ups: one attempt per invocation (retries are due at once here)
        run_worker(aws, context, event)
    sends = {s.channel: s for s in tier_sends(app)}
    assert (sends[Channel.EMAIL].status, sends[Channel.EMAIL].attempts) == (SendStatus.FAILED, 3)
    assert "MessageRejected" in (sends[Channel.EMAIL].reason or "")
    assert len([r for r in requests if ":tier_upgrade:" in r["Content"]["Simple"]["Headers"][0]["Value"]]) == 3
    assert sent_by_ses() == []
    # The refusal of one channel does not hold back the others.
    assert sends[Channel.SMS].status is SendStatus.SENT and sends[Channel.PUSH].status is SendStatus.SENT


def test_without_a_sender_every_channel_stays_on_the_topic(aws: Aws, context: LambdaContext) -> None:
    dispatcher = aws.app.services["notification_dispatcher"]
    assert "sesv2" not in aws.app.services["aws"]._clients
    upgrade_ada(aws.app, aws, context)
    run_worker(aws, context)
    published = [p for p in aws.published() if ":tier_upgrade:" in p["dedupeKey"]]
    assert sorted(p["channel"] for p in published) == ["email", "push", "sms"]
    assert sent_by_ses() == []
    assert not any(isinstance(n, SesEmailNotifier) for n in dispatcher.notifiers.values())


def test_the_ses_channel_refuses_other_channels_and_names_its_configuration_set() -> None:
    notifier = SesEmailNotifier(client("sesv2"), SENDER, configuration_set="accrue-mail")
    email = ChannelMessage(
        channel=Channel.EMAIL,
        dedupe_key="evt_1:tier_upgrade:email",
        user_id="ada",
        recipient="ada@example.com",
        subject="Willkommen bei Silber, Grüße",
        text="Grüße",
    )
    request = notifier.request(email)
    assert request["ConfigurationSetName"] == "accrue-mail"
    assert request["Content"]["Simple"]["Subject"]["Data"] == "Willkommen bei Silber, Grüße"
    assert "Html" not in request["Content"]["Simple"]["Body"]  # no HTML part when there is none
    for channel in (Channel.SMS, Channel.PUSH):
        sms = ChannelMessage(channel=channel, dedupe_key="k", user_id="ada", recipient=PHONE, subject="s", text="t")
        with pytest.raises(ValueError, match=f"cannot send a {channel.value} message"):
            notifier.send(sms)
