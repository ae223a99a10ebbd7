"""The payment queue's consumer: each message names payments to move through the workflow.

The same message handler as the local queue worker runs every record; follow-ups (a payment that
must wait for its retry interval) go back to the queue with a delay. A record that raises is
reported in the partial batch response: SQS delivers it again and moves it to the dead-letter
queue after ``maxReceiveCount`` receives. A ConcurrencyConflict (another writer moved the same
payment, or the audit chain, first) is not the message's fault: it is retried here at once, a few
times, before it may count as a failed receive.
"""

from __future__ import annotations

import random
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from accrue.entrypoints.lambdas.observability import count, instrumented

# Every record failed is still a partial response (all of them), not an error of the invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
CONFLICT_RETRIES = 5


def handle_record(record: SQSRecord) -> None:
    from accrue.adapters.aws.sqs_queue import message_from_sqs
    from accrue.domain.errors import ConcurrencyConflict
    from accrue.entrypoints.lambdas import runtime

    app = runtime.application()
    components = app.services["payments"]
    message = message_from_sqs(record.raw_event)
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            follow_ups = components.worker.handler(message)
            break
        except ConcurrencyConflict:
            if attempt == CONFLICT_RETRIES:
                raise
            time.sleep(random.uniform(0.02, 0.1) * 2**attempt)
    for follow_up in follow_ups:
        components.queue.send(follow_up.body, delay_seconds=follow_up.delay_seconds)
    count("PaymentMessagesHandled")


@instrumented
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
    )
