"""GDPR: export everything about a member in one document; erase their personal data.

Features plug in through a small registry (``registry``): an *exporter* adds sections to the export
document, an *eraser* removes what its feature keeps about the member inside the erasure's unit of
work and may name archived blobs to delete. A feature adds its own with
``gdpr.registry.add_exporter(...)`` / ``add_eraser(...)`` / ``add_blob_prefix(...)``.

Erasure (``erase_member``) runs in one write unit of work: every eraser, the store-wide sweep
(``uow.personal_data.erase``: every record linked to the member loses the member's email, name and
phone) and the member aggregate's own ``erase()`` commit together. The member keeps its id, balance
and ledger postings: the ledger stays balanced and is anonymous. Archived blobs that mention the
member are found before the commit (while the email is still known) and deleted right after it; the
``MemberErased`` event carries their keys (never personal values) so the outbox worker finishes the
deletion if the process dies in between. Last, the store purges freed storage so the erased bytes
are gone from the file too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from accrue.domain.commands import Command
from accrue.domain.errors import NotFound
from accrue.domain.gdpr import EraseMember, ErasureSubject, MemberErased
from accrue.domain.ledger import Transfer
from accrue.domain.members import Member
from accrue.domain.money import format_minor_units
from accrue.ports import BlobStore, UnitOfWork

Clock = Callable[[], datetime]
UowFactory = Callable[..., UnitOfWork]
EXPORT_FORMAT = "accrue.member-export/1"
# The sections every export has, even when empty (the list).
REQUIRED_SECTIONS = ("profile", "preferences", "ledger", "orders", "referrals", "notifications", "payments")
HISTORY_PAGE = 500


@dataclass(frozen=True, slots=True)
class Erased:
    """What one eraser did: records changed and archived blobs to delete after commit."""

    records: int = 0
    blob_keys: tuple[str, ...] = ()


Exporter = Callable[[UnitOfWork, str], Mapping[str, Any]]
Eraser = Callable[[UnitOfWork, ErasureSubject], Erased]


@dataclass
class PersonalDataRegistry:
    """Exporters and erasers by name, run in insertion order; the store-wide sweep runs after them."""

    exporters: dict[str, Exporter] = field(default_factory=dict)
    erasers: dict[str, Eraser] = field(default_factory=dict)
    # Blob folders whose objects may quote a member (raw webhook payloads); scanned on erasure.
    blob_prefixes: list[str] = field(default_factory=list)

    def add_exporter(self, name: str, exporter: Exporter) -> None:
        self.exporters[name] = exporter

    def add_eraser(self, name: str, eraser: Eraser) -> None:
        self.erasers[name] = eraser

    def add_blob_prefix(self, prefix: str) -> None:
        if prefix not in self.blob_prefixes:
            self.blob_prefixes.append(prefix)


# -- the loyalty core's and known features' parts -------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_profile(uow: UnitOfWork, user_id: str) -> Mapping[str, Any]:
    member = _member(uow, user_id)
    return {
        "profile": {
            "userId": member.user_id,
            "email": member.email,
            "name": member.name,
            "phone": member.phone,
            "points": member.balance,
            "lifetime": member.lifetime,
            "tier": str(member.tier),
            "totalSpent": format_minor_units(member.total_spent_cents, "USD"),
            "referralCode": member.referral_code or None,
            "createdAt": _iso(member.created_at),
        }
    }


def _posting(t: Transfer) -> dict[str, Any]:
    return {
        "transactionId": t.transfer_id,
        "type": "credit" if t.member_delta > 0 else "debit",
        "points": t.member_delta,
        "reason": str(t.reason),
        "reference": t.reference,
        "balance": t.balance_after,
        "date": _iso(t.created_at),
    }


def export_ledger(uow: UnitOfWork, user_id: str) -> Mapping[str, Any]:
    postings: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = uow.ledger.history(user_id, HISTORY_PAGE, cursor)
        postings.extend(_posting(t) for t in page.items)
        if page.next_cursor is None:
            return {"ledger": postings}
        cursor = page.next_cursor


def export_store_records(uow: UnitOfWork, user_id: str) -> Mapping[str, Any]:
    return uow.personal_data.export(user_id)


def erase_webhook_records(uow: UnitOfWork, subject: ErasureSubject) -> Erased:
    """Inbound events forget the member (their ids stay, so replays are still refused) and name their
    archived payloads for deletion; outbound delivery payloads about the member are blanked."""
    keys = uow.webhook_events.forget_member(subject.user_id)
    blanked = uow.webhook_deliveries.forget_member(subject.user_id)
    return Erased(records=len(keys) + blanked, blob_keys=tuple(keys))


def default_registry() -> PersonalDataRegistry:
    registry = PersonalDataRegistry()
    registry.add_exporter("profile", export_profile)
    registry.add_exporter("ledger", export_ledger)
    registry.add_exporter("records", export_store_records)
    registry.add_eraser("webhooks", erase_webhook_records)
    registry.add_blob_prefix("webhooks/")
    return registry


# The registry the application uses; features add their exporters and erasers to it.
registry = default_registry()

# -- use cases ------------------------------------------------------------------------------------


def _member(uow: UnitOfWork, user_id: str) -> Member:
    member = uow.members.get(user_id)
    if member is None or member.erased:
        raise NotFound(f"user {user_id} not found", details={"field": "userId"})
    return member


def export_member(
    uow: UnitOfWork, user_id: str, now: datetime, gdpr_registry: PersonalDataRegistry | None = None
) -> dict[str, Any]:
    """One JSON-ready document with everything stored about the member (read-only)."""
    chosen = gdpr_registry or registry
    _member(uow, user_id)
    document: dict[str, Any] = {"format": EXPORT_FORMAT, "userId": user_id, "exportedAt": now.isoformat()}
    for section in REQUIRED_SECTIONS:
        document[section] = [] if section != "profile" else {}
    for exporter in chosen.exporters.values():
        document.update(exporter(uow, user_id))
    return document


@dataclass(frozen=True, slots=True)
class ErasureReport:
    user_id: str
    already_erased: bool
    records: dict[str, int]
    blobs_deleted: int
    # Where a personal value is still stored after erasure (should be empty; see remaining()).
    retained: list[str]
    # False when readers kept the store from dropping the old copies at once (SQLite: the WAL is
    # truncated at the next checkpoint instead).
    storage_purged: bool = True


def mentioning_blobs(blobs: BlobStore, prefixes: Iterable[str], subject: ErasureSubject) -> list[str]:
    """Archived objects that quote the member (email, phone, or id as a JSON string)."""
    found: list[str] = []
    for prefix in prefixes:
        for key in blobs.list(prefix):
            try:
                text = blobs.get(key).decode("utf-8", errors="replace")
            except KeyError:
                continue  # deleted meanwhile
            if subject.mentioned_in(text) or subject.values_in(text):
                found.append(key)
    return found


def delete_blobs(blobs: BlobStore, keys: Iterable[str]) -> int:
    deleted = 0
    for key in keys:
        if blobs.exists(key):
            blobs.delete(key)
            deleted += 1
    return deleted


def erase_member(
    cmd: EraseMember,
    uow: UnitOfWork,
    blobs: BlobStore,
    uow_factory: UowFactory,
    purge_freed_storage: Callable[[], bool],
    gdpr_registry: PersonalDataRegistry | None = None,
) -> ErasureReport:
    chosen = gdpr_registry or registry
    member = uow.members.get(cmd.user_id)
    if member is None:
        raise NotFound(f"user {cmd.user_id} not found", details={"field": "userId"})
    if member.erased:
        return ErasureReport(cmd.user_id, True, {}, 0, [])
    subject = ErasureSubject(user_id=member.user_id, email=member.email, name=member.name, phone=member.phone)
    records: dict[str, int] = {}
    keys: list[str] = []
    for name, eraser in chosen.erasers.items():
        result = eraser(uow, subject)
        if result.records:
            records[name] = result.records
        keys.extend(k for k in result.blob_keys if k not in keys)
    keys.extend(k for k in mentioning_blobs(blobs, chosen.blob_prefixes, subject) if k not in keys)
    member.erase()
    uow.track(member)
    records["members"] = 1
    for table, count in uow.personal_data.erase(subject).items():
        records[table] = records.get(table, 0) + count
    uow.emit(MemberErased(user_id=member.user_id, blob_keys=tuple(keys)))
    uow.commit()
    deleted = delete_blobs(blobs, keys)
    purged = purge_freed_storage()
    with uow_factory(readonly=True) as check:
        retained = check.personal_data.remaining(subject)
    return ErasureReport(member.user_id, False, records, deleted, retained, purged)


def delete_erased_member_blobs(event: MemberErased, uow: UnitOfWork, blobs: BlobStore) -> None:
    """After commit (outbox): finish deleting the archived blobs, should the eraser have died first."""
    delete_blobs(blobs, event.blob_keys)


GDPR_COMMAND_HANDLERS: dict[type[Command], Callable[..., Any]] = {EraseMember: erase_member}
GDPR_EVENT_HANDLERS: dict[str, dict[str, Callable[..., None]]] = {
    "MemberErased": {"delete_erased_member_blobs": delete_erased_member_blobs},
}
