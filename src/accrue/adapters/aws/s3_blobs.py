"""S3 as the blob store (reports, archived webhook payloads, uploaded batch files).

S3 writes are atomic per object: a reader sees the whole object or none of it. ``put_stream``
sends a stream of unknown length as a multipart upload (parts of ``part_size_bytes``, at most one
part in memory), completes it only when the stream ended cleanly, and aborts it otherwise, so a
failed writer never leaves a half object behind (nor, after the abort, billable parts).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from accrue.ports import BlobStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# S3's smallest part (except the last) is 5 MiB.
MIN_PART_SIZE_BYTES = 5 * 1024 * 1024
DEFAULT_PART_SIZE_BYTES = 8 * 1024 * 1024
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def validate_key(key: str) -> str:
    """The same key rules as the local folder store, so a key works on both."""
    pure = PurePosixPath(key)
    if pure.is_absolute() or ".." in pure.parts or not key.strip("/"):
        raise ValueError(f"invalid blob key {key!r}")
    return "/".join(pure.parts)


class S3BlobStore(BlobStore):
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        prefix: str = "",
        part_size_bytes: int = DEFAULT_PART_SIZE_BYTES,
    ) -> None:
        if part_size_bytes < MIN_PART_SIZE_BYTES:
            raise ValueError(f"part_size_bytes must be at least {MIN_PART_SIZE_BYTES} (S3's minimum part)")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size_bytes = part_size_bytes

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data, ContentType=content_type)
        return self.location(key)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream") -> str:
        object_key = self._object_key(key)
        buffer = bytearray()
        stream = iter(chunks)
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in stream:
                buffer.extend(chunk)
                while len(buffer) >= self.part_size_bytes:
                    if upload_id is None:
                        upload_id = self.client.create_multipart_upload(
                            Bucket=self.bucket, Key=object_key, ContentType=content_type
                        )["UploadId"]
                    part = bytes(buffer[: self.part_size_bytes])
                    del buffer[: self.part_size_bytes]
                    parts.append(self._upload_part(object_key, upload_id, len(parts) + 1, part))
            if upload_id is None:
                # Smaller than one part: a single request is cheaper and just as atomic.
                self.client.put_object(Bucket=self.bucket, Key=object_key, Body=bytes(buffer), ContentType=content_type)
                return self.location(key)
            if buffer:
                parts.append(self._upload_part(object_key, upload_id, len(parts) + 1, bytes(buffer)))
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException:
            if upload_id is not None:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
            raise
        return self.location(key)

    def _upload_part(self, object_key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        response = self.client.upload_part(
            Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def get(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                raise KeyError(key) from None
            raise
        body = response["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def list(self, prefix: str) -> list[str]:
        found: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for response in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for entry in response.get("Contents", []):
                found.append(entry["Key"][len(self.prefix) :])
        return sorted(found)

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def copy_from(self, bucket: str, source_key: str, key: str) -> str:
        """Copy another bucket's object to ``key`` inside S3 (no bytes pass through this process;
        objects over 5 GB are copied in parts by boto3's managed transfer)."""
        self.client.copy({"Bucket": bucket, "Key": source_key}, self.bucket, self._object_key(key))
        return self.location(key)


class PrefixRoutedBlobStore(BlobStore):
    """One blob store over several buckets, chosen by key prefix (archived webhook payloads in the
    archive bucket, reports and batch files in the reports bucket), so each bucket keeps its own
    lifecycle and access while the service layer sees one store."""

    def __init__(self, default: BlobStore, routes: dict[str, BlobStore]) -> None:
        self.default = default
        # Longest prefix first, so a more specific route wins.
        self.routes = sorted(routes.items(), key=lambda r: len(r[0]), reverse=True)

    def _store(self, key: str) -> BlobStore:
        validate_key(key)
        return next((store for prefix, store in self.routes if key.startswith(prefix)), self.default)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        return self._store(key).put(key, data, content_type)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream") -> str:
        return self._store(key).put_stream(key, chunks, content_type)

    def get(self, key: str) -> bytes:
        return self._store(key).get(key)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return self._store(key).iter_chunks(key, chunk_size)

    def exists(self, key: str) -> bool:
        return self._store(key).exists(key)

    def delete(self, key: str) -> None:
        self._store(key).delete(key)

    def list(self, prefix: str) -> list[str]:
        found: set[str] = set()
        for route, store in self.routes:
            if route.startswith(prefix) or prefix.startswith(route):
                found.update(k for k in store.list(prefix) if k.startswith(route))
        found.update(k for k in self.default.list(prefix) if self._store(k) is self.default)
        return sorted(found)

    def location(self, key: str) -> str:
        return self._store(key).location(key)

    def copy_from(self, bucket: str, source_key: str, key: str) -> str:
        store = self._store(key)
        if not isinstance(store, S3BlobStore):
            raise TypeError("copies need an S3 store")
        return store.copy_from(bucket, source_key, key)

    @property
    def bucket(self) -> str:
        """The default store's bucket (batch files live there)."""
        if not isinstance(self.default, S3BlobStore):
            raise TypeError("the default store is not S3")
        return self.default.bucket

    @property
    def prefix(self) -> str:
        return self.default.prefix if isinstance(self.default, S3BlobStore) else ""
