"""Batch files uploaded through the API, on AWS: ingested by the S3 batch-file function.

Locally, ``BatchWorker.submit`` hands an uploaded batch to a background thread. Lambda keeps no
threads between requests (and API Gateway answers within 29 s), so on AWS the stored file is
copied, inside S3, into the uploads bucket; its ``ObjectCreated`` event runs the same ingestion as
a file dropped there directly. The batch id is the file's SHA-256, so the batch-file function finds
the batch the API registered and carries on with it; nothing is created twice.
"""

from __future__ import annotations

from accrue.adapters.aws.s3_blobs import PrefixRoutedBlobStore, S3BlobStore
from accrue.service_layer.batches import BatchWorker, PaymentBatches, blob_key

API_UPLOADS_PREFIX = "api"


class S3BatchSubmitter(BatchWorker):
    def __init__(self, batches: PaymentBatches, uploads: S3BlobStore) -> None:
        super().__init__(batches, inbox_dir=None)
        self.uploads = uploads

    def submit(self, batch_id: str) -> None:
        store = self.batches.blobs
        if not isinstance(store, S3BlobStore | PrefixRoutedBlobStore):
            raise TypeError("the batch store must be S3 for uploads to reach the batch-file function")
        self.uploads.copy_from(store.bucket, store.prefix + blob_key(batch_id), f"{API_UPLOADS_PREFIX}/{batch_id}.csv")
