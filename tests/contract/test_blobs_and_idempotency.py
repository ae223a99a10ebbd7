"""Blob store and idempotency store behaviour, identical on the local adapters and on S3/DynamoDB."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from moto import mock_aws

from accrue.adapters.aws.idempotency import DynamoIdempotencyStore
from accrue.adapters.aws.s3_blobs import MIN_PART_SIZE_BYTES, PrefixRoutedBlobStore, S3BlobStore
from accrue.adapters.local.blobs import LocalBlobStore
from accrue.adapters.sqlite.database import Database
from accrue.adapters.sqlite.idempotency import SqliteIdempotencyStore
from accrue.ports import BlobStore, IdempotencyStore, InProgress, Mismatch, Replay, Started
from tests.moto_support import TABLE_NAME, client, create_table, fake_aws_environment

BUCKET = "accrue-blobs-test"


@pytest.fixture(params=["local", "s3", "s3-two-buckets"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    with fake_aws_environment(), mock_aws():
        s3 = client("s3")
        s3.create_bucket(Bucket=BUCKET)
        store = S3BlobStore(s3, BUCKET, part_size_bytes=MIN_PART_SIZE_BYTES)
        if request.param == "s3":
            yield store
            return
        # The AWS wiring's layout: archived webhook payloads in a bucket of their own.
        s3.create_bucket(Bucket=f"{BUCKET}-archive")
        archive = S3BlobStore(s3, f"{BUCKET}-archive", part_size_bytes=MIN_PART_SIZE_BYTES)
        yield PrefixRoutedBlobStore(store, {"webhooks/": archive})


@pytest.fixture(params=["sqlite", "dynamodb"])
def idempotency(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IdempotencyStore]:
    if request.param == "sqlite":
        db = Database(tmp_path / "idem.db")
        db.migrate()
        yield SqliteIdempotencyStore(db, ttl_seconds=86_400, lock_seconds=60)
        db.close()
        return
    with fake_aws_environment(), mock_aws():
        dynamodb = client("dynamodb")
        create_table(dynamodb)
        yield DynamoIdempotencyStore(dynamodb, TABLE_NAME, ttl_seconds=86_400, lock_seconds=60)


# -- blobs ------------------------------------------------------------------------------------


def test_a_blob_reads_back_byte_for_byte_and_is_listed_under_its_prefix(blobs: BlobStore) -> None:
    location = blobs.put("payouts/2026-02/report.csv", b"Referrer ID,Total Amount\n", "text/csv")
    blobs.put("payouts/2026-03/report.csv", b"x")
    blobs.put("webhooks/stripe/evt_1.json", b"{}")
    assert "payouts/2026-02/report.csv" in location
    assert blobs.get("payouts/2026-02/report.csv") == b"Referrer ID,Total Amount\n"
    assert blobs.exists("payouts/2026-02/report.csv")
    assert blobs.list("payouts/") == ["payouts/2026-02/report.csv", "payouts/2026-03/report.csv"]
    assert blobs.list("") == [
        "payouts/2026-02/report.csv",
        "payouts/2026-03/report.csv",
        "webhooks/stripe/evt_1.json",
    ]
    assert blobs.get("webhooks/stripe/evt_1.json") == b"{}"
    assert blobs.list("nothing/") == []


def test_a_missing_blob_is_a_key_error_and_deleting_it_twice_is_harmless(blobs: BlobStore) -> None:
    blobs.put("a/b.txt", b"1")
    blobs.delete("a/b.txt")
    blobs.delete("a/b.txt")
    assert not blobs.exists("a/b.txt")
    with pytest.raises(KeyError):
        blobs.get("a/b.txt")
    with pytest.raises(KeyError):
        b"".join(blobs.iter_chunks("a/b.txt"))


@pytest.mark.parametrize("key", ["", "/", "../escape.txt", "a/../../b", "/etc/passwd"])
def test_a_key_that_could_escape_the_store_is_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        blobs.put(key, b"x")


def test_a_large_stream_is_stored_whole_and_read_back_in_chunks(blobs: BlobStore) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    blocks = 11  # more than two S3 parts of 5 MiB: a multipart upload with a short last part
    digest = hashlib.sha256()
    for _ in range(blocks):
        digest.update(block)
    blobs.put_stream("uploads/big.bin", (block for _ in range(blocks)))
    read = hashlib.sha256()
    sizes = []
    for chunk in blobs.iter_chunks("uploads/big.bin", chunk_size=3 << 20):
        read.update(chunk)
        sizes.append(len(chunk))
    assert read.hexdigest() == digest.hexdigest()
    assert sum(sizes) == blocks * len(block) and max(sizes) <= 3 << 20


def test_a_stream_that_fails_midway_leaves_no_object_behind(blobs: BlobStore) -> None:
    blobs.put("uploads/keep.bin", b"previous version")

    def failing() -> Iterator[bytes]:
        for _ in range(7):
            yield b"x" * (1 << 20)
        raise OSError("upstream connection reset")

    with pytest.raises(OSError):
        blobs.put_stream("uploads/keep.bin", failing())
    with pytest.raises(OSError):
        blobs.put_stream("uploads/new.bin", failing())
    assert blobs.get("uploads/keep.bin") == b"previous version"
    assert not blobs.exists("uploads/new.bin")


def test_an_empty_stream_stores_an_empty_object(blobs: BlobStore) -> None:
    blobs.put_stream("empty.bin", iter(()))
    assert blobs.get("empty.bin") == b""


# -- idempotency ------------------------------------------------------------------------------

T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


def test_a_key_starts_once_then_replays_the_stored_response(idempotency: IdempotencyStore) -> None:
    assert idempotency.begin("admin:a", "k1", "hash-1", T0) == Started()
    assert idempotency.begin("admin:a", "k1", "hash-1", T0 + timedelta(seconds=1)) == InProgress()
    idempotency.complete("admin:a", "k1", 201, b'{"ok":true}', T0)
    assert idempotency.begin("admin:a", "k1", "hash-1", T0 + timedelta(hours=1)) == Replay(201, b'{"ok":true}')


def test_the_same_key_with_another_request_is_a_mismatch(idempotency: IdempotencyStore) -> None:
    idempotency.begin("admin:a", "k1", "hash-1", T0)
    assert idempotency.begin("admin:a", "k1", "hash-2", T0) == Mismatch()
    idempotency.complete("admin:a", "k1", 200, b"{}", T0)
    assert idempotency.begin("admin:a", "k1", "hash-2", T0) == Mismatch()


def test_keys_are_scoped_to_their_caller(idempotency: IdempotencyStore) -> None:
    assert idempotency.begin("admin:a", "k1", "hash-1", T0) == Started()
    assert idempotency.begin("service:b", "k1", "hash-2", T0) == Started()
    # The separator inside a scope or a key cannot make two pairs collide.
    assert idempotency.begin("member:x#1", "k", "h", T0) == Started()
    assert idempotency.begin("member:x", "1#k", "h", T0) == Started()


def test_a_released_key_can_be_used_again_but_a_completed_one_is_kept(idempotency: IdempotencyStore) -> None:
    idempotency.begin("admin:a", "k1", "hash-1", T0)
    idempotency.release("admin:a", "k1")
    assert idempotency.begin("admin:a", "k1", "hash-2", T0) == Started()
    idempotency.complete("admin:a", "k1", 200, b"done", T0)
    idempotency.release("admin:a", "k1")
    assert idempotency.begin("admin:a", "k1", "hash-2", T0) == Replay(200, b"done")


def test_a_crashed_request_frees_its_key_after_the_lock_and_a_key_expires(idempotency: IdempotencyStore) -> None:
    assert idempotency.begin("admin:a", "k1", "hash-1", T0) == Started()
    assert idempotency.begin("admin:a", "k1", "hash-1", T0 + timedelta(seconds=59)) == InProgress()
    assert idempotency.begin("admin:a", "k1", "hash-1", T0 + timedelta(seconds=61)) == Started()
    idempotency.complete("admin:a", "k1", 200, b"first", T0)
    later = T0 + timedelta(days=1, seconds=1)
    assert idempotency.begin("admin:a", "k1", "hash-9", later) == Started()
