"""Domain dataclasses <-> DynamoDB attribute values, driven by the dataclasses' type hints.

Numbers travel as ``int`` or ``Decimal`` (boto3 refuses floats, and so do we); datetimes as UTC
ISO-8601 strings (they sort); enums as their values; nested dataclasses as maps; free-form dicts
as JSON text (their values may be anything JSON allows). A field added to a domain dataclass is
stored and read back without touching this module.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import json
import types
import typing
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from accrue.adapters.aws.keys import sortable_time
from accrue.domain.errors import InvalidInput

T = TypeVar("T")

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# Aggregate bookkeeping that is never stored as such (events leave through the outbox).
TRANSIENT_FIELDS = frozenset({"events", "new_transfers"})


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"), sort_keys=True)


def encode_value(value: Any) -> Any:
    """A Python value as something ``TypeSerializer`` accepts (never a float)."""
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, int | Decimal):
        return value
    if isinstance(value, float):
        raise TypeError("floats are never stored: use Decimal or integer minor units")
    if isinstance(value, datetime):
        return sortable_time(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_attributes(value)
    if isinstance(value, dict):
        return dumps(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [encode_value(v) for v in value]
    raise TypeError(f"cannot store {type(value).__name__}")


def to_attributes(obj: Any, *, skip: frozenset[str] = TRANSIENT_FIELDS) -> dict[str, Any]:
    """A dataclass instance as a Python dict for DynamoDB; ``None`` fields are left out."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        # Underscored fields are an aggregate's working state (e.g. an open posting), never data.
        if f.name in skip or f.name.startswith("_"):
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        found[f.name] = encode_value(value)
    return found


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else value
    if origin is typing.Annotated:
        return _decode(typing.get_args(hint)[0], value)
    if origin in (tuple, list, set, frozenset):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = args[0] if args else Any
        items = [_decode(inner, v) for v in value]
        return origin(items)
    if origin is dict or hint is dict:
        return json.loads(value) if isinstance(value, str) else dict(value)
    if hint is Any or hint is object:
        return value
    if isinstance(hint, type):
        if issubclass(hint, bool):
            return bool(value)
        if issubclass(hint, enum.Enum):
            return hint(value)
        if issubclass(hint, int):
            return int(value)
        if issubclass(hint, Decimal):
            return Decimal(value)
        if issubclass(hint, datetime):
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if issubclass(hint, bytes):
            return bytes(value)
        if dataclasses.is_dataclass(hint):
            return from_attributes(hint, value)
        if issubclass(hint, str):
            return str(value)
    return value


def from_attributes(cls: type[T], attrs: dict[str, Any]) -> T:
    """Rebuild a dataclass from stored attributes; missing optional fields take their defaults."""
    hints = _hints(typing.cast(type, cls))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in TRANSIENT_FIELDS or f.name.startswith("_") or not f.init:
            continue
        if f.name in attrs:
            values[f.name] = _decode(hints[f.name], attrs[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            values[f.name] = None
    return cls(**values)


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    """Python values -> DynamoDB wire format (``{"S": ...}``)."""
    return {name: _serializer.serialize(value) for name, value in item.items()}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB wire format -> Python values (numbers as ``Decimal``)."""
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def serialize_value(value: Any) -> dict[str, Any]:
    return dict(_serializer.serialize(value))


# -- opaque page cursors ----------------------------------------------------------------------

CURSOR_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def encode_cursor(position: str) -> str:
    """A position in an index (the tail of a sort key) as an opaque base64url token."""
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The position a cursor stands for. As on SQLite, every token of the documented alphabet is a
    position (one nobody issued just lands somewhere, or past the end); other characters are refused."""
    if not cursor:
        return None
    if not set(cursor) <= CURSOR_ALPHABET:
        raise InvalidInput("cursor", "is not a cursor this service issued")
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode())
    except ValueError:
        # A length no encoder produces: a position before everything (an empty next page).
        return ""
    return raw.decode("utf-8", errors="replace")
