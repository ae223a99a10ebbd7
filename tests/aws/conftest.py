"""AWS on moto for the Lambda handler tests: the table, queues with their DLQs, buckets, the
notifications topic with an SQS subscription (so a test can see what was published), the event
bus, and an application bootstrapped on them and installed for the handlers."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from accrue.bootstrap import Application, bootstrap
from accrue.config import Settings
from accrue.entrypoints.lambdas import runtime
from tests.conftest import SECRET
from tests.moto_support import REGION, TABLE_NAME, client, create_table, fake_aws_environment

EVENTS = Path(__file__).resolve().parent.parent / "events"
ACCOUNT = "123456789012"


def recorded_event(name: str) -> dict[str, Any]:
    """A recorded Lambda event from tests/events (a fresh copy each time)."""
    return copy.deepcopy(json.loads((EVENTS / name).read_text()))


@dataclass
class Aws:
    clients: dict[str, Any]
    settings: Settings
    app: Application
    stream_arn: str
    topic_inbox_url: str
    payments_dlq_url: str
    names: dict[str, str] = field(default_factory=dict)

    def published(self) -> list[dict[str, Any]]:
        """Everything the notifications topic delivered to its SQS subscription so far."""
        sqs = self.clients["sqs"]
        found: list[dict[str, Any]] = []
        while True:
            response = sqs.receive_message(QueueUrl=self.topic_inbox_url, MaxNumberOfMessages=10)
            messages = response.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                envelope = json.loads(message["Body"])
                found.append({"attributes": envelope.get("MessageAttributes", {}), **json.loads(envelope["Message"])})
                sqs.delete_message(QueueUrl=self.topic_inbox_url, ReceiptHandle=message["ReceiptHandle"])


def make_queue(sqs: Any, name: str, *, visibility: int = 30) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility),
            "MessageRetentionPeriod": "1209600",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
        },
    )["QueueUrl"]
    return url, dlq


@pytest.fixture
def aws() -> Iterator[Aws]:
    with fake_aws_environment(), mock_aws():
        clients = {name: client(name) for name in ("dynamodb", "sqs", "s3", "sns", "events", "secretsmanager")}
        clients["dynamodbstreams"] = client("dynamodbstreams")
        stream_arn = create_table(clients["dynamodb"])
        sqs = clients["sqs"]
        payments_url, payments_dlq = make_queue(sqs, "accrue-payments-test")
        notifications_url, _ = make_queue(sqs, "accrue-notifications-test")
        for bucket in ("accrue-reports-test", "accrue-uploads-test", "accrue-archive-test"):
            clients["s3"].create_bucket(Bucket=bucket)
        topic = clients["sns"].create_topic(Name="accrue-notifications-test")["TopicArn"]
        inbox = sqs.create_queue(QueueName="topic-inbox")["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        clients["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
        clients["events"].create_event_bus(Name="accrue-bus-test")
        settings = Settings(
            env="test",
            backend="aws",
            table_name=TABLE_NAME,
            payments_queue_url=payments_url,
            notifications_queue_url=notifications_url,
            reports_bucket="accrue-reports-test",
            uploads_bucket="accrue-uploads-test",
            archive_bucket="accrue-archive-test",
            notifications_topic_arn=topic,
            event_bus_name="accrue-bus-test",
            jwt_secret=SECRET,
            rate_limit_per_second=0,
            workers_enabled=False,
            scheduler_enabled=False,
            outbox_base_delay_seconds=0,
            payment_retry_interval_seconds=0.01,
        )
        app = bootstrap(settings, **{k: v for k, v in clients.items() if k != "dynamodbstreams"})
        runtime.use(app)
        try:
            yield Aws(clients, settings, app, stream_arn, inbox, payments_dlq)
        finally:
            runtime.reset()
            app.close()


class LambdaContext:
    """What the Lambda runtime passes as ``context`` (the fields Powertools reads)."""

    function_name = "accrue-test-function"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:accrue-test-function"
    memory_limit_in_mb = 512
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name = "/aws/lambda/accrue-test-function"
    log_stream_name = "2026/03/14/[$LATEST]abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()


def stream_event(aws: Aws, after_sequence: str | None = None) -> tuple[dict[str, Any], str | None]:
    """Read the table's stream from moto with the DynamoDB Streams API and shape the records as the
    Lambda event source mapping delivers them; returns (event, last sequence number)."""
    streams = aws.clients["dynamodbstreams"]
    shard = streams.describe_stream(StreamArn=aws.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    kind = (
        {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after_sequence}
        if after_sequence
        else {"ShardIteratorType": "TRIM_HORIZON"}
    )
    iterator = streams.get_shard_iterator(StreamArn=aws.stream_arn, ShardId=shard, **kind)["ShardIterator"]
    records: list[dict[str, Any]] = []
    while iterator:
        response = streams.get_records(ShardIterator=iterator, Limit=1000)
        batch = response.get("Records", [])
        if not batch:
            break
        records.extend(batch)
        iterator = response.get("NextShardIterator")
    last = records[-1]["dynamodb"]["SequenceNumber"] if records else after_sequence
    event_records = []
    for record in records:
        shaped = json.loads(json.dumps(record, default=str))
        created = record["dynamodb"].get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            shaped["dynamodb"]["ApproximateCreationDateTime"] = int(
                created.replace(tzinfo=created.tzinfo or UTC).timestamp()
            )
        shaped["eventSourceARN"] = aws.stream_arn
        event_records.append(shaped)
    return {"Records": event_records}, last


def pump_stream(aws: Aws, context: Any, after: str | None = None, *, rounds: int = 10) -> tuple[str | None, list[Any]]:
    """Feed the stream to the stream handler until it is quiet (handlers write more records:
    delivered messages, queued sends); returns the last sequence number and every response."""
    from accrue.entrypoints.lambdas import stream

    responses: list[Any] = []
    for _ in range(rounds):
        event, last = stream_event(aws, after)
        if not event["Records"]:
            return after, responses
        responses.append(stream.handler(event, context))
        after = last
    raise AssertionError("the stream did not settle")


def sqs_event(aws: Aws, queue_url: str, *, max_messages: int = 10, visibility: int = 30) -> dict[str, Any]:
    """Receive from an SQS queue on moto and shape the messages as Lambda's SQS event source does."""
    sqs = aws.clients["sqs"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max_messages,
        VisibilityTimeout=visibility,
        MessageSystemAttributeNames=["All"],
    )
    records = []
    for message in response.get("Messages", []):
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def settle_sqs(aws: Aws, queue_url: str, event: dict[str, Any], response: dict[str, Any]) -> None:
    """What the event source mapping does after an invocation: delete the records that succeeded;
    failed ones become visible again (at once here, instead of after the visibility timeout)."""
    sqs = aws.clients["sqs"]
    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
    for record in event["Records"]:
        if record["messageId"] in failed:
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )
        else:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
