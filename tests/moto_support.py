"""Moto (AWS emulation) helpers shared by the contract suite and the Lambda handler tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config

from accrue.adapters.aws.table import create_table_arguments, time_to_live_arguments

REGION = "us-east-1"
TABLE_NAME = "accrue-test"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@contextmanager
def fake_aws_environment() -> Iterator[None]:
    """Fake credentials for moto; the real ones (if any) are restored afterwards."""
    saved = {name: os.environ.get(name) for name in FAKE_CREDENTIALS}
    os.environ.update(FAKE_CREDENTIALS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def client(service: str) -> Any:
    if service == "dynamodbstreams":
        # moto serves the streams API only without account-id endpoints.
        return boto3.client(service, region_name=REGION, config=Config(account_id_endpoint_mode="disabled"))
    return boto3.client(service, region_name=REGION)


def create_table(dynamodb: Any, name: str = TABLE_NAME) -> str:
    """Create the single table exactly as the CDK app defines it; returns the stream ARN."""
    description = dynamodb.create_table(**create_table_arguments(name))
    dynamodb.update_time_to_live(**time_to_live_arguments(name))
    return str(description["TableDescription"]["LatestStreamArn"])


def copy_tables_once_per_transaction() -> None:
    """moto snapshots the whole table for every *item* of a TransactWriteItems (to roll back on
    failure), which makes a 100-item transaction on a table of n items cost 100 n copies. Taking the
    snapshot once per transaction keeps its behaviour (the snapshot is taken before any item is
    applied) and makes bulk work on moto linear. Idempotent."""
    from moto.dynamodb import models

    if getattr(models.DynamoDBBackend.transact_write_items, "_copies_once", False):
        return
    real_copy = models.copy
    original = models.DynamoDBBackend.transact_write_items

    class OncePerTransaction:
        def __init__(self) -> None:
            self.snapshots: dict[int, Any] = {}

        def deepcopy(self, value: Any, memo: Any = None) -> Any:
            if isinstance(value, models.Table):
                if id(value) not in self.snapshots:
                    self.snapshots[id(value)] = real_copy.deepcopy(value)
                return self.snapshots[id(value)]
            return real_copy.deepcopy(value, memo)

        def __getattr__(self, name: str) -> Any:
            return getattr(real_copy, name)

    def transact_write_items(self: Any, transact_items: Any) -> Any:
        models.copy = OncePerTransaction()  # type: ignore[assignment]
        try:
            return original(self, transact_items)
        finally:
            models.copy = real_copy

    transact_write_items._copies_once = True  # type: ignore[attr-defined]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


copy_tables_once_per_transaction()
