"""The whole flow through the Lambda handlers on moto, as AWS would drive it: API Gateway events
through Mangum, the table's stream read with the DynamoDB Streams API, SQS queues and SNS."""

from __future__ import annotations

import json
import time

from accrue.entrypoints.lambdas import notifications_worker
from tests.aws.conftest import Aws, LambdaContext, pump_stream, settle_sqs, sqs_event
from tests.aws.test_lambda_http import api_event, call


def test_a_purchase_that_upgrades_a_tier_reaches_sns_through_the_stream(aws: Aws, context: LambdaContext) -> None:
    status, created = call(
        api_event("POST", "/users", {"email": "ada@example.com", "name": "Ada", "userId": "ada"}), context
    )
    assert status == 201, created
    status, order = call(
        api_event("POST", "/orders", {"userId": "ada", "amount": "12000.00", "currency": "USD"}), context
    )
    assert status == 201, order
    # The tier upgrade is an outbox item of the order's transaction; the stream delivers it to the
    # notification handler, whose commit queues a wake-up for the notifications worker.
    _, responses = pump_stream(aws, context)
    assert all(r == {"batchItemFailures": []} for r in responses)
    status, notes = call(api_event("GET", "/notifications", query={"userId": "ada"}), context)
    assert status == 200
    kinds = {n["type"] for n in notes["data"]["notifications"]}
    assert "tier_upgrade" in kinds
    queue = aws.settings.notifications_queue_url
    assert queue is not None
    event = sqs_event(aws, queue)
    assert event["Records"], "the notifications worker was not woken"
    response = notifications_worker.handler(event, context)
    assert response == {"batchItemFailures": []}
    settle_sqs(aws, queue, event, response)
    published = aws.published()
    tier = [p for p in published if "SILVER" in p["text"] or "Silver" in p["text"]]
    assert tier, published
    channels = {p["channel"] for p in tier}
    assert channels == {"email", "push"}  # no phone number: SMS is skipped
    email = next(p for p in tier if p["channel"] == "email")
    assert email["recipient"] == "ada@example.com" and email["userId"] == "ada"
    assert email["attributes"]["channel"]["Value"] == "email"
    assert json.loads(json.dumps(email))["dedupeKey"].endswith(":email")


def test_the_scheduled_payout_writes_its_report_to_s3_and_a_second_run_pays_nobody_twice(
    aws: Aws, context: LambdaContext
) -> None:
    from datetime import UTC, datetime

    from accrue.domain.payouts import Month
    from accrue.entrypoints.lambdas import schedules
    from tests.aws.conftest import recorded_event

    status, referrer = call(
        api_event("POST", "/users", {"email": "ref@example.com", "name": "Ref", "userId": "ref"}), context
    )
    assert status == 201
    code = referrer["data"]["referralCode"]
    for n in range(6):
        status, body = call(api_event("POST", "/signup", {"userId": f"friend-{n}", "referralCode": code}), context)
        assert status == 201, body
    assert body["data"]["referralCount"] == 6
    # Fired on the 1st of next month: pays this month (the one before the scheduled instant).
    this_month = Month.of(datetime.now(UTC))
    fired = this_month.next().start.replace(hour=2)
    event = recorded_event("scheduler_monthly_payout.json")
    event["scheduledTime"] = fired.strftime("%Y-%m-%dT%H:%M:%SZ")
    first = schedules.payout_handler(event, context)
    assert first["month"] == str(this_month) and first["status"] == "completed"
    assert first["referrers"] == 1 and first["totalCents"] == 4 * 1000 + 2 * 1500
    report = (
        aws.clients["s3"]
        .get_object(Bucket="accrue-reports-test", Key=first["reportLocation"].split("accrue-reports-test/", 1)[1])[
            "Body"
        ]
        .read()
        .decode()
    )
    assert report.splitlines() == ["Referrer ID,Total Amount,Referral Count,Payment Status", "ref,70.00,6,Processed"]
    second = schedules.payout_handler(event, context)
    assert second == first
    status, view = call(api_event("GET", "/referrals/ref"), context)
    assert status == 200
    assert view["data"]["paidRewards"] == "70.00" and view["data"]["pendingRewards"] == "0.00"


def drain_payments(aws: Aws, context: LambdaContext, *, rounds: int = 40) -> int:
    """Run the payments worker over the payments queue until it is empty, as the event source
    mapping would (follow-ups with a delay come back after it). Returns the invocations made."""
    from accrue.entrypoints.lambdas import payments_worker

    url = aws.settings.payments_queue_url
    assert url is not None
    invocations = 0
    empty = 0
    for _ in range(rounds):
        event = sqs_event(aws, url)
        if not event["Records"]:
            empty += 1
            if empty >= 3:
                return invocations
            time.sleep(0.1)
            continue
        empty = 0
        response = payments_worker.handler(event, context)
        invocations += 1
        settle_sqs(aws, url, event, response)
    raise AssertionError("the payments queue did not drain")


def test_a_csv_dropped_in_s3_is_ingested_queued_and_processed_and_a_poisoned_message_ends_in_the_dlq(
    aws: Aws, context: LambdaContext
) -> None:
    from accrue.entrypoints.lambdas import batch_files, payments_worker
    from tests.aws.conftest import recorded_event

    lines = ["payment_id,amount,currency"]
    lines += [f"pay-{n:03d},{10 + n}.00,USD" for n in range(20)]
    lines += ["pay-declined,12.51,USD", "pay-flaky,12.52,USD", "pay-bad,-4.00,USD", "pay-000,1.00,USD"]
    content = ("\n".join(lines) + "\n").encode()
    raw_key = "incoming/March payments(2026).csv"
    aws.clients["s3"].put_object(Bucket="accrue-uploads-test", Key=raw_key, Body=content)
    event = recorded_event("s3_object_created.json")  # its key is URL-encoded, as S3 sends it
    event["Records"][0]["s3"]["object"]["size"] = len(content)
    result = batch_files.handler(event, context)
    [summary] = result["files"]
    assert summary["key"] == raw_key
    assert (summary["totalRows"], summary["acceptedRows"], summary["rejectedRows"], summary["duplicateRows"]) == (
        24,
        22,
        1,
        1,
    )
    # Uploading the same file again finds the batch and creates nothing.
    again = batch_files.handler(event, context)
    assert again["files"][0]["created"] is False and again["files"][0]["batchId"] == summary["batchId"]
    # The queue messages were written with the chunk; the stream forwards them to SQS.
    position, _ = pump_stream(aws, context)
    drain_payments(aws, context)
    pump_stream(aws, context, position)
    statuses = {}
    for n in [*range(20)]:
        status, body = call(api_event("GET", f"/payments/pay-{n:03d}"), context)
        assert status == 200
        statuses[body["data"]["paymentId"]] = body["data"]["status"]
    assert set(statuses.values()) == {"processed"}
    status, declined = call(api_event("GET", "/payments/pay-declined"), context)
    assert (declined["data"]["status"], declined["data"]["failureReason"]) == ("failed", "card_declined")
    status, flaky = call(api_event("GET", "/payments/pay-flaky"), context)
    assert (flaky["data"]["status"], flaky["data"]["attempts"]) == ("processed", 3)
    # A message no payment can be made of fails on every receive and ends in the DLQ.
    url = aws.settings.payments_queue_url
    assert url is not None
    aws.clients["sqs"].send_message(QueueUrl=url, MessageBody=json.dumps({"bogus": True}))
    for _ in range(3):
        event = sqs_event(aws, url)
        assert len(event["Records"]) == 1, [r["body"] for r in event["Records"]]
        response = payments_worker.handler(event, context)
        assert response["batchItemFailures"] == [{"itemIdentifier": event["Records"][0]["messageId"]}]
        settle_sqs(aws, url, event, response)
    assert sqs_event(aws, url)["Records"] == []  # the fourth receive moved it to the DLQ
    dead = aws.clients["sqs"].receive_message(QueueUrl=aws.payments_dlq_url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"]) for m in dead] == [{"bogus": True}]
