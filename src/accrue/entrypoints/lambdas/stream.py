"""The DynamoDB stream processor: the table's outbox leaves through here.

- An outbox message (one per event and subscriber, written in the transaction of the change) is
  delivered to its subscriber through ``OutboxWorker.deliver``: the subscriber's writes and the
  message's "done" mark commit together, so a redelivered record does nothing twice. A failure is
  counted on the message and retried at once, a few times, until the subscriber succeeds or the
  message is dead (listed by ``/admin/dead-letters``, redriven from there): a poison message
  never holds up its shard. A redrive sets the message back to pending, which arrives here as a
  MODIFY and is delivered again.
- A queued send (SQS messages written with a unit of work) is forwarded to its queue.

Records this function cannot process at all (the table unreachable) fail the batch item; after the
event source mapping's retries Lambda sends them to its on-failure destination (the stream DLQ).
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from accrue.adapters.aws.table import OUTBOX_KEY_PREFIX, PARTITION_KEY, QUEUE_KEY_PREFIX
from accrue.entrypoints.lambdas.observability import count, instrumented, logger

# Every record failed is still a partial response (all of them), not an error of the invocation.
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
RETRY_PAUSE_SECONDS = 0.05


class DeliveryFailed(Exception):
    """A subscriber failed with attempts left: Lambda retries the record."""


def _application() -> Any:
    from accrue.entrypoints.lambdas import runtime

    return runtime.application()


def should_deliver(event_name: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    if new.get("status") != "pending":
        return False
    # New messages, and dead ones set back to pending by a redrive; not our own retry bookkeeping.
    return event_name == "INSERT" or (event_name == "MODIFY" and old.get("status") == "dead")


def deliver(worker: Any, message_id: int) -> str:
    """Deliver now, retrying a failed subscriber at once (short pauses) until it succeeds or its
    attempts run out and it is dead-lettered in the table: the outcome does not depend on how many
    times the event source mapping would retry the record."""
    outcome: str = worker.deliver(message_id)
    for attempt in range(worker.max_attempts):
        if outcome != "retry":
            break
        time.sleep(min(RETRY_PAUSE_SECONDS * 2**attempt, 1.0))
        outcome = worker.deliver(message_id)
    return outcome


def handle_record(record: DynamoDBRecord) -> None:
    stream = record.dynamodb
    if stream is None or record.event_name is None:
        return
    key = str(stream.keys.get(PARTITION_KEY, ""))
    event_name = record.event_name.name
    application = _application()
    if key.startswith(OUTBOX_KEY_PREFIX):
        new, old = stream.new_image, stream.old_image
        if not should_deliver(event_name, old, new):
            return
        message_id = int(new["message_id"])
        outcome = deliver(application.worker, message_id)
        count(f"Outbox{outcome.capitalize()}")
        if outcome == "retry":
            raise DeliveryFailed(f"outbox message {message_id} ({new.get('handler')}) failed; retrying")
        if outcome == "dead":
            logger.error("outbox message dead-lettered", extra={"messageId": message_id, "handler": new.get("handler")})
    elif key.startswith(QUEUE_KEY_PREFIX) and event_name == "INSERT":
        sent = application.services["aws"].forwarder().forward(stream.new_image)
        count("QueueMessagesForwarded", sent)


@instrumented
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
    )
