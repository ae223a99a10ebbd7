"""Idempotency keys in the DynamoDB table, with the same (Stripe) semantics as the SQLite store.

``begin`` is one conditional put in the common case; only a repeated key costs a second request.
Expired keys are dead by condition (``expires_at <= now``) at once, and DynamoDB's TTL removes
them from the table later.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.table import PARTITION_KEY, TTL_ATTRIBUTE
from accrue.ports import IdempotencyOutcome, IdempotencyStore, InProgress, Mismatch, Replay, Started

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

IN_PROGRESS, COMPLETED = "in_progress", "completed"


def _seconds(value: float) -> Decimal:
    return Decimal(str(round(value, 6)))


class DynamoIdempotencyStore(IdempotencyStore):
    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        ttl_seconds: float = 86_400,
        lock_seconds: float = 60,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.ttl_seconds = ttl_seconds
        # A request that crashed mid-way leaves its key locked; after this long a retry may take it.
        self.lock_seconds = lock_seconds

    def begin(self, scope: str, key: str, request_hash: str, now: datetime) -> IdempotencyOutcome:
        ts = now.timestamp()
        item_key = keys.idempotency(scope, key)
        item = {
            **item_key,
            "entity": "idempotency",
            "request_hash": request_hash,
            "state": IN_PROGRESS,
            "locked_until": _seconds(ts + self.lock_seconds),
            "created_at": _seconds(ts),
            TTL_ATTRIBUTE: int(ts + self.ttl_seconds),
        }
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=codec.serialize(item),
                ConditionExpression=f"attribute_not_exists({PARTITION_KEY}) OR #ttl <= :now",
                ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues=codec.serialize({":now": int(ts)}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return Started()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            raw: Any = exc.response.get("Item")
        existing = codec.deserialize(raw) if isinstance(raw, dict) else self._get(item_key)
        if existing is None:  # removed between our put and our read: try once more
            return self.begin(scope, key, request_hash, now)
        if existing["request_hash"] != request_hash:
            return Mismatch()
        if existing["state"] == COMPLETED:
            return Replay(status_code=int(existing["status_code"]), body=bytes(existing.get("body", b"")))
        if Decimal(existing["locked_until"]) > _seconds(ts):
            return InProgress()
        # The first attempt's lock ran out (it crashed): this request takes the key over, once.
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=codec.serialize(item_key),
                UpdateExpression="SET locked_until = :lock",
                ConditionExpression="#state = :in_progress AND locked_until = :seen",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=codec.serialize(
                    {
                        ":lock": _seconds(ts + self.lock_seconds),
                        ":in_progress": IN_PROGRESS,
                        ":seen": existing["locked_until"],
                    }
                ),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return InProgress()
            raise
        return Started()

    def _get(self, item_key: keys.Key) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.table_name, Key=codec.serialize(item_key), ConsistentRead=True)
        raw = response.get("Item")
        return codec.deserialize(raw) if raw else None

    def complete(self, scope: str, key: str, status_code: int, body: bytes, now: datetime) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key=codec.serialize(keys.idempotency(scope, key)),
            UpdateExpression="SET #state = :completed, status_code = :status, body = :body",
            ConditionExpression=f"attribute_exists({PARTITION_KEY})",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=codec.serialize({":completed": COMPLETED, ":status": status_code, ":body": body}),
        )

    def release(self, scope: str, key: str) -> None:
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key=codec.serialize(keys.idempotency(scope, key)),
                ConditionExpression="#state = :in_progress",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=codec.serialize({":in_progress": IN_PROGRESS}),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
