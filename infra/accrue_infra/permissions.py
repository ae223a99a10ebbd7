"""The IAM statements functions are given, spelled out (no action wildcards, no ``Resource: *``).

CDK's ``grant*`` helpers add ``kms:GenerateDataKey*``/``kms:ReEncrypt*`` and index wildcards; the
statements here list exactly the actions the adapters call, on exactly the resources they touch.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs

from accrue_infra.data import DataTable

TABLE_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem")
# TransactWriteItems is authorised through the Put/Update/Delete/ConditionCheck actions it contains.
# TransactWriteItems is authorised per item by these; no code path uses BatchWriteItem (it cannot
# refuse a duplicate), so it is not granted.
TABLE_WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
STREAM_READ = ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams")
QUEUE_SEND = ("sqs:SendMessage", "sqs:GetQueueAttributes")
QUEUE_DRAIN = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
)
# Every service here encrypts with data keys of the one customer managed key.
KEY_USE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")


def _statement(sid: str, actions: Sequence[str], resources: Sequence[str]) -> iam.PolicyStatement:
    return iam.PolicyStatement(sid=sid, actions=list(actions), resources=list(resources))


def use_key(key: kms.IKey) -> iam.PolicyStatement:
    return _statement("UseDataKey", KEY_USE, [key.key_arn])


def read_table(table: DataTable) -> iam.PolicyStatement:
    return _statement("ReadTable", TABLE_READ, [table.table.table_arn, *table.index_arns()])


def write_table(table: DataTable) -> iam.PolicyStatement:
    return _statement("WriteTable", TABLE_WRITE, [table.table.table_arn])


def scan_table(table: DataTable) -> iam.PolicyStatement:
    """Whole-table sweeps (GDPR export and erasure): the adapters scan the base table, never an index."""
    return _statement("ScanTable", ("dynamodb:Scan",), [table.table.table_arn])


def read_stream(table: DataTable) -> iam.PolicyStatement:
    return _statement("ReadTableStream", STREAM_READ, [table.stream_arn])


def send_to(sid: str, *queues: sqs.IQueue) -> iam.PolicyStatement:
    return _statement(sid, QUEUE_SEND, [queue.queue_arn for queue in queues])


def drain(sid: str, *queues: sqs.IQueue) -> iam.PolicyStatement:
    """Receive and delete (the dead-letter inspection and redrive endpoints)."""
    return _statement(sid, QUEUE_DRAIN, [queue.queue_arn for queue in queues])


def publish_to(sid: str, topic: sns.ITopic) -> iam.PolicyStatement:
    return _statement(sid, ("sns:Publish",), [topic.topic_arn])


def put_events(event_bus_arn: str) -> iam.PolicyStatement:
    return _statement("PutDomainEvents", ("events:PutEvents",), [event_bus_arn])


def read_objects(sid: str, bucket_arn: str) -> iam.PolicyStatement:
    return _statement(sid, ("s3:GetObject", "s3:GetObjectVersion"), [f"{bucket_arn}/*"])


def copy_into(sid: str, bucket_arn: str) -> iam.PolicyStatement:
    """The destination of boto3's managed copy: CopyObject, or (over its 8 MB threshold) a multipart
    copy (UploadPartCopy, all under PutObject) that it aborts when a part fails."""
    return _statement(sid, ("s3:PutObject", "s3:AbortMultipartUpload"), [f"{bucket_arn}/*"])


def objects(sid: str, bucket_arn: str, actions: Sequence[str]) -> iam.PolicyStatement:
    """Named object actions on one bucket's objects (for a bucket used only in part)."""
    return _statement(sid, actions, [f"{bucket_arn}/*"])


def list_bucket(sid: str, bucket_arn: str) -> iam.PolicyStatement:
    """Without ListBucket, S3 answers a HeadObject/GetObject of a missing key with 403, not 404: the
    blob store's ``exists`` would raise instead of answering False."""
    return _statement(sid, ("s3:ListBucket",), [bucket_arn])


# What ``S3BlobStore`` calls: put (multipart for streams), get/head, delete, list under a prefix.
BLOB_OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")


def use_blob_store(sid: str, bucket_arn: str) -> list[iam.PolicyStatement]:
    return [objects(f"{sid}Objects", bucket_arn, BLOB_OBJECT_ACTIONS), list_bucket(f"{sid}List", bucket_arn)]


SECRET_READ = ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret")


def read_secret(sid: str, secret_arn: str) -> iam.PolicyStatement:
    """A secret fetched at cold start (``lambdas/runtime.fetch_secret``)."""
    return _statement(sid, SECRET_READ, [secret_arn])


def start_executions(state_machine_arn: str) -> iam.PolicyStatement:
    return _statement("StartPaymentWorkflow", ("states:StartExecution",), [state_machine_arn])


def send_email(sid: str, *resource_arns: str) -> iam.PolicyStatement:
    """SES v2 ``SendEmail`` with simple content (raw content would need ``ses:SendRawEmail`` too) from
    one identity; SES also authorises the configuration set a send names, when it names one."""
    return _statement(sid, ("ses:SendEmail",), resource_arns)
