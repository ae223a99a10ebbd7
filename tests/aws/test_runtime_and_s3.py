"""The Lambda runtime's cold-start build (settings from the environment, the JWT secret from Secrets
Manager) and what S3 is left with after a failed streamed upload."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accrue.adapters.aws.s3_blobs import MIN_PART_SIZE_BYTES, S3BlobStore
from accrue.config import Settings
from accrue.entrypoints.lambdas import runtime
from tests.aws.conftest import Aws


def environment(aws: Aws, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    values = {
        "ACCRUE_BACKEND": "aws",
        "ACCRUE_TABLE_NAME": aws.settings.table_name or "",
        "ACCRUE_REPORTS_BUCKET": "accrue-reports-test",
        "ACCRUE_PAYMENTS_QUEUE_URL": aws.settings.payments_queue_url or "",
        **extra,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_the_jwt_secret_comes_from_secrets_manager_at_cold_start(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = aws.clients["secretsmanager"].create_secret(Name="accrue/jwt", SecretString="x" * 48)["ARN"]
    environment(aws, monkeypatch, ACCRUE_ENV="production", ACCRUE_JWT_SECRET_ARN=arn)
    built = runtime.build(Settings(), {"secretsmanager": aws.clients["secretsmanager"], **aws.clients})
    try:
        assert built.settings.jwt_secret == "x" * 48
        assert built.settings.backend == "aws" and built.database is None
    finally:
        built.close()


def test_a_weak_secret_is_refused_in_production(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = aws.clients["secretsmanager"].create_secret(Name="accrue/weak", SecretString="short")["ARN"]
    environment(aws, monkeypatch, ACCRUE_ENV="production", ACCRUE_JWT_SECRET_ARN=arn)
    with pytest.raises(ValueError, match="ACCRUE_JWT_SECRET_ARN"):
        runtime.build(Settings(), dict(aws.clients))


def test_the_aws_backend_needs_its_table_and_bucket_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCRUE_BACKEND", "aws")
    with pytest.raises(ValueError, match="ACCRUE_TABLE_NAME"):
        Settings()


def test_a_failed_streamed_upload_leaves_no_object_and_no_parts(aws: Aws) -> None:
    s3 = aws.clients["s3"]
    store = S3BlobStore(s3, "accrue-reports-test", prefix="reports", part_size_bytes=MIN_PART_SIZE_BYTES)

    def failing() -> Iterator[bytes]:
        for _ in range(12):
            yield b"r" * (1 << 20)
        raise OSError("the report generator crashed")

    with pytest.raises(OSError):
        store.put_stream("payouts/2026-03/report.csv", failing())
    assert "Contents" not in s3.list_objects_v2(Bucket="accrue-reports-test", Prefix="reports/")
    assert s3.list_multipart_uploads(Bucket="accrue-reports-test").get("Uploads", []) == []
    assert store.location("a/b.csv") == "s3://accrue-reports-test/reports/a/b.csv"
