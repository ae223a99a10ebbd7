"""Queue sends that belong to a unit of work, on DynamoDB + SQS.

SQS cannot join a DynamoDB transaction, so a send is written as an item of the unit of work's
transaction (a transactional outbox for queues) and the stream handler forwards it to SQS with
SendMessageBatch: the messages exist exactly when the change that produced them does, and a
crash between commit and send cannot lose them (the stream delivers the item again). A record
delivered again finds its send marked and is skipped; only a crash between the send and the mark
repeats one, which consumers absorb (they are idempotent, as the Queue port requires).

Many bodies travel in one item (up to ~300 KB), so a chunk of a batch file costs one item of the
transaction, not one per message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.dynamodb_uow import SHARED_GROUP, Session, Write
from accrue.adapters.aws.sqs_queue import send_bodies
from accrue.adapters.aws.table import PARTITION_KEY, TTL_ATTRIBUTE
from accrue.domain.ids import new_id
from accrue.ports import QueueWriter

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

# DynamoDB items hold 400 KB; leave room for the other attributes.
MAX_ITEM_BODY_BYTES = 300 * 1024
SENT_TTL = timedelta(days=3)
PENDING, SENT = "pending", "sent"


class UnknownQueue(LookupError):
    pass


class DynamoQueueWriter(QueueWriter):
    def __init__(self, session: Session, known_queues: Sequence[str] | None = None) -> None:
        self.session = session
        self.known_queues = frozenset(known_queues) if known_queues is not None else None

    def send_batch(self, queue: str, bodies: Sequence[Mapping[str, Any]], *, delay_seconds: float = 0.0) -> None:
        if self.known_queues is not None and queue not in self.known_queues:
            raise UnknownQueue(f"no queue named {queue!r} is configured")
        part: list[str] = []
        size = 0
        for body in bodies:
            text = codec.dumps(dict(body))
            if part and size + len(text) > MAX_ITEM_BODY_BYTES:
                self._stage(queue, part, delay_seconds)
                part, size = [], 0
            part.append(text)
            size += len(text) + 1
        if part:
            self._stage(queue, part, delay_seconds)

    def _stage(self, queue: str, bodies: list[str], delay_seconds: float) -> None:
        send_id = new_id("qs")
        item = {
            "entity": "queued_send",
            "send_id": send_id,
            "queue": queue,
            "bodies": json.dumps(bodies),
            "count": len(bodies),
            "delay_seconds": round(max(delay_seconds, 0)),
            "status": PENDING,
        }
        self.session.stage(Write("Put", keys.queued_send(send_id), item=item, group=SHARED_GROUP))


class QueuedSendForwarder:
    """Sends a stored queue item's bodies to SQS, then marks the item sent (kept a few days)."""

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table_name: str,
        sqs: SQSClient,
        queue_urls: Mapping[str, str],
    ) -> None:
        self.dynamodb = dynamodb
        self.table_name = table_name
        self.sqs = sqs
        self.queue_urls = dict(queue_urls)

    def forward(self, item: Mapping[str, Any], now: datetime | None = None) -> int:
        """Forward one queued-send item (a stream image); returns the number of messages sent."""
        if item.get("status") != PENDING:
            return 0
        # A stream record can be delivered again (a retried batch): a send already made is not redone.
        current = self.dynamodb.get_item(
            TableName=self.table_name,
            Key=codec.serialize(keys.queued_send(str(item["send_id"]))),
            ConsistentRead=True,
            ProjectionExpression="#status",
            ExpressionAttributeNames={"#status": "status"},
        ).get("Item")
        if current is not None and codec.deserialize(current).get("status") != PENDING:
            return 0
        queue = str(item["queue"])
        url = self.queue_urls.get(queue)
        if url is None:
            raise UnknownQueue(f"no URL configured for queue {queue!r}")
        bodies = [str(b) for b in json.loads(str(item["bodies"]))]
        send_bodies(self.sqs, url, bodies, float(item.get("delay_seconds", 0)))
        moment = now or datetime.now(UTC)
        try:
            self.dynamodb.update_item(
                TableName=self.table_name,
                Key=codec.serialize(keys.queued_send(str(item["send_id"]))),
                UpdateExpression="SET #status = :sent, sent_at = :now, #ttl = :expires",
                ConditionExpression=f"attribute_exists({PARTITION_KEY})",
                ExpressionAttributeNames={"#status": "status", "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues=codec.serialize(
                    {
                        ":sent": SENT,
                        ":now": keys.sortable_time(moment),
                        ":expires": int((moment + SENT_TTL).timestamp()),
                    }
                ),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
        return len(bodies)
