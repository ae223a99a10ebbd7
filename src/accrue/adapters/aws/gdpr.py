"""GDPR on the DynamoDB table: a member's records, and their erasure, across every feature.

The single table is swept as a whole (a paginated scan, as the SQLite adapter sweeps every table),
so an entity a feature adds later is covered without a list to keep up to date: an item is
*linked* to the member when one of its member attributes holds the member's id, or when one of its
text values (maps and lists included) contains the member's email, phone number or id as a JSON
string; the member's email, name and phone are then blanked out of its text
(``ErasureSubject.scrub``). Items of other members are never touched; the member itself changes
through its aggregate; transfers and the audit chain are immutable and hold ids only.

DynamoDB keeps no deleted bytes a reader could reach: an overwritten item is gone from the table
(point-in-time-recovery backups age out with their retention window, see docs/OPERATIONS.md).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from pydantic.alias_generators import to_camel

from accrue.adapters.aws.dynamodb_uow import Session, Write
from accrue.adapters.aws.repositories import ENTITY
from accrue.adapters.aws.table import GSI1, GSI2, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from accrue.domain.gdpr import ErasureSubject
from accrue.ports import PersonalDataRepository

MEMBER_ATTRIBUTES = ("user_id", "member_id", "referrer_id", "referred_id")
# Entities never rewritten by the sweep (see the module docstring).
NOT_SWEPT = frozenset({"member", "transfer", "audit_entry", "audit_head", "email", "referral_code"})
# Items that only exist for the member: deleted rather than blanked.
DELETED_ON_ERASURE = frozenset({"preferences"})
# Export sections: entity -> section (the same section names as the SQLite export).
SECTIONS: dict[str, str] = {
    "order": "orders",
    "notification": "notifications",
    "preferences": "preferences",
    "channel_send": "notificationDeliveries",
    "referral": "referrals",
    "payment": "payments",
    "webhook_event": "webhookEvents",
    "webhook_delivery": "webhookDeliveries",
}
# Sections the SQLite store has and this one keeps elsewhere (channel messages leave through SNS).
EMPTY_SECTIONS = ("channelMessages",)
JSON_TEXT = frozenset({"message", "data", "payload"})
INTERNAL = frozenset(
    {
        PARTITION_KEY,
        SORT_KEY,
        GSI1.partition_key,
        GSI1.sort_key,
        GSI2.partition_key,
        GSI2.sort_key,
        TTL_ATTRIBUTE,
        ENTITY,
        "dedupe_key",
        "notification_key",
        "next_attempt_at",
        "lease_until",
        "version",
    }
)


def _map_text(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_text(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _map_text(v, change) for k, v in value.items()}
    return value


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    return []


def _plain(value: Any) -> Any:
    """DynamoDB numbers as ints (or decimal strings), for a JSON export."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class DynamoPersonalDataRepository(PersonalDataRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def _linked(self, user_id: str, terms: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        names = {f"#m{i}": name for i, name in enumerate(MEMBER_ATTRIBUTES)}
        conditions = [f"#m{i} = :id" for i in range(len(MEMBER_ATTRIBUTES))]
        found = list(
            self.session.scan(
                FilterExpression=" OR ".join(conditions),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":id": user_id},
            )
        )
        if terms:
            seen = {(i[PARTITION_KEY], i[SORT_KEY]) for i in found}
            for item in self.session.scan():
                if (item[PARTITION_KEY], item[SORT_KEY]) in seen:
                    continue
                if any(term in text for text in _texts(item) for term in terms):
                    found.append(item)
        return found

    def export(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        sections: dict[str, list[dict[str, Any]]] = {name: [] for name in (*SECTIONS.values(), *EMPTY_SECTIONS)}
        for item in sorted(self._linked(user_id), key=lambda i: str(i.get("created_at") or i.get("updated_at") or "")):
            section = SECTIONS.get(str(item.get(ENTITY)))
            if section is None:
                continue
            record: dict[str, Any] = {}
            for name, value in item.items():
                if name in INTERNAL:
                    continue
                if name in JSON_TEXT and isinstance(value, str):
                    with contextlib.suppress(ValueError):  # text that only looks like JSON stays text
                        value = json.loads(value)
                record[to_camel(name)] = _plain(value)
            sections[section].append(record)
        return sections

    def erase(self, subject: ErasureSubject) -> dict[str, int]:
        changed: dict[str, int] = {}
        for item in self._linked(subject.user_id, subject.link_terms()):
            entity = str(item.get(ENTITY, "item"))
            key = {PARTITION_KEY: item[PARTITION_KEY], SORT_KEY: item[SORT_KEY]}
            if entity in NOT_SWEPT or self.session.staged(key) is not None:
                continue  # immutable, or already rewritten by its feature's own eraser
            if entity in DELETED_ON_ERASURE:
                self.session.stage(Write("Delete", key), replace=True)
                changed[entity] = changed.get(entity, 0) + 1
                continue
            scrubbed = {
                name: value if name in INTERNAL or name in MEMBER_ATTRIBUTES else _map_text(value, subject.scrub)
                for name, value in item.items()
            }
            if scrubbed != item:
                body = {k: v for k, v in scrubbed.items() if k not in (PARTITION_KEY, SORT_KEY)}
                self.session.stage(Write("Put", key, item=body), replace=True)
                changed[entity] = changed.get(entity, 0) + 1
        return changed

    def remaining(self, subject: ErasureSubject) -> list[str]:
        values = [v.lower() for v in subject.personal_values if len(v) >= 3]
        if not values:
            return []
        found: set[str] = set()
        for item in self.session.scan():
            for name, value in item.items():
                if any(v in text.lower() for text in _texts(value) for v in values):
                    found.add(f"{item.get(ENTITY, 'item')}.{name}")
        return sorted(found)
