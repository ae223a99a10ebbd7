"""The notifications worker: channel sends (SNS) and outbound webhook deliveries, on SQS.

A commit that stores a notification or queues a webhook delivery also writes one wake-up message
for the notifications queue (forwarded by the stream). Each message runs the same dispatcher and
delivery worker as ``accrue serve``: plan, claim, send, record. What is waiting for a later retry
gets a delayed wake-up (SQS delays are at most 15 minutes; a longer wait takes several hops).

Records are processed with Powertools' BatchProcessor: a failed record is reported in the partial
batch response, SQS delivers it again, and after ``maxReceiveCount`` it lands in the DLQ.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from accrue.entrypoints.lambdas.observability import count, instrumented

# Every record failed is still a partial response (all of them), not an error of the invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
MAX_DELAY_SECONDS = 900
QUEUE = "notifications"


def next_due(app: Any) -> datetime | None:
    """The earliest pending send or delivery still waiting for its time."""
    from accrue.adapters.aws import keys
    from accrue.adapters.aws.table import GSI2

    earliest: str | None = None
    with app.bus.uow_factory(readonly=True) as uow:
        for kind in (keys.Prefix.SEND, keys.Prefix.DELIVERY):
            for items, _ in uow.session.query(
                IndexName=GSI2.name,
                KeyConditionExpression="#pk = :pk",
                ExpressionAttributeNames={"#pk": GSI2.partition_key},
                ExpressionAttributeValues={":pk": keys.join(kind, "due")},
                Limit=1,
            ):
                if items:
                    due = str(items[0][GSI2.sort_key]).split(keys.SEPARATOR)[0]
                    earliest = due if earliest is None else min(earliest, due)
                break
    return datetime.fromisoformat(earliest.replace("Z", "+00:00")) if earliest else None


def handle_record(record: SQSRecord) -> None:
    from accrue.entrypoints.lambdas import runtime

    app = runtime.application()
    body = json.loads(record.body or "{}")
    if not isinstance(body, dict):
        raise ValueError(f"message {record.message_id}: the body is not a JSON object")
    sent = app.services["notification_dispatcher"].run_once()
    delivered = app.services["webhook_delivery"].run_once()
    count("NotificationsHandled", sent)
    count("WebhookDeliveriesHandled", delivered)


def schedule_next_wake(app: Any) -> None:
    """One delayed wake-up per invocation for whatever waits for a later retry."""
    due = next_due(app)
    if due is None:
        return
    # At least a second: work due now but left over (a full batch) is picked up by the next hop.
    wait = (due - app.clock()).total_seconds()
    delay = min(max(wait, 1.0), MAX_DELAY_SECONDS)
    app.services["aws"].queue(QUEUE).send({"wake": QUEUE, "due": due.isoformat()}, delay_seconds=delay)


@instrumented
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from accrue.entrypoints.lambdas import runtime

    response = dict(
        process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
    )
    schedule_next_wake(runtime.application())
    return response
