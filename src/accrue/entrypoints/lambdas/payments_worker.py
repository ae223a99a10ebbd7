"""The payment queue's consumer: each message names payments to move through the workflow.

With ``ACCRUE_PAYMENT_STATE_MACHINE_ARN`` set, each payment is handed to the Step Functions state
machine rendered from the same definition (one execution per payment, named after it, so a repeated
message starts nothing twice); the workflow-steps function then runs the tasks. Without it, the
same message handler as the local queue worker runs every record; follow-ups (a payment that
must wait for its retry interval) go back to the queue with a delay. A record that raises is
reported in the partial batch response: SQS delivers it again and moves it to the dead-letter
queue after ``maxReceiveCount`` receives. A ConcurrencyConflict (another writer moved the same
payment, or the audit chain, first) is not the message's fault: it is retried here at once, a few
times, before it may count as a failed receive.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from accrue.entrypoints.lambdas.observability import count, instrumented

# Every record failed is still a partial response (all of them), not an error of the invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
CONFLICT_RETRIES = 5


def execution_name(payment_id: str) -> str:
    """Step Functions names: 1-80 of [A-Za-z0-9_-]; a payment id may hold other characters."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,80}", payment_id):
        return payment_id
    return "p-" + hashlib.sha256(payment_id.encode()).hexdigest()[:40]


def hand_over(app: Any, state_machine_arn: str, payment_ids: list[str]) -> None:
    """One execution per payment, named after it: a repeated message starts nothing new (Step
    Functions refuses a second execution of a name, and returns the running one for the same input)."""
    client = app.services["aws"].client("stepfunctions")
    for payment_id in payment_ids:
        try:
            client.start_execution(
                stateMachineArn=state_machine_arn,
                name=execution_name(payment_id),
                input=json.dumps({"paymentId": payment_id}),
            )
            count("PaymentExecutionsStarted")
        except client.exceptions.ExecutionAlreadyExists:
            count("PaymentExecutionsAlreadyStarted")


def handle_record(record: SQSRecord) -> None:
    from accrue.adapters.aws.sqs_queue import message_from_sqs
    from accrue.domain.errors import ConcurrencyConflict
    from accrue.entrypoints.lambdas import runtime
    from accrue.service_layer.payments import payment_ids_of

    app = runtime.application()
    components = app.services["payments"]
    message = message_from_sqs(record.raw_event)
    if app.settings.payment_state_machine_arn:
        # The deployment runs the workflow on Step Functions (the same definition and tasks).
        hand_over(app, app.settings.payment_state_machine_arn, payment_ids_of(message.body))
        return
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
