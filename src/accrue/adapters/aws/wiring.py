"""The AWS half of the composition root: builds the AWS adapters that ``bootstrap()`` selects when
``ACCRUE_BACKEND=aws``. Clients are injected (tests pass moto clients) or created on first use, so
importing this module, or bootstrapping, does no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from accrue.adapters.aws.dynamodb_uow import DynamoUnitOfWork, Interested, Subscribers
from accrue.adapters.aws.eventbridge import EventBridgePublisher
from accrue.adapters.aws.idempotency import DynamoIdempotencyStore
from accrue.adapters.aws.queue_writer import DynamoQueueWriter, QueuedSendForwarder
from accrue.adapters.aws.s3_blobs import PrefixRoutedBlobStore, S3BlobStore
from accrue.adapters.aws.ses_notifier import SesEmailNotifier
from accrue.adapters.aws.sns_notifier import SnsNotifier
from accrue.adapters.aws.sqs_queue import SqsQueue
from accrue.config import Settings
from accrue.domain.notification_channels import Channel
from accrue.ports import BlobStore, IdempotencyStore, Notifier, Queue, UnitOfWork
from accrue.service_layer.batches import BatchWorker, PaymentBatches

# The keyword names bootstrap() accepts for injected clients.
CLIENT_NAMES: tuple[str, ...] = (
    "dynamodb",
    "sqs",
    "s3",
    "sns",
    "sesv2",
    "events",
    "stepfunctions",
    "secretsmanager",
)
# Logical queue names (as the service layer sends to them) -> the setting holding the URL.
QUEUE_SETTINGS: Mapping[str, str] = {
    "payments": "payments_queue_url",
    "notifications": "notifications_queue_url",
}
UowExtension = Callable[[DynamoUnitOfWork], None]
# Where the inbound-webhook receiver archives raw payloads (and GDPR erasure looks for them).
WEBHOOK_ARCHIVE_PREFIX = "webhooks/"


class AwsBackend:
    def __init__(self, settings: Settings, clients: Mapping[str, Any] | None = None) -> None:
        if not settings.table_name:
            raise ValueError("ACCRUE_TABLE_NAME: required when ACCRUE_BACKEND=aws")
        self.settings = settings
        self.table_name = settings.table_name
        self._clients: dict[str, Any] = dict(clients or {})
        self.extensions: list[UowExtension] = [self._attach_queue_writer]

    def client(self, service: str) -> Any:
        """The injected client for ``service``, or a new boto3 client (created once, on first use)."""
        found = self._clients.get(service)
        if found is None:
            import boto3  # imported here: a cold start that never needs a client never pays for it

            found = boto3.client(service, endpoint_url=self.settings.aws_endpoint_url)  # type: ignore[call-overload]
            self._clients[service] = found
        return found

    # -- store ----------------------------------------------------------------------------------

    def uow_factory(
        self,
        subscribers: Subscribers,
        clock: Callable[[], datetime],
        *,
        interested: Interested | None = None,
    ) -> Callable[..., UnitOfWork]:
        def factory(readonly: bool = False) -> UnitOfWork:
            return DynamoUnitOfWork(
                self.client("dynamodb"),
                self.table_name,
                subscribers,
                readonly=readonly,
                clock=clock,
                extensions=self.extensions,
                interested=interested,
            )

        return factory

    def add_repositories(self, extension: UowExtension) -> None:
        """Attach a feature's repositories to every unit of work (one callable per feature)."""
        self.extensions.append(extension)

    def _attach_queue_writer(self, uow: DynamoUnitOfWork) -> None:
        assert uow.session is not None
        uow.queues = DynamoQueueWriter(uow.session, known_queues=self.queue_names())

    def idempotency(self) -> IdempotencyStore:
        return DynamoIdempotencyStore(
            self.client("dynamodb"), self.table_name, ttl_seconds=self.settings.idempotency_ttl_seconds
        )

    # -- objects --------------------------------------------------------------------------------

    def bucket(self, setting: str) -> BlobStore:
        name = getattr(self.settings, setting)
        if not name:
            raise ValueError(f"ACCRUE_{setting.upper()}: required for this function")
        return S3BlobStore(self.client("s3"), str(name))

    def blobs(self) -> BlobStore:
        """The blob store the service layer writes to: reports and batch files in the reports
        bucket; archived webhook payloads (``webhooks/``) in the archive bucket when one is set."""
        reports = self.bucket("reports_bucket")
        if not self.settings.archive_bucket:
            return reports
        return PrefixRoutedBlobStore(reports, {WEBHOOK_ARCHIVE_PREFIX: self.bucket("archive_bucket")})

    # -- queues and notifications ---------------------------------------------------------------

    def queue_names(self) -> Sequence[str]:
        return [name for name, setting in QUEUE_SETTINGS.items() if getattr(self.settings, setting)]

    def queue_urls(self) -> dict[str, str]:
        return {name: str(getattr(self.settings, QUEUE_SETTINGS[name])) for name in self.queue_names()}

    @functools.cache  # noqa: B019 - one queue object per name for the life of the backend
    def queue(self, name: str) -> Queue:
        url = self.queue_urls().get(name)
        if url is None:
            raise ValueError(f"ACCRUE_{QUEUE_SETTINGS.get(name, name + '_queue_url').upper()}: not set")
        return SqsQueue(self.client("sqs"), url, name=name)

    def batch_submitter(self, batches: PaymentBatches) -> BatchWorker:
        """API uploads go to the S3 batch-file function through the uploads bucket."""
        from accrue.adapters.aws.batch_uploads import S3BatchSubmitter

        uploads = self.bucket("uploads_bucket")
        assert isinstance(uploads, S3BlobStore)
        return S3BatchSubmitter(batches, uploads)

    def forwarder(self) -> QueuedSendForwarder:
        return QueuedSendForwarder(self.client("dynamodb"), self.table_name, self.client("sqs"), self.queue_urls())

    def notifier(self) -> Notifier | None:
        if not self.settings.notifications_topic_arn:
            return None
        return SnsNotifier(self.client("sns"), self.settings.notifications_topic_arn)

    def notifiers(self) -> dict[Channel, Notifier]:
        """Every channel on the notifications topic, except e-mail when an SES sender is set."""
        sns = self.notifier()
        channels: dict[Channel, Notifier] = {channel: sns for channel in Channel} if sns is not None else {}
        if self.settings.ses_from_address:
            channels[Channel.EMAIL] = SesEmailNotifier(
                self.client("sesv2"),
                self.settings.ses_from_address,
                configuration_set=self.settings.ses_configuration_set,
            )
        return channels

    def event_publisher(self) -> EventBridgePublisher | None:
        if not self.settings.event_bus_name:
            return None
        return EventBridgePublisher(self.client("events"), self.settings.event_bus_name)
