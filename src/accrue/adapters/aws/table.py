"""The single DynamoDB table, defined once.

The CDK app (``infra/``), the test fixtures (moto) and the adapters all read this module, so the
deployed table and the code that uses it cannot drift apart. Plain data only: importing it costs
nothing and needs neither boto3 nor aws-cdk-lib.

Item layout (keys are built by the functions in ``keys.py``):

=====================  ==============================  ============  ==========================  ===================
item                   PK                              SK            GSI1PK / GSI1SK             GSI2PK / GSI2SK
=====================  ==============================  ============  ==========================  ===================
member                 MEMBER#<userId>                 MEMBER        -                           MEMBERS#<shard> / id
email (unique guard)   EMAIL#<normalised email>        EMAIL         -                           -
referral code (guard)  REFCODE#<code>                  REFCODE       -                           -
ledger transfer        TRANSFER#<transferId>           TRANSFER      MEMBER#<id> / TRANSFER#<n>  -
order                  ORDER#<orderId>                 ORDER         MEMBER#<id> / ORDER#<t>     ORDERS / <t>
notification           NOTIFICATION#<dedupe key>       NOTIFICATION  MEMBER#<id> / NOTIFICATION  NOTIFICATIONS / id
outbox message         OUTBOX#<messageId>              OUTBOX        -                           OUTBOX#<status> / t
queued SQS send        QUEUE#<sendId>                  QUEUE         -                           -
idempotency key        IDEMPOTENCY#<scope>#<key>       IDEMPOTENCY   -                           -
bulk import            IMPORT#<sha256>                 IMPORT        -                           -
schedule run           SCHEDULE#<name>                 SCHEDULE      -                           -
=====================  ==============================  ============  ==========================  ===================

Feature modules add their own entity prefixes to ``keys.Prefix``; the two generic indexes serve
them too ("everything of one member" on GSI1, "everything of one kind or status" on GSI2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PARTITION_KEY = "PK"
SORT_KEY = "SK"
# Epoch seconds after which DynamoDB may delete the item (idempotency keys, delivered outbox
# messages). TTL deletions appear on the stream as REMOVE records, which the stream handler ignores.
TTL_ATTRIBUTE = "expires_at"
# The stream carries outbox messages to the stream handler; both images let it see a redrive
# (a dead message set back to pending) as a MODIFY from status dead to status pending.
STREAM_VIEW_TYPE = "NEW_AND_OLD_IMAGES"
BILLING_MODE = "PAY_PER_REQUEST"


@dataclass(frozen=True, slots=True)
class GlobalIndex:
    name: str
    partition_key: str
    sort_key: str


GSI1 = GlobalIndex("GSI1", "GSI1PK", "GSI1SK")
GSI2 = GlobalIndex("GSI2", "GSI2PK", "GSI2SK")
GLOBAL_INDEXES: tuple[GlobalIndex, ...] = (GSI1, GSI2)

# Every key attribute is a string.
KEY_ATTRIBUTES: tuple[str, ...] = (
    PARTITION_KEY,
    SORT_KEY,
    GSI1.partition_key,
    GSI1.sort_key,
    GSI2.partition_key,
    GSI2.sort_key,
)

# Lambda event-source filter for the stream handler: only outbox messages (events for
# subscribers) and queued sends (messages for SQS) are worth an invocation; members, transfers and
# orders change far more often and need no delivery.
OUTBOX_KEY_PREFIX = "OUTBOX#"
QUEUE_KEY_PREFIX = "QUEUE#"
STREAM_FILTER_PATTERN: dict[str, Any] = {
    "eventName": ["INSERT", "MODIFY"],
    "dynamodb": {"Keys": {PARTITION_KEY: {"S": [{"prefix": OUTBOX_KEY_PREFIX}, {"prefix": QUEUE_KEY_PREFIX}]}}},
}


def create_table_arguments(table_name: str) -> dict[str, Any]:
    """Keyword arguments for ``dynamodb.create_table`` (tests on moto, local tooling)."""
    return {
        "TableName": table_name,
        "BillingMode": BILLING_MODE,
        "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"} for name in KEY_ATTRIBUTES],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": index.name,
                "KeySchema": [
                    {"AttributeName": index.partition_key, "KeyType": "HASH"},
                    {"AttributeName": index.sort_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in GLOBAL_INDEXES
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": STREAM_VIEW_TYPE},
        "SSESpecification": {"Enabled": True, "SSEType": "KMS"},
    }


def time_to_live_arguments(table_name: str) -> dict[str, Any]:
    """Keyword arguments for ``dynamodb.update_time_to_live`` after the table exists."""
    return {
        "TableName": table_name,
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    }
