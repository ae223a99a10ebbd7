"""The audit log's hash chain: sealing in bulk, and finding the first broken link."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from accrue.domain.audit import GENESIS_HASH, AuditEntry, AuditRecord, entry_hash, seal, verify

START = datetime(2026, 3, 1, tzinfo=UTC)


def records(count: int) -> list[AuditRecord]:
    return [
        AuditRecord("ops", "payment.created", "payment", f"pay_{n}", START + timedelta(seconds=n), {"n": n})
        for n in range(count)
    ]


def test_each_entry_stores_the_hash_of_the_one_before_and_a_hash_of_itself() -> None:
    chain = seal(records(3), first_seq=1, prev_hash=GENESIS_HASH)
    assert [e.seq for e in chain] == [1, 2, 3]
    assert chain[0].prev_hash == GENESIS_HASH
    assert chain[1].prev_hash == chain[0].hash and chain[2].prev_hash == chain[1].hash
    first = chain[0]
    assert first.hash == entry_hash(
        1, first.occurred_at, "ops", "payment.created", "payment", "pay_0", '{"n":0}', GENESIS_HASH
    )
    report = verify(chain)
    assert report.ok and report.checked == 3 and report.head_hash == chain[-1].hash


def test_sealing_in_two_appends_gives_the_same_chain_as_one() -> None:
    whole = seal(records(6), first_seq=1, prev_hash=GENESIS_HASH)
    first = seal(records(6)[:4], first_seq=1, prev_hash=GENESIS_HASH)
    rest = seal(records(6)[4:], first_seq=5, prev_hash=first[-1].hash)
    assert first + rest == whole


def test_details_are_hashed_in_one_canonical_spelling() -> None:
    a = AuditRecord("ops", "x", "payment", "p", START, {"b": 1, "a": "é"})
    b = AuditRecord("ops", "x", "payment", "p", START, {"a": "é", "b": 1})
    assert seal([a], first_seq=1, prev_hash=GENESIS_HASH) == seal([b], first_seq=1, prev_hash=GENESIS_HASH)
    assert seal([a], first_seq=1, prev_hash=GENESIS_HASH)[0].details == '{"a":"é","b":1}'


@pytest.mark.parametrize("field", ["occurred_at", "actor", "action", "subject_type", "subject_id", "details"])
def test_changing_any_field_of_an_entry_is_found_at_that_entry(field: str) -> None:
    chain = seal(records(5), first_seq=1, prev_hash=GENESIS_HASH)
    tampered = list(chain)
    tampered[2] = dataclasses.replace(chain[2], **{field: '{"n":99}' if field == "details" else "forged"})
    report = verify(tampered)
    assert not report.ok
    assert report.broken is not None and report.broken.seq == 3
    assert "does not match its hash" in report.broken.problem
    assert report.checked == 2


def test_rehashing_a_changed_entry_breaks_the_link_from_the_next_one() -> None:
    chain = seal(records(4), first_seq=1, prev_hash=GENESIS_HASH)
    forged = dataclasses.replace(chain[1], actor="forger")
    forged = dataclasses.replace(
        forged,
        hash=entry_hash(
            forged.seq,
            forged.occurred_at,
            forged.actor,
            forged.action,
            forged.subject_type,
            forged.subject_id,
            forged.details,
            forged.prev_hash,
        ),
    )
    report = verify([chain[0], forged, chain[2], chain[3]])
    assert report.broken is not None and report.broken.seq == 3
    assert "previous-hash link" in report.broken.problem


def test_a_removed_or_reordered_entry_is_found() -> None:
    chain = seal(records(4), first_seq=1, prev_hash=GENESIS_HASH)
    removed = verify([chain[0], chain[2], chain[3]])
    assert removed.broken is not None and removed.broken.seq == 3 and "removed or reordered" in removed.broken.problem
    swapped = verify([chain[0], chain[2], chain[1], chain[3]])
    assert swapped.broken is not None and swapped.broken.seq == 3


def test_an_empty_log_is_intact() -> None:
    report = verify([])
    assert report.ok and report.checked == 0 and report.head_hash == GENESIS_HASH


def test_an_entry_gives_back_its_details() -> None:
    entry: AuditEntry = seal(records(1), first_seq=1, prev_hash=GENESIS_HASH)[0]
    assert entry.details_dict() == {"n": 0}
