"""The composition root: the only place that chooses and builds adapters.

``bootstrap(settings, **overrides)`` wires the same handlers to SQLite (one machine) or, later, to
the AWS adapters. Entrypoints receive the finished ``Application`` and never build adapters.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from accrue.adapters.inbound import build_registry
from accrue.adapters.local.blobs import LocalBlobStore
from accrue.adapters.local.http_sender import HttpxWebhookSender
from accrue.adapters.local.outbox_channels import LocalChannelOutbox, LocalOutboxNotifier
from accrue.adapters.local.sandbox_gateway import SandboxGateway
from accrue.adapters.local.smtp import SmtpNotifier
from accrue.adapters.local.templates import JinjaRenderer
from accrue.adapters.sqlite.database import Database
from accrue.adapters.sqlite.gdpr import purge_freed_storage as purge_sqlite_storage
from accrue.adapters.sqlite.idempotency import SqliteIdempotencyStore
from accrue.adapters.sqlite.queue import SqliteQueue
from accrue.adapters.sqlite.unit_of_work import SqliteUnitOfWork
from accrue.config import Settings
from accrue.domain import commands
from accrue.domain.notification_channels import Channel
from accrue.domain.payouts import month_before
from accrue.domain.referrals import VelocityRule
from accrue.domain.schedules import DAILY_TIER_REVIEW, MONTHLY_PAYOUT
from accrue.domain.webhooks import OUTBOUND_EVENT_TYPES, RetrySchedule
from accrue.ports import BlobStore, IdempotencyStore, Notifier, Queue, TemplateRenderer, UnitOfWork
from accrue.service_layer import campaigns as campaign_service
from accrue.service_layer import handlers, notifications, notify, payouts, referrals, webhooks_in, webhooks_out
from accrue.service_layer import payments as payment_service
from accrue.service_layer.batches import BatchWorker, PaymentBatches
from accrue.service_layer.campaigns import CAMPAIGN_COMMAND_HANDLERS, CAMPAIGN_EVENT_HANDLERS
from accrue.service_layer.dead_letters import DeadLetterSource, OutboxDeadLetters
from accrue.service_layer.gdpr import GDPR_COMMAND_HANDLERS, GDPR_EVENT_HANDLERS
from accrue.service_layer.gdpr import registry as gdpr_registry
from accrue.service_layer.messagebus import MessageBus
from accrue.service_layer.outbox_worker import OutboxWorker
from accrue.service_layer.payment_workflow_runner import PaymentWorkflowRunner, RunnerSettings
from accrue.service_layer.queue_worker import QueueDeadLetters, QueueWorker, payment_message_handler
from accrue.service_layer.scheduler import Scheduler

if TYPE_CHECKING:
    from accrue.adapters.aws.wiring import AwsBackend


def utc_now() -> datetime:
    return datetime.now(UTC)


def inject(handler: Callable[..., Any], dependencies: Mapping[str, Any]) -> Callable[..., Any]:
    """Bind the handler's keyword dependencies by parameter name (message and uow stay positional)."""
    params = inspect.signature(handler).parameters
    bound = {name: dep for name, dep in dependencies.items() if name in params}
    return functools.partial(handler, **bound) if bound else handler


BackgroundPart = Literal["all", "pipeline", "front"]
# The services that work through what commits leave behind (with the outbox worker).
PIPELINE_SERVICES = frozenset({"notification_dispatcher", "webhook_delivery"})


@dataclass
class Application:
    settings: Settings
    bus: MessageBus
    idempotency: IdempotencyStore
    clock: Callable[[], datetime]
    worker: OutboxWorker
    database: Database | None = None
    blobs: BlobStore | None = None
    services: dict[str, Any] = field(default_factory=dict)
    dead_letter_sources: dict[str, DeadLetterSource] = field(default_factory=dict)
    # Set by `accrue serve` in the HTTP process when the API's writes run in a writer process
    # (``entrypoints/writer.py``); None: they run in this process.
    writer: Any = None

    def start_background(self, part: BackgroundPart = "all", *, run_elsewhere: Collection[str] = ()) -> None:
        """Start the background services: ``all`` of them, or one ``part`` of them when they are
        split between processes: the ``pipeline`` (the outbox worker, notification sends and
        webhook deliveries, which work through what the writes commit) or the ``front`` (the
        rest: scheduler, payment consumers, batch files). Services named in ``run_elsewhere``
        (``"outbox"`` for the outbox worker) get no thread: the caller runs their rounds itself."""
        if self.settings.workers_enabled and part != "front" and "outbox" not in run_elsewhere:
            self.worker.start()
        for name, service in self.services.items():
            if (part == "front" and name in PIPELINE_SERVICES) or (
                part == "pipeline" and name not in PIPELINE_SERVICES
            ):
                continue
            if name in run_elsewhere:
                continue
            if name == "scheduler" and not self.settings.scheduler_enabled:
                continue
            if name != "scheduler" and not self.settings.workers_enabled:
                continue
            start = getattr(service, "start", None)
            if callable(start):
                start()

    def stop_background(self) -> None:
        for service in self.services.values():
            stop = getattr(service, "stop", None)
            if callable(stop):
                stop()
        self.worker.stop()

    def close(self) -> None:
        self.stop_background()
        if self.database is not None:
            self.database.close()


def event_handler_table() -> dict[str, dict[str, Any]]:
    """event name -> {stable handler name -> handler}. Names are stored in the outbox."""
    table = _core_event_handlers()
    for event_name, subscribers in CAMPAIGN_EVENT_HANDLERS.items():
        table.setdefault(event_name, {}).update(subscribers)
    for event_name, subscribers in GDPR_EVENT_HANDLERS.items():
        table.setdefault(event_name, {}).update(subscribers)
    for event_name, subscribers in webhooks_out.EVENT_HANDLERS.items():
        table.setdefault(event_name, {}).update(subscribers)
    return table


def event_interest(clock: Callable[[], datetime] = utc_now) -> dict[str, Callable[[UnitOfWork, str], bool]]:
    """Subscribers that can tell, inside the committing transaction, that they have nothing to do
    with an event (handler name -> predicate): no outbox row is written for them."""
    return {
        "award_milestone_bonus": lambda uow, event_name: campaign_service.milestone_campaign_running(uow, clock()),
        # What enqueue_deliveries would find: an enabled endpoint subscribed to the event's type.
        "deliver_webhooks": lambda uow, event_name: (
            event_name in OUTBOUND_EVENT_TYPES
            and bool(uow.webhook_endpoints.subscribed_to(OUTBOUND_EVENT_TYPES[event_name]))
        ),
    }


# Of those, the ones whose answer holds for a whole write transaction: which endpoints listen can
# change only by an endpoint write, which clears the transaction's memo (as any rollback does). The
# milestone campaign's answer depends on the time, and on campaigns, which do not: asked per commit.
STEADY_INTEREST = frozenset({"deliver_webhooks"})


def _core_event_handlers() -> dict[str, dict[str, Any]]:
    return {
        "TierUpgraded": {"notify_tier_upgraded": notifications.notify_tier_upgraded},
        "MilestonesReached": {"notify_milestones_reached": notifications.notify_milestones_reached},
        "ReferralSignedUp": {"notify_referral_signed_up": referrals.notify_referral_signed_up},
        "PayoutCompleted": {"notify_payout_completed": payouts.notify_payout_completed},
    }


def _aws_backend(settings: Settings, overrides: Mapping[str, Any]) -> AwsBackend | None:
    """The AWS adapters when ``ACCRUE_BACKEND=aws`` (clients injected by keyword: ``dynamodb=`` ...)."""
    if settings.backend != "aws":
        return None
    from accrue.adapters.aws.wiring import CLIENT_NAMES, AwsBackend  # boto3 only when AWS is chosen

    return AwsBackend(settings, {name: overrides[name] for name in CLIENT_NAMES if name in overrides})


def bootstrap(settings: Settings | None = None, **overrides: Any) -> Application:
    settings = settings or Settings()
    clock: Callable[[], datetime] = overrides.get("clock", utc_now)
    renderer = overrides.get("renderer") or JinjaRenderer()
    aws = _aws_backend(settings, overrides)
    blobs = overrides.get("blobs") or (aws.blobs() if aws else LocalBlobStore(settings.blob_dir))

    database: Database | None = None
    if aws is None:
        database = overrides.get("database") or Database(settings.db, synchronous=settings.sqlite_synchronous)
        database.migrate()

    bus_ref: dict[str, MessageBus] = {}
    worker_ref: dict[str, OutboxWorker] = {}

    def sqlite_uow_factory(readonly: bool = False) -> UnitOfWork:
        assert database is not None
        worker = worker_ref.get("worker")
        return SqliteUnitOfWork(
            database,
            bus_ref["bus"].subscribers,
            readonly=readonly,
            on_commit=worker.wake if worker is not None else None,
            clock=clock,
            interested=bus_ref["bus"].interested,
            steady=bus_ref["bus"].interest_is_steady,
        )

    uow_factory: Callable[..., UnitOfWork] = (
        aws.uow_factory(
            lambda name: bus_ref["bus"].subscribers(name),
            clock,
            interested=lambda handler, event, uow: bus_ref["bus"].interested(handler, event, uow),
        )
        if aws
        else sqlite_uow_factory
    )

    # The notification dispatcher is made after the bus (it needs the channels); the event handlers
    # that store notifications reach it through this.
    dispatcher_ref: dict[str, notify.NotificationDispatcher] = {}
    dependencies: dict[str, Any] = {
        "store_notification": lambda uow, notification, dedupe_key: dispatcher_ref["dispatcher"].store(
            uow, notification, dedupe_key
        ),
        "clock": clock,
        "renderer": renderer,
        "settings": handlers.Settings(welcome_bonus_points=settings.welcome_bonus_points),
        "uow_factory": uow_factory,
        "blobs": blobs,
        "gdpr_registry": gdpr_registry,
        # Erased bytes must leave the SQLite file (WAL frames); DynamoDB deletes for good by itself.
        "purge_freed_storage": (lambda: purge_sqlite_storage(database)) if database is not None else (lambda: True),
        "referral_velocity": VelocityRule(
            max_signups=settings.referral_velocity_max_signups,
            window_seconds=settings.referral_velocity_window_seconds,
        ),
        "payout_settings": payouts.PayoutSettings(chunk_size=settings.payout_chunk_size),
        "webhook_retry_schedule": RetrySchedule(tuple(settings.webhook_retry_schedule_seconds)),
    }
    dependencies.update(overrides.get("dependencies", {}))

    command_table: dict[type[commands.Command], Any] = dict(handlers.COMMAND_HANDLERS)
    command_table.update(CAMPAIGN_COMMAND_HANDLERS)
    command_table.update(GDPR_COMMAND_HANDLERS)
    command_table.update(referrals.COMMAND_HANDLERS)
    command_table.update(payouts.COMMAND_HANDLERS)
    command_table.update(payment_service.COMMAND_HANDLERS)
    command_table.update(notify.COMMAND_HANDLERS)
    command_handlers = {cmd: inject(h, dependencies) for cmd, h in command_table.items()}
    event_handlers = {
        name: {handler_name: inject(h, dependencies) for handler_name, h in table.items()}
        for name, table in event_handler_table().items()
    }
    publisher = aws.event_publisher() if aws else None
    if publisher is not None:
        from accrue.adapters.aws.eventbridge import HANDLER_NAME, PUBLISHED_EVENTS

        for event_name in PUBLISHED_EVENTS:
            event_handlers.setdefault(event_name, {})[HANDLER_NAME] = publisher
    bus = MessageBus(
        uow_factory, command_handlers, event_handlers, interest=event_interest(clock), steady_interest=STEADY_INTEREST
    )
    bus_ref["bus"] = bus
    worker = OutboxWorker(
        bus,
        clock,
        max_attempts=settings.outbox_max_attempts,
        base_delay_seconds=settings.outbox_base_delay_seconds,
        poll_seconds=settings.outbox_poll_seconds,
        transaction_group=database.group if database is not None else None,
        others_waiting=database.writers_waiting if database is not None else None,
        linger_seconds=settings.worker_linger_seconds,
    )
    worker_ref["worker"] = worker
    idempotency: IdempotencyStore
    if aws is not None:
        idempotency = aws.idempotency()
    else:
        assert database is not None
        idempotency = SqliteIdempotencyStore(database, ttl_seconds=settings.idempotency_ttl_seconds)
    application = Application(
        settings=settings,
        bus=bus,
        idempotency=idempotency,
        clock=clock,
        worker=worker,
        database=database,
        blobs=blobs,
    )
    application.dead_letter_sources["outbox"] = OutboxDeadLetters(bus, clock, worker.wake)

    scheduler = Scheduler(uow_factory, clock)
    scheduler.register(DAILY_TIER_REVIEW, lambda due: bus.handle(commands.ReviewTiers()))
    # Fired at 02:00 UTC on the 1st: pays the month that just ended (derived from the due instant).
    scheduler.register(
        MONTHLY_PAYOUT,
        lambda due: payouts.run_payout(
            uow_factory, blobs, clock, month_before(due), chunk_size=settings.payout_chunk_size
        ),
    )
    application.services["scheduler"] = scheduler
    if aws is not None:
        application.services["aws"] = aws
    _wire_webhooks_and_channels(application, uow_factory, database, renderer, overrides)
    dispatcher_ref["dispatcher"] = application.services["notification_dispatcher"]
    _wire_payments(application, uow_factory, database, overrides)
    return application


def _wire_webhooks_and_channels(
    application: Application,
    uow_factory: Callable[..., UnitOfWork],
    database: Database | None,
    renderer: TemplateRenderer,
    overrides: Mapping[str, Any],
) -> None:
    """Inbound webhook adapters, the outbound delivery worker and the notification channels."""
    settings, clock, bus = application.settings, application.clock, application.bus
    adapters = overrides.get("inbound_adapters") or build_registry(
        stripe_secrets=settings.stripe_webhook_secrets,
        shopify_secrets=settings.shopify_webhook_secrets,
        standard_sources=settings.standard_webhook_secrets,
        tolerance_seconds=settings.webhook_tolerance_seconds,
    )
    assert application.blobs is not None
    application.services["webhook_receiver"] = webhooks_in.WebhookReceiver(
        adapters, uow_factory, application.blobs, clock, bus.command_handlers[commands.CreateOrder]
    )
    sender = overrides.get("webhook_sender") or HttpxWebhookSender(
        timeout_seconds=settings.webhook_timeout_seconds,
        allow_loopback=settings.webhooks_allow_loopback,
        allow_http=settings.env != "production",
    )
    application.services["webhook_endpoints"] = webhooks_out.WebhookEndpoints(uow_factory, sender, clock)
    application.services["webhook_delivery"] = webhooks_out.WebhookDeliveryWorker(
        uow_factory,
        sender,
        clock,
        RetrySchedule(tuple(settings.webhook_retry_schedule_seconds)),
        # Longer than one request can take, so a leased delivery is never sent twice at once.
        lease_seconds=settings.webhook_timeout_seconds * 2 + 30,
        poll_seconds=settings.webhook_poll_seconds,
    )
    aws: AwsBackend | None = application.services.get("aws")
    notifiers: dict[Channel, Notifier] = {}
    if aws is not None:
        # On AWS the channels leave through the notifications topic (filtered by a channel attribute),
        # e-mail through SES instead when a verified sender is configured (ACCRUE_SES_FROM_ADDRESS).
        notifiers = aws.notifiers()
    else:
        assert database is not None
        notifiers = _local_notifiers(application, database)
    notifiers.update(overrides.get("notifiers", {}))
    # Local outboxes write to this database: their sends and the records of them can share one
    # transaction. Any channel on the network (SMTP, SNS) is never called inside one.
    all_local = database is not None and all(isinstance(n, LocalOutboxNotifier) for n in notifiers.values())
    application.services["notification_dispatcher"] = notify.NotificationDispatcher(
        uow_factory,
        notifiers,
        renderer,
        clock,
        max_attempts=settings.notification_max_attempts,
        retry_base_seconds=settings.notification_retry_base_seconds,
        poll_seconds=settings.notification_poll_seconds,
        transaction_group=database.group if all_local and database is not None else None,
        linger_seconds=settings.worker_linger_seconds,
    )


def _local_notifiers(application: Application, database: Database) -> dict[Channel, Notifier]:
    settings = application.settings
    outbox = LocalChannelOutbox(database)
    application.services["channel_outbox"] = outbox
    return {
        Channel.EMAIL: (
            SmtpNotifier(
                settings.smtp_host,
                settings.smtp_port,
                settings.smtp_from,
                username=settings.smtp_username,
                password=settings.smtp_password,
                starttls=settings.smtp_starttls,
                timeout_seconds=settings.smtp_timeout_seconds,
            )
            if settings.smtp_host
            else LocalOutboxNotifier(outbox, Channel.EMAIL)
        ),
        Channel.SMS: LocalOutboxNotifier(outbox, Channel.SMS),
        Channel.PUSH: LocalOutboxNotifier(outbox, Channel.PUSH),
    }


def _wire_payments(
    application: Application,
    uow_factory: Callable[..., UnitOfWork],
    database: Database | None,
    overrides: Mapping[str, Any],
) -> None:
    """The payment queue and its worker, the gateway, the workflow runner and batch ingestion."""
    settings, clock = application.settings, application.clock
    aws: AwsBackend | None = application.services.get("aws")
    queue: Queue = overrides.get("payment_queue") or (
        aws.queue(payment_service.PAYMENTS_QUEUE)
        if aws is not None
        else SqliteQueue(
            database,  # type: ignore[arg-type]
            payment_service.PAYMENTS_QUEUE,
            visibility_timeout_seconds=settings.payment_queue_visibility_seconds,
            max_receive_count=settings.payment_queue_max_receive_count,
            retention_seconds=settings.payment_queue_retention_seconds,
        )
    )
    gateway = overrides.get("payment_gateway") or SandboxGateway()
    runner = PaymentWorkflowRunner(
        uow_factory,
        gateway,
        clock,
        RunnerSettings(
            retry_interval_seconds=settings.payment_retry_interval_seconds,
            lease_seconds=settings.payment_lease_seconds,
            max_amount=settings.payment_max_amount,
        ),
    )
    worker = QueueWorker(
        queue,
        payment_message_handler(runner, retry_failed_after_seconds=settings.payment_queue_visibility_seconds),
        name="payment-worker",
        threads=settings.payment_workers,
        poll_seconds=settings.payment_poll_seconds,
        visibility_timeout_seconds=settings.payment_queue_visibility_seconds,
    )
    assert application.blobs is not None
    batches = PaymentBatches(uow_factory, application.blobs, clock, chunk_rows=settings.payment_batch_chunk_rows)
    batch_worker = (
        aws.batch_submitter(batches)
        if aws is not None and settings.uploads_bucket
        else BatchWorker(batches, inbox_dir=settings.inbox_dir, poll_seconds=settings.inbox_poll_seconds)
    )
    application.services["payments"] = payment_service.PaymentComponents(
        queue, gateway, runner, worker, batches, batch_worker
    )
    application.services["payment_batches"] = batch_worker
    application.services["payment_worker"] = worker
    application.dead_letter_sources["queue"] = QueueDeadLetters(queue, "payment_workflow")
