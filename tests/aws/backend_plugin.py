"""Run in-process test suites on the AWS backend: ``pytest -p tests.aws.backend_plugin tests/integration``.

The shared ``app`` fixture bootstraps with ``tests.conftest.bootstrap``; this plugin swaps that for
one that starts moto, creates the table, queues, bucket and topic, and bootstraps with
``ACCRUE_BACKEND=aws`` on those clients. Every test written against the API and the service layer
then runs unchanged on DynamoDB, SQS, S3 and SNS. Tests that open the SQLite file itself (or
assume SQLite's row numbers) do not apply and fail or skip.

Last run, ``PYTHONPATH=. pytest -p tests.aws.backend_plugin tests/integration``: 406 passed, 52
skipped (they need the SQLite database), 21 failed, every one of them reading the SQLite file to
count rows (``test_core_api_errors``, one campaign test) or expecting SQLite's outbox row number 1
(one cell of the auth matrix).
"""

from __future__ import annotations

import os
from typing import Any

from moto import mock_aws

import tests.conftest as shared
from accrue.bootstrap import Application
from accrue.config import Settings
from tests.aws.conftest import make_queue
from tests.moto_support import FAKE_CREDENTIALS, client, create_table

_sqlite_bootstrap = shared.bootstrap


def aws_bootstrap(settings: Settings, **overrides: Any) -> Application:
    os.environ.update(FAKE_CREDENTIALS)
    mock = mock_aws()
    mock.start()
    clients = {name: client(name) for name in ("dynamodb", "sqs", "s3", "sns", "events")}
    create_table(clients["dynamodb"], "accrue-suite")
    payments, _ = make_queue(clients["sqs"], "accrue-payments-suite")
    notifications, _ = make_queue(clients["sqs"], "accrue-notifications-suite")
    clients["s3"].create_bucket(Bucket="accrue-reports-suite")
    topic = clients["sns"].create_topic(Name="accrue-notifications-suite")["TopicArn"]
    on_aws = settings.model_copy(
        update={
            "backend": "aws",
            "table_name": "accrue-suite",
            "reports_bucket": "accrue-reports-suite",
            "payments_queue_url": payments,
            "notifications_queue_url": notifications,
            "notifications_topic_arn": topic,
        }
    )
    application = _sqlite_bootstrap(on_aws, **clients, **overrides)
    close = application.close

    def close_and_stop() -> None:
        try:
            close()
        finally:
            mock.stop()

    application.close = close_and_stop  # type: ignore[method-assign]
    return application


shared.bootstrap = aws_bootstrap  # type: ignore[assignment]
