"""The audit log: append-only entries (who, what, when, details), chained by SHA-256.

Each entry stores the hash of the entry before it and its own hash over its position, its fields
and that previous hash. Changing, removing or reordering any entry breaks every link after it,
which ``verify`` reports at the first broken one. (Dropping entries at the very end leaves a valid
shorter chain: operators record the head hash ``verify`` prints to notice that too.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64
SYSTEM_ACTOR = "system"

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str).encode


def canonical_json(details: Mapping[str, Any]) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 text, decimals and dates as strings."""
    return _encode(details)


def timestamp_text(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: sorts in time order and hashes the same everywhere."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An entry to append: who did what to which subject, when, with which details."""

    actor: str
    action: str
    subject_type: str
    subject_id: str
    occurred_at: datetime
    details: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    occurred_at: str
    actor: str
    action: str
    subject_type: str
    subject_id: str
    details: str  # canonical JSON, hashed exactly as stored
    prev_hash: str
    hash: str

    def details_dict(self) -> dict[str, Any]:
        value = json.loads(self.details)
        return value if isinstance(value, dict) else {"value": value}


def entry_hash(
    seq: int,
    occurred_at: str,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    details: str,
    prev_hash: str,
) -> str:
    # A JSON array leaves no ambiguity about where one field ends and the next begins.
    payload = _encode([seq, occurred_at, actor, action, subject_type, subject_id, details, prev_hash])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def seal(records: Sequence[AuditRecord], *, first_seq: int, prev_hash: str) -> list[AuditEntry]:
    """Chain ``records`` after the entry ``first_seq - 1`` whose hash is ``prev_hash``."""
    sealed: list[AuditEntry] = []
    seq = first_seq
    last_moment: datetime | None = None
    at = ""
    for record in records:
        if record.occurred_at is not last_moment:  # entries written together share one instant
            last_moment = record.occurred_at
            at = timestamp_text(last_moment)
        details = canonical_json(record.details)
        digest = entry_hash(
            seq, at, record.actor, record.action, record.subject_type, record.subject_id, details, prev_hash
        )
        sealed.append(
            AuditEntry(
                seq, at, record.actor, record.action, record.subject_type, record.subject_id, details, prev_hash, digest
            )
        )
        prev_hash = digest
        seq += 1
    return sealed


@dataclass(frozen=True, slots=True)
class BrokenLink:
    seq: int
    problem: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    head_hash: str
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify(entries: Iterable[AuditEntry]) -> ChainReport:
    """Walk the chain in order and stop at the first entry that does not hold."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for entry in entries:
        if entry.seq != expected_seq:
            problem = f"expected entry {expected_seq} next, found {entry.seq} (entries removed or reordered)"
            return ChainReport(checked, expected_prev, BrokenLink(entry.seq, problem))
        if entry.prev_hash != expected_prev:
            problem = "previous-hash link does not match the entry before it"
            return ChainReport(checked, expected_prev, BrokenLink(entry.seq, problem))
        recomputed = entry_hash(
            entry.seq,
            entry.occurred_at,
            entry.actor,
            entry.action,
            entry.subject_type,
            entry.subject_id,
            entry.details,
            entry.prev_hash,
        )
        if recomputed != entry.hash:
            problem = f"content does not match its hash (stored {entry.hash[:16]}..., computed {recomputed[:16]}...)"
            return ChainReport(checked, expected_prev, BrokenLink(entry.seq, problem))
        expected_prev = entry.hash
        expected_seq += 1
        checked += 1
    return ChainReport(checked, expected_prev, None)
