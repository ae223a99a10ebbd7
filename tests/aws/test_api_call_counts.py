"""AWS API calls per business operation, counted with botocore event hooks on moto (docs/COST.md).

Each operation is driven through the Lambda handlers as AWS would run it; the request part (what
the caller waits for) and the asynchronous part (the stream and the workers) are counted apart.
Goals: at most one DynamoDB write request per accrual, and at least 10x fewer requests per CSV row
than the seed's one PutItem and one SendMessage per row.

``ACCRUE_CALL_COUNTS_JSON=counts.json pytest tests/aws/test_api_call_counts.py`` also writes the
measurements to a file (the numbers in docs/COST.md).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from accrue.adapters.aws.dynamodb_uow import DynamoUnitOfWork
from accrue.domain.payouts import Month
from accrue.domain.referrals import Referral, RewardStatus
from accrue.entrypoints.lambdas import batch_files, payments_worker, schedules
from tests.aws.call_counts import CallLog, Usage, describe
from tests.aws.conftest import Aws, LambdaContext, pump_stream, recorded_event, settle_sqs, sqs_event
from tests.aws.test_lambda_http import api_event, call

SEED_REQUESTS_PER_CSV_ROW = 2  # seed 004: one PutItem and one SendMessage for every row
CSV_ROWS = 1000
PAYOUT_REWARDS = 1000


def measure_all(aws: Aws, context: LambdaContext) -> dict[str, dict[str, Any]]:
    clients = {k: v for k, v in aws.clients.items() if k in ("dynamodb", "sqs", "s3", "sns", "events")}
    log = CallLog(clients, aws.settings.table_name or "")
    results: dict[str, dict[str, Any]] = {}
    position: str | None = None

    def followups() -> Usage:
        nonlocal position
        with log.measure() as usage:
            position, _ = pump_stream(aws, context, position)
        return usage

    position, _ = pump_stream(aws, context)
    with log.measure() as signup:
        status, body = call(
            api_event("POST", "/users", {"email": "ada@example.com", "name": "Ada", "userId": "ada"}), context
        )
    assert status == 201, body
    results["signup"] = describe(signup)
    results["signup (async)"] = describe(followups())

    with log.measure() as keyed:
        status, _ = call(
            api_event(
                "POST",
                "/users",
                {"email": "bob@example.com", "name": "Bob", "userId": "bob"},
                headers={"Idempotency-Key": "signup-bob"},
            ),
            context,
        )
    assert status == 201
    results["signup with Idempotency-Key"] = describe(keyed)
    followups()

    with log.measure() as accrual:
        status, body = call(
            api_event(
                "POST",
                "/transactions",
                {"memberId": "ada", "transactionAmount": "25.00", "transactionType": "purchase"},
            ),
            context,
        )
    assert status == 200, body
    results["accrual"] = describe(accrual)
    results["accrual (async)"] = describe(followups())

    with log.measure() as order:
        status, body = call(
            api_event("POST", "/orders", {"userId": "ada", "amount": "40.00", "currency": "USD"}), context
        )
    assert status == 201, body
    results["order"] = describe(order)
    results["order (async)"] = describe(followups())

    rows = ["payment_id,amount,currency"] + [f"pay-{n:05d},{10 + n % 90}.{n % 100:02d},USD" for n in range(CSV_ROWS)]
    rows = [r.replace(".51,", ".50,").replace(".52,", ".50,") for r in rows]  # only successes: steady state
    content = ("\n".join(rows) + "\n").encode()
    event = recorded_event("s3_object_created.json")
    aws.clients["s3"].put_object(Bucket="accrue-uploads-test", Key="incoming/March payments(2026).csv", Body=content)
    with log.measure() as ingest:
        [summary] = batch_files.handler(event, context)["files"]
    assert summary["acceptedRows"] == CSV_ROWS
    results[f"csv {CSV_ROWS} rows: ingestion"] = describe(ingest)
    with log.measure() as forward:
        position, _ = pump_stream(aws, context, position)
    results[f"csv {CSV_ROWS} rows: queue forwarding (stream)"] = describe(forward)
    # Processing is linear in the payments: measured on one message naming ten of them (the batch's
    # own messages name a hundred each; they are dropped here to keep moto's work small).
    url = aws.settings.payments_queue_url
    assert url is not None
    aws.clients["sqs"].purge_queue(QueueUrl=url)
    aws.clients["sqs"].send_message(
        QueueUrl=url, MessageBody=json.dumps({"paymentIds": [f"pay-{n:05d}" for n in range(10)]})
    )
    message = sqs_event(aws, url, max_messages=1)
    with log.measure() as processing:
        response = payments_worker.handler(message, context)
        settle_sqs(aws, url, message, response)
        position, _ = pump_stream(aws, context, position)
    assert response == {"batchItemFailures": []}
    results["payment processing (10 payments, one message)"] = describe(processing)

    month = Month.of(datetime.now(UTC))
    seed_rewards(aws, month)
    scheduled = recorded_event("scheduler_monthly_payout.json")
    scheduled["scheduledTime"] = month.next().start.replace(hour=2).strftime("%Y-%m-%dT%H:%M:%SZ")
    with log.measure() as payout:
        run = schedules.payout_handler(scheduled, context)
    assert run["status"] == "completed" and run["referrers"] == 10
    results[f"payout of {PAYOUT_REWARDS} rewards"] = describe(payout)
    with log.measure() as repeat:
        assert schedules.payout_handler(scheduled, context) == run
    results["payout run again (idempotent)"] = describe(repeat)
    return results


def seed_rewards(aws: Aws, month: Month) -> None:
    """Ten referrers with a hundred pending rewards each, written directly (not what is measured)."""
    factory = aws.app.bus.uow_factory
    now = month.start.replace(day=2)
    with factory() as uow:
        assert isinstance(uow, DynamoUnitOfWork)
        for n in range(PAYOUT_REWARDS):
            uow.referrals.add(
                Referral(
                    f"rfl_{n:05d}",
                    f"referrer-{n % 10}",
                    f"friend-{n:05d}",
                    "CODE2345",
                    n // 10 + 1,
                    1000,
                    RewardStatus.PENDING,
                    now,
                )
            )
        uow.commit()


@pytest.mark.slow  # about a minute and a half: moto copies the table on every transaction
def test_operations_stay_within_their_request_budgets(aws: Aws, context: LambdaContext) -> None:
    results = measure_all(aws, context)
    if target := os.environ.get("ACCRUE_CALL_COUNTS_JSON"):
        Path(target).write_text(json.dumps(results, indent=2) + "\n")
    accrual = results["accrual"]
    assert accrual["dynamodb_writes"] == 1, accrual
    # The member, whether any webhook endpoint listens to points (no outbox message if none), the write.
    assert accrual["calls"] == {"dynamodb:GetItem": 1, "dynamodb:Query": 1, "dynamodb:TransactWriteItems": 1}
    assert results["signup"]["dynamodb_writes"] == 1
    assert results["order"]["dynamodb_writes"] == 1
    # The idempotency record costs two more writes (begin, complete) when the header is sent.
    assert results["signup with Idempotency-Key"]["dynamodb_writes"] == 3
    ingestion = results[f"csv {CSV_ROWS} rows: ingestion"]
    forwarding = results[f"csv {CSV_ROWS} rows: queue forwarding (stream)"]
    per_row = (ingestion["requests"] + forwarding["requests"]) / CSV_ROWS
    assert per_row * 10 <= SEED_REQUESTS_PER_CSV_ROW, (per_row, ingestion, forwarding)
    payout = results[f"payout of {PAYOUT_REWARDS} rewards"]
    assert payout["requests"] < PAYOUT_REWARDS / 5, payout  # far from one call per reward
    assert results["payout run again (idempotent)"]["dynamodb_writes"] == 1  # the schedule record only
