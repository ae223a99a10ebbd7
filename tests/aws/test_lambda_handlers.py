"""The stream, schedule, batch-file and notification handlers with recorded events on moto:
what they ignore, how a failing subscriber ends (dead-lettered in the table, never blocking the
shard), how a redrive comes back through the stream, and the scheduled tier review."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from accrue.domain import commands
from accrue.entrypoints.lambdas import batch_files, notifications_worker, schedules, stream
from accrue.service_layer import dead_letters
from tests.aws.conftest import Aws, LambdaContext, pump_stream, recorded_event, settle_sqs, sqs_event, stream_event


def test_records_that_are_not_outbox_messages_or_new_sends_are_ignored(aws: Aws, context: LambdaContext) -> None:
    # A member change and the TTL removal of a delivered message: nothing to do for either.
    assert stream.handler(recorded_event("dynamodb_stream.json"), context) == {"batchItemFailures": []}


def test_a_subscriber_that_keeps_failing_is_dead_lettered_in_the_table_and_a_redrive_delivers_it(
    aws: Aws, context: LambdaContext
) -> None:
    calls: list[str] = []

    def broken(event: object, uow: object) -> None:
        calls.append("called")
        raise RuntimeError("the subscriber is broken")

    bus = aws.app.bus
    bus.event_handlers["TierUpgraded"]["notify_tier_upgraded"] = broken
    bus.handle(commands.CreateMember(email="ada@example.com", name="Ada", user_id="ada"))
    bus.handle(commands.RecordTransaction(member_id="ada", amount=Decimal("12000"), transaction_type="purchase"))
    position, responses = pump_stream(aws, context)
    # The shard is never held up: the failing message is retried at once, then dead-lettered.
    assert all(r == {"batchItemFailures": []} for r in responses)
    assert len(calls) == aws.settings.outbox_max_attempts
    [dead] = [d for d in dead_letters.list_all(aws.app, 10) if d.handler == "notify_tier_upgraded"]
    assert dead.attempts == aws.settings.outbox_max_attempts and "broken" in (dead.last_error or "")

    def fixed(event: object, uow: object) -> None:
        calls.append("fixed")

    bus.event_handlers["TierUpgraded"]["notify_tier_upgraded"] = fixed
    assert dead_letters.redrive(aws.app, dead.id) is True
    # The redrive is a MODIFY (dead -> pending) of the message: the stream delivers it again.
    pump_stream(aws, context, position)
    assert calls[-1] == "fixed"
    assert [d for d in dead_letters.list_all(aws.app, 10) if d.handler == "notify_tier_upgraded"] == []


def test_a_stream_record_delivered_twice_runs_its_subscriber_once(aws: Aws, context: LambdaContext) -> None:
    calls: list[str] = []
    aws.app.bus.event_handlers["TierUpgraded"]["notify_tier_upgraded"] = lambda event, uow: calls.append("once")
    aws.app.bus.handle(commands.CreateMember(email="ada@example.com", name="Ada", user_id="ada"))
    aws.app.bus.handle(
        commands.RecordTransaction(member_id="ada", amount=Decimal("12000"), transaction_type="purchase")
    )
    event, _ = stream_event(aws)
    stream.handler(event, context)
    stream.handler(event, context)  # Lambda retried the batch
    assert calls == ["once"]


def test_the_scheduled_tier_review_runs_from_both_event_shapes_and_records_its_run(
    aws: Aws, context: LambdaContext
) -> None:
    result = schedules.tier_review_handler(recorded_event("scheduler_tier_review.json"), context)
    assert result == {"changed": 0, "due": "2026-03-14T03:00:00+00:00"}
    rule = schedules.tier_review_handler(recorded_event("eventbridge_scheduled_event.json"), context)
    assert rule["due"] == "2026-03-14T03:00:00+00:00"
    last = aws.app.bus.query(lambda uow: uow.schedule_runs.last_fire("tier-review"))
    assert last == datetime(2026, 3, 14, 3, tzinfo=UTC)


def test_a_batch_file_with_a_bad_header_is_refused_once_and_other_objects_are_ignored(
    aws: Aws, context: LambdaContext
) -> None:
    s3 = aws.clients["s3"]
    s3.put_object(Bucket="accrue-uploads-test", Key="incoming/March payments(2026).csv", Body=b"id,total\n1,2\n")
    result = batch_files.handler(recorded_event("s3_object_created.json"), context)
    assert result["files"][0]["refused"].startswith("header")
    not_csv = recorded_event("s3_object_created.json")
    not_csv["Records"][0]["s3"]["object"]["key"] = "incoming/readme.txt"
    removed = recorded_event("s3_object_created.json")
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert batch_files.handler(not_csv, context) == {"files": []}
    assert batch_files.handler(removed, context) == {"files": []}


def test_a_notification_that_cannot_be_sent_now_gets_a_delayed_wake_up(
    aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = aws.app.services["notification_dispatcher"]
    sent: list[str] = []

    class Flaky:
        def send(self, message: object) -> None:
            sent.append("try")
            raise ConnectionError("SNS is unreachable")

    monkeypatch.setattr(dispatcher, "notifiers", {channel: Flaky() for channel in dispatcher.notifiers})
    aws.app.bus.handle(commands.CreateMember(email="ada@example.com", name="Ada", user_id="ada"))
    aws.app.bus.handle(
        commands.RecordTransaction(member_id="ada", amount=Decimal("12000"), transaction_type="purchase")
    )
    pump_stream(aws, context)
    url = aws.settings.notifications_queue_url
    assert url is not None
    event = sqs_event(aws, url)
    response = notifications_worker.handler(event, context)
    settle_sqs(aws, url, event, response)
    assert response == {"batchItemFailures": []} and sent
    # The retry is due later: a wake-up waits on the queue with a delay (not visible yet).
    attributes = aws.clients["sqs"].get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessages"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesDelayed"]) == 1
    assert int(attributes["ApproximateNumberOfMessages"]) == 0


def test_integration_events_are_published_to_the_event_bus(aws: Aws, context: LambdaContext) -> None:
    events, sqs = aws.clients["events"], aws.clients["sqs"]
    inbox = sqs.create_queue(QueueName="bus-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-accrue", EventBusName="accrue-bus-test", EventPattern=json.dumps({"source": ["accrue"]}))
    events.put_targets(Rule="all-accrue", EventBusName="accrue-bus-test", Targets=[{"Id": "inbox", "Arn": arn}])
    aws.app.bus.handle(commands.CreateMember(email="ada@example.com", name="Ada", user_id="ada"))
    pump_stream(aws, context)
    received = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages", [])
    bodies = [json.loads(m["Body"]) for m in received]
    assert [(b["detail-type"], b["detail"]["user_id"]) for b in bodies] == [("UserCreated", "ada")]
    assert bodies[0]["detail"]["eventId"].startswith("evt_")


def test_a_batch_uploaded_through_the_api_is_ingested_by_the_batch_file_function(
    aws: Aws, context: LambdaContext
) -> None:
    from accrue.entrypoints.lambdas import http
    from tests.aws.test_lambda_http import api_event

    content = "payment_id,amount,currency\npay-api-1,10.00,USD\npay-api-2,-1.00,USD\n"
    upload = api_event("POST", "/payments/batches", headers={"Content-Type": "text/csv"})
    upload["body"] = content
    response = http.handler(upload, context)
    assert response["statusCode"] == 202, response
    batch_id = json.loads(response["body"])["data"]["batchId"]
    # On AWS the upload is handed on through the uploads bucket: its ObjectCreated event ingests it.
    key = f"api/{batch_id}.csv"
    assert aws.clients["s3"].get_object(Bucket="accrue-uploads-test", Key=key)["Body"].read().decode() == content
    event = recorded_event("s3_object_created.json")
    event["Records"][0]["s3"]["object"]["key"] = key
    [summary] = batch_files.handler(event, context)["files"]
    assert (summary["batchId"], summary["created"], summary["status"]) == (batch_id, False, "completed")
    assert (summary["acceptedRows"], summary["rejectedRows"]) == (1, 1)
