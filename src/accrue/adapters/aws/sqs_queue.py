"""SQS behind the Queue port (the SQLite queue is the local stand-in with the same semantics).

The dead-letter queue is the one named by the queue's redrive policy (``maxReceiveCount``): SQS
moves a message there by itself after that many receives. ``dead_letters`` peeks at it (receives
with a zero visibility timeout) and ``redrive`` moves one message back, as the console does.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from accrue.adapters.aws import codec
from accrue.ports import DeadLetterMessage, Queue, QueueCounts, QueueMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SQS_BATCH = 10
# SQS limits: 256 KiB for one message and for one batch request; delays up to 15 minutes.
MAX_BATCH_BYTES = 256 * 1024
MAX_DELAY_SECONDS = 900
MAX_VISIBILITY_SECONDS = 43_200
STALE_HANDLE_CODES = frozenset({"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"})


class SendFailed(RuntimeError):
    """SQS refused some messages of a batch even after retries."""


def batches(bodies: Sequence[str]) -> list[list[tuple[int, str]]]:
    """Indexed bodies cut into SendMessageBatch requests (10 entries, 256 KiB)."""
    out: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    size = 0
    for index, body in enumerate(bodies):
        length = len(body.encode())
        if length > MAX_BATCH_BYTES:
            raise ValueError(f"a queue message is {length} bytes; SQS takes at most {MAX_BATCH_BYTES}")
        if current and (len(current) == SQS_BATCH or size + length > MAX_BATCH_BYTES):
            out.append(current)
            current, size = [], 0
        current.append((index, body))
        size += length
    if current:
        out.append(current)
    return out


def send_bodies(client: SQSClient, queue_url: str, bodies: Sequence[str], delay_seconds: float = 0.0) -> list[str]:
    """SendMessageBatch, ten at a time; entries SQS refuses for a transient reason are sent again."""
    delay = min(max(round(delay_seconds), 0), MAX_DELAY_SECONDS)
    ids: list[str] = [""] * len(bodies)
    for batch in batches(bodies):
        pending = batch
        for attempt in range(5):
            response = client.send_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "MessageBody": body, "DelaySeconds": delay} for i, body in pending],
            )
            for entry in response.get("Successful", []):
                ids[int(entry["Id"])] = entry["MessageId"]
            failed = {int(f["Id"]): f for f in response.get("Failed", [])}
            permanent = [f for f in failed.values() if f.get("SenderFault")]
            if permanent:
                raise SendFailed(f"SQS refused {len(permanent)} messages: {permanent[0].get('Message')}")
            pending = [(i, body) for i, body in pending if i in failed]
            if not pending:
                break
            time.sleep(0.05 * 2**attempt)
        if pending:
            raise SendFailed(f"SQS did not take {len(pending)} messages after retries")
    return ids


class SqsQueue(Queue):
    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        name: str | None = None,
        max_receive_count: int = 3,
        visibility_timeout_seconds: float | None = None,
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.name = name or queue_url.rstrip("/").rsplit("/", 1)[-1]
        self.max_receive_count = max_receive_count
        self.visibility_timeout_seconds = visibility_timeout_seconds

    @functools.cached_property
    def dead_letter_queue_url(self) -> str | None:
        attributes = self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"])
        policy = attributes.get("Attributes", {}).get("RedrivePolicy")
        if not policy:
            return None
        parsed = json.loads(policy)
        self.max_receive_count = int(parsed.get("maxReceiveCount", self.max_receive_count))
        arn = str(parsed["deadLetterTargetArn"])
        account, name = arn.split(":")[4], arn.split(":")[5]
        return self.client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]

    def send_batch(self, bodies: Sequence[Mapping[str, Any]], *, delay_seconds: float = 0.0) -> list[str]:
        return send_bodies(self.client, self.queue_url, [codec.dumps(dict(b)) for b in bodies], delay_seconds)

    def receive(
        self,
        max_messages: int = 10,
        *,
        visibility_timeout_seconds: float | None = None,
        wait_seconds: float = 0.0,
    ) -> list[QueueMessage]:
        return [
            message_from_sqs(m)
            for m in self._receive(self.queue_url, max_messages, visibility_timeout_seconds, wait_seconds)
        ]

    def _receive(
        self, url: str, max_messages: int, visibility: float | None, wait_seconds: float
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "QueueUrl": url,
            "MaxNumberOfMessages": min(max(max_messages, 1), SQS_BATCH),
            "WaitTimeSeconds": min(int(wait_seconds), 20),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
        }
        timeout = self.visibility_timeout_seconds if visibility is None else visibility
        if timeout is not None:
            kwargs["VisibilityTimeout"] = min(int(timeout), MAX_VISIBILITY_SECONDS)
        response = self.client.receive_message(**kwargs)
        return [dict(m) for m in response.get("Messages", [])]

    def delete(self, receipt_handle: str) -> None:
        try:
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt_handle)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in STALE_HANDLE_CODES:
                raise

    def delete_batch(self, receipt_handles: Sequence[str]) -> None:
        for start in range(0, len(receipt_handles), SQS_BATCH):
            part = receipt_handles[start : start + SQS_BATCH]
            self.client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(part)],
            )

    def change_visibility(self, receipt_handle: str, timeout_seconds: float, *, error: str | None = None) -> None:
        # SQS keeps no per-message error text; the worker logs it (and the DLQ keeps the body).
        try:
            self.client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=min(max(int(timeout_seconds), 0), MAX_VISIBILITY_SECONDS),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in STALE_HANDLE_CODES:
                raise

    def dead_letters(self, limit: int = 100) -> list[DeadLetterMessage]:
        url = self.dead_letter_queue_url
        if url is None:
            return []
        found: dict[str, DeadLetterMessage] = {}
        # Peeking: a zero visibility timeout leaves every message where it is.
        while len(found) < limit:
            received = self._receive(url, min(SQS_BATCH, limit - len(found)), 0, 0)
            fresh = [m for m in received if m["MessageId"] not in found]
            if not fresh:
                break
            for m in fresh:
                message = message_from_sqs(m)
                found[message.message_id] = DeadLetterMessage(
                    message_id=message.message_id,
                    body=message.body,
                    receive_count=message.receive_count,
                    last_error=None,
                    sent_at=message.sent_at,
                )
        return list(found.values())[:limit]

    def redrive(self, message_id: str) -> bool:
        url = self.dead_letter_queue_url
        if url is None:
            return False
        seen: set[str] = set()
        while True:
            received = self._receive(url, SQS_BATCH, 30, 0)
            fresh = False
            for m in received:
                if m["MessageId"] == message_id:
                    send_bodies(self.client, self.queue_url, [m["Body"]])
                    self.client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                    return True
                fresh = fresh or m["MessageId"] not in seen
                seen.add(m["MessageId"])
                # Not the one: visible again at once for the next look (and for other readers).
                self.client.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
            if not fresh:
                return False

    def counts(self) -> QueueCounts:
        names: Any = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        main = self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)["Attributes"]
        dead = 0
        if self.dead_letter_queue_url is not None:
            dlq = self.client.get_queue_attributes(QueueUrl=self.dead_letter_queue_url, AttributeNames=names[:1])
            dead = int(dlq["Attributes"].get("ApproximateNumberOfMessages", 0))
        return QueueCounts(
            visible=int(main.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(main.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(main.get("ApproximateNumberOfMessagesDelayed", 0)),
            dead=dead,
        )


def message_from_sqs(message: Mapping[str, Any]) -> QueueMessage:
    """An SQS message (from ReceiveMessage, or a Lambda SQS event record) as a QueueMessage."""
    attributes = message.get("Attributes") or message.get("attributes") or {}
    sent_ms = int(attributes.get("SentTimestamp", 0))
    return QueueMessage(
        message_id=str(message.get("MessageId") or message.get("messageId")),
        body=json.loads(message.get("Body") or message.get("body") or "{}"),
        receipt_handle=str(message.get("ReceiptHandle") or message.get("receiptHandle")),
        receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
        sent_at=datetime.fromtimestamp(sent_ms / 1000, UTC),
    )
