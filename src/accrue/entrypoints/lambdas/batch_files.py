"""Batch payment files dropped into the uploads bucket (S3 ``ObjectCreated``, ``.csv`` keys).

One code path with the API upload, the CLI import and the local inbox: the file becomes a batch
identified by its SHA-256 (uploading the same file again finds the batch and creates nothing),
then is ingested as a stream in chunks, each chunk one store transaction plus its queue messages.

Nothing of the file is held in memory or on local disk: one streaming read computes the digest,
S3 copies the object into the batch store itself, and ingestion streams it again from there.
Keys in S3 events are URL-encoded (``+`` for a space); they are decoded before use. A file with a
bad header is refused (logged, counted) rather than retried: retrying cannot fix it.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

from accrue.entrypoints.lambdas.observability import count, instrumented, logger

CSV_SUFFIX = ".csv"
SOURCE = "s3"


def object_key(record: dict[str, Any]) -> str:
    return unquote_plus(str(record["s3"]["object"]["key"]))


def digest_of(s3: Any, bucket: str, key: str) -> tuple[str, int]:
    """SHA-256 and size of an object, read as a stream."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    try:
        for chunk in body.iter_chunks(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    return digest.hexdigest(), size


def ingest_object(app: Any, bucket: str, key: str) -> dict[str, Any]:
    from accrue.domain.errors import InvalidInput
    from accrue.service_layer.batches import blob_key, read_header

    components = app.services["payments"]
    store = app.blobs
    sha, size = digest_of(app.services["aws"].client("s3"), bucket, key)
    stored = blob_key(sha)
    if not store.exists(stored):
        store.copy_from(bucket, key, stored)
    try:
        read_header(store.iter_chunks(stored))
    except InvalidInput as exc:
        logger.warning("batch file refused", extra={"bucket": bucket, "key": key, "reason": str(exc)})
        count("BatchFilesRefused")
        return {"key": key, "refused": str(exc)}
    registered = components.batches.register_file(
        # Never read: the digest, the size and the stored copy are all given (see above).
        PurePosixPath(key),
        source=SOURCE,
        file_name=PurePosixPath(key).name,
        sha256=sha,
        size_bytes=size,
        check_header=False,
    )
    batch = components.batches.ingest(registered.batch.batch_id)
    count("BatchRowsAccepted", batch.accepted_rows if registered.created else 0)
    return {
        "key": key,
        "batchId": batch.batch_id,
        "created": registered.created,
        "status": str(batch.status),
        "totalRows": batch.total_rows,
        "acceptedRows": batch.accepted_rows,
        "rejectedRows": batch.rejected_rows,
        "duplicateRows": batch.duplicate_rows,
    }


@instrumented
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from accrue.entrypoints.lambdas import runtime

    app = runtime.application()
    results: list[dict[str, Any]] = []
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        bucket, key = str(record["s3"]["bucket"]["name"]), object_key(record)
        if not key.lower().endswith(CSV_SUFFIX):
            logger.info("not a batch file; ignored", extra={"key": key})
            continue
        results.append(ingest_object(app, bucket, key))
    return {"files": results}
