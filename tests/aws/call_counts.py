"""Count the AWS API calls a business operation makes, with botocore's event hooks, and turn them
into request units and dollars (docs/COST.md).

``CallLog`` registers ``before-call`` / ``after-call`` handlers on every client, so it sees exactly
the requests the code sends. DynamoDB request units are modelled from the requests themselves
(moto does not meter transactions): a write costs ceil(item size / 1 KB) units, twice that inside a
TransactWriteItems, plus the same again for every global secondary index the item is in (our
indexes project every attribute, so a change to the item rewrites its index entries); a strongly
consistent read costs ceil(size / 4 KB) units, an index (eventually consistent) read half that.
Item sizes follow DynamoDB's rules for item size (names plus values).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from accrue.adapters.aws.table import GLOBAL_INDEXES

# us-east-1 list prices (see docs/COST.md for the sources and the date they were read).
PRICES = {
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "sns_publish": 0.50 / 1e6,
    "s3_put": 0.005 / 1e3,
    "s3_get": 0.0004 / 1e3,
    "events_put": 1.00 / 1e6,
    "lambda_request": 0.20 / 1e6,
}
S3_WRITES = {
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "ListObjectsV2",
    "UploadPartCopy",
}
S3_READS = {"GetObject", "HeadObject"}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


def wire_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values (strings and binaries by
    their bytes, numbers about one byte per two digits plus one, lists and maps 3 bytes plus their
    elements, one more byte per element)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Any) -> int:
    if not isinstance(value, dict) or len(value) != 1:
        return len(json.dumps(value, default=str))
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        digits = str(inner).lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(inner) if isinstance(inner, bytes) else len(str(inner)) * 3 // 4
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in inner.items())
    return len(json.dumps(inner, default=str))


@dataclass
class Call:
    service: str
    operation: str
    params: dict[str, Any]
    response: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    wru: float = 0.0
    rru: float = 0.0
    sqs_messages: int = 0

    @property
    def dynamodb_writes(self) -> int:
        return sum(n for (service, op), n in self.calls.items() if service == "dynamodb" and op in DYNAMODB_WRITES)

    @property
    def dynamodb_reads(self) -> int:
        return sum(n for (service, op), n in self.calls.items() if service == "dynamodb" and op not in DYNAMODB_WRITES)

    def count(self, service: str, *operations: str) -> int:
        return sum(n for (s, op), n in self.calls.items() if s == service and (not operations or op in operations))

    @property
    def total_requests(self) -> int:
        return sum(self.calls.values())

    def dollars(self) -> float:
        return (
            self.wru * PRICES["dynamodb_wru"]
            + self.rru * PRICES["dynamodb_rru"]
            + self.count("sqs") * PRICES["sqs_request"]
            + self.count("sns", "Publish") * PRICES["sns_publish"]
            + self.count("s3", *S3_WRITES) * PRICES["s3_put"]
            + self.count("s3", *S3_READS) * PRICES["s3_get"]
            + self.count("events", "PutEvents") * PRICES["events_put"]
        )


class CallLog:
    def __init__(self, clients: dict[str, Any], table_name: str) -> None:
        self.calls: list[Call] = []
        self.table_name = table_name
        self.dynamodb = clients["dynamodb"]
        self._pending: dict[int, Call] = {}
        for service, client in clients.items():
            client.meta.events.register("before-call.*.*", self._before(service))
            client.meta.events.register("after-call.*.*", self._after)

    def _before(self, service: str) -> Any:
        def record(model: Any, params: Any, context: Any, **_: Any) -> None:
            body = params.get("body") if isinstance(params, dict) else None
            try:
                request = json.loads(body) if body else {}
            except (TypeError, ValueError):
                request = {}
            call = Call(service, model.name, request if isinstance(request, dict) else {})
            self.calls.append(call)
            context["accrue_call"] = call

        return record

    def _after(self, parsed: Any, context: Any, **_: Any) -> None:
        call = context.get("accrue_call")
        if call is not None and isinstance(parsed, dict):
            call.response = parsed

    @contextmanager
    def measure(self) -> Iterator[Usage]:
        start = len(self.calls)
        usage = Usage()
        yield usage
        taken = self.calls[start:]
        for call in taken:
            usage.calls[(call.service, call.operation)] += 1
            if call.service == "sqs" and call.operation in ("SendMessageBatch", "SendMessage"):
                usage.sqs_messages += len(call.params.get("Entries", [])) or 1
        self._units(taken, usage)

    # -- request units ---------------------------------------------------------------------------

    def _current_size(self, key: dict[str, Any]) -> tuple[int, int]:
        """(wire size, number of indexes) of the item as it is now (after the operation)."""
        found = self.dynamodb.get_item(TableName=self.table_name, Key=key, ConsistentRead=True).get("Item")
        if not found:
            return 0, 0
        indexes = sum(1 for index in GLOBAL_INDEXES if index.partition_key in found)
        return wire_size(found), indexes

    def _write_units(self, kind: str, body: dict[str, Any], transactional: bool) -> float:
        if kind == "Put":
            item = body["Item"]
            size = wire_size(item)
            indexes = sum(1 for index in GLOBAL_INDEXES if index.partition_key in item)
        else:
            size, indexes = self._current_size(body["Key"])
            size = max(size, 1)
        units = math.ceil(size / 1024)
        return units * (2 if transactional else 1) + units * indexes

    def _units(self, calls: list[Call], usage: Usage) -> None:
        for call in calls:
            if call.service != "dynamodb":
                continue
            op, params, response = call.operation, call.params, call.response
            if op == "TransactWriteItems":
                for entry in params.get("TransactItems", []):
                    ((kind, body),) = entry.items()
                    usage.wru += self._write_units(kind, body, transactional=True)
            elif op in ("PutItem", "UpdateItem", "DeleteItem"):
                usage.wru += self._write_units(
                    {"PutItem": "Put", "UpdateItem": "Update", "DeleteItem": "Delete"}[op], params, transactional=False
                )
            elif op == "GetItem":
                item = response.get("Item") or {}
                usage.rru += max(1, math.ceil(wire_size(item) / 4096)) * (1 if params.get("ConsistentRead") else 0.5)
            elif op == "BatchGetItem":
                for items in response.get("Responses", {}).values():
                    usage.rru += sum(max(1, math.ceil(wire_size(i) / 4096)) for i in items) or 1
            elif op in ("Query", "Scan"):
                size = sum(wire_size(i) for i in response.get("Items", []))
                factor = 0.5 if params.get("IndexName") or not params.get("ConsistentRead") else 1
                usage.rru += max(1, math.ceil(size / 4096)) * factor


def describe(usage: Usage) -> dict[str, Any]:
    return {
        "requests": usage.total_requests,
        "dynamodb_writes": usage.dynamodb_writes,
        "dynamodb_reads": usage.dynamodb_reads,
        "wru": round(usage.wru, 1),
        "rru": round(usage.rru, 1),
        "sqs": usage.count("sqs"),
        "sqs_messages": usage.sqs_messages,
        "s3": usage.count("s3"),
        "sns": usage.count("sns"),
        "events": usage.count("events"),
        "calls": {f"{s}:{o}": n for (s, o), n in sorted(usage.calls.items())},
        "dollars": usage.dollars(),
    }
