"""Ports: what the service layer needs from the outside world. Adapters implement them."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from accrue.domain.audit import AuditEntry, AuditRecord
from accrue.domain.campaigns import Campaign, Occasion
from accrue.domain.events import Event
from accrue.domain.gdpr import ErasureSubject
from accrue.domain.ledger import Transfer
from accrue.domain.members import Member
from accrue.domain.notification_channels import (
    ChannelMessage,
    PendingSend,
    PlannedSend,
    Preferences,
    QueuedNotification,
    SendRecord,
    SendStatus,
)
from accrue.domain.notifications import Notification
from accrue.domain.orders import Order
from accrue.domain.payments import BatchRowIssue, Payment, PaymentBatch, PaymentRow, PaymentStatus
from accrue.domain.payouts import PayoutLine, PayoutRun
from accrue.domain.referrals import Referral, ReferrerSummary, RewardStatus
from accrue.domain.webhooks import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    InboundEvent,
    ReceivedWebhook,
    WebhookEndpoint,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None = None


class Clock(Protocol):
    def now(self) -> datetime: ...


class MemberRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, member: Member) -> None:
        """Insert a new member; a taken email or referral code raises Conflict."""

    @abc.abstractmethod
    def get(self, user_id: str) -> Member | None: ...

    @abc.abstractmethod
    def get_by_email(self, email: str) -> Member | None: ...

    @abc.abstractmethod
    def get_by_referral_code(self, code: str) -> Member | None: ...

    @abc.abstractmethod
    def get_many(self, user_ids: Sequence[str]) -> list[Member]: ...

    @abc.abstractmethod
    def save(self, member: Member) -> None:
        """Persist changed fields and append the member's new transfers (version-guarded)."""

    def save_all(self, members: Sequence[Member]) -> None:
        """``save`` each; stores that can write many rows in one statement override it."""
        for member in members:
            self.save(member)

    @abc.abstractmethod
    def iter_ids(self, batch_size: int = 500) -> Iterator[str]: ...


class LedgerRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, transfer_id: str) -> Transfer | None: ...

    @abc.abstractmethod
    def history(self, member_id: str, limit: int, cursor: str | None) -> Page[Transfer]:
        """Newest first."""

    @abc.abstractmethod
    def existing_ids(self, transfer_ids: Sequence[str]) -> set[str]: ...

    @abc.abstractmethod
    def append_many(self, transfers: Sequence[Transfer]) -> None:
        """Bulk append (used by imports); each transfer id may appear once, ever."""

    @abc.abstractmethod
    def check(self) -> list[str]:
        """Every inconsistency between stored balances and postings; empty when all is well."""


class OrderRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, order: Order) -> None: ...

    @abc.abstractmethod
    def get(self, order_id: str) -> Order | None: ...

    @abc.abstractmethod
    def list(self, user_id: str | None, status: str | None, limit: int, cursor: str | None) -> Page[Order]: ...

    @abc.abstractmethod
    def count_for_user(self, user_id: str) -> int: ...


class NotificationRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, notification: Notification, dedupe_key: str, *, queue: bool = True) -> bool:
        """Store once per de-duplication key; False when it was already there. ``queue``: queue it
        for channel delivery in the same transaction (False: the caller plans its sends itself, in
        that transaction)."""

    @abc.abstractmethod
    def list(self, user_id: str | None, limit: int, cursor: str | None) -> Page[Notification]: ...


class ImportRepository(abc.ABC):
    """Progress of bulk point imports, one per file (by SHA-256)."""

    @abc.abstractmethod
    def start(self, file_sha256: str, file_name: str, now: datetime) -> tuple[str, int]:
        """(status, last line already done), creating the record if new."""

    @abc.abstractmethod
    def record_progress(self, file_sha256: str, last_line: int, awarded: int, skipped: int, now: datetime) -> None: ...

    @abc.abstractmethod
    def finish(self, file_sha256: str, now: datetime) -> None: ...

    def lines_done(self, file_sha256: str) -> int | None:
        """The last line recorded as done, read in the caller's transaction; None when this store
        cannot tell cheaply (callers then check every row against the ledger)."""
        return None


class ReferralRepository(abc.ABC):
    """Referrals and the referrer counters that live on every member from enrolment."""

    @abc.abstractmethod
    def member_with_email_identity(self, identity: str) -> str | None:
        """The id of a member whose email delivers to the same mailbox (see domain.referrals)."""

    @abc.abstractmethod
    def increment_referral_count(self, referrer_id: str) -> int:
        """Atomically add one to the referrer's count; returns the count after."""

    @abc.abstractmethod
    def add_to_total_rewards(self, referrer_id: str, delta_cents: int) -> int:
        """Atomically add (or, when negative, remove) cents; returns the total after."""

    @abc.abstractmethod
    def count_since(self, referrer_id: str, since: datetime) -> int: ...

    @abc.abstractmethod
    def add(self, referral: Referral) -> None:
        """Insert; a member already referred raises Conflict."""

    @abc.abstractmethod
    def get(self, referral_id: str) -> Referral | None: ...

    @abc.abstractmethod
    def save_review(self, referral: Referral, expected_status: RewardStatus) -> None:
        """Persist a review decision; ConcurrencyConflict when the status changed meanwhile."""

    @abc.abstractmethod
    def summary(self, referrer_id: str) -> ReferrerSummary | None: ...

    @abc.abstractmethod
    def list_for_referrer(self, referrer_id: str, limit: int, cursor: str | None) -> Page[Referral]:
        """Newest first."""

    @abc.abstractmethod
    def list_held(self, limit: int, cursor: str | None) -> Page[Referral]:
        """Rewards waiting for review, oldest first."""


class PayoutRepository(abc.ABC):
    """Payout runs and the work they do on rewards, in chunks so memory and locks stay small."""

    @abc.abstractmethod
    def start_run(self, run: PayoutRun) -> PayoutRun:
        """Insert the run, or return the month's existing one (counting another attempt unless completed)."""

    @abc.abstractmethod
    def get_run(self, month: str) -> PayoutRun | None: ...

    @abc.abstractmethod
    def list_runs(self, limit: int, cursor: str | None) -> Page[PayoutRun]:
        """Newest month first."""

    @abc.abstractmethod
    def assign_chunk(self, run_id: str, cutoff: datetime, limit: int) -> int:
        """Claim up to ``limit`` unclaimed pending rewards created before ``cutoff`` and add them to the
        run's per-referrer lines, atomically; 0 once the run's set is frozen or nothing is left."""

    @abc.abstractmethod
    def finish_assigning(self, run_id: str, now: datetime) -> None:
        """Freeze the run's set of rewards (phase assigning -> reporting)."""

    @abc.abstractmethod
    def iter_lines(self, run_id: str) -> Iterator[PayoutLine]:
        """The run's totals per referrer, streamed in referrer order (never all in memory)."""

    @abc.abstractmethod
    def record_report(
        self,
        run_id: str,
        report_key: str,
        location: str,
        referrers: int,
        rewards: int,
        total_cents: int,
        now: datetime,
    ) -> None:
        """Store the report's place and totals (phase -> marking)."""

    @abc.abstractmethod
    def mark_paid_chunk(self, run_id: str, paid_at: datetime, limit: int) -> int:
        """Mark up to ``limit`` of the run's still pending rewards paid; returns how many."""

    @abc.abstractmethod
    def complete(self, run_id: str, now: datetime) -> bool:
        """Record the run completed; False when it already was (another process finished it)."""

    @abc.abstractmethod
    def record_failure(self, run_id: str, error: str, now: datetime) -> None: ...


class ScheduleRunRepository(abc.ABC):
    @abc.abstractmethod
    def last_fire(self, name: str) -> datetime | None: ...

    @abc.abstractmethod
    def record(self, name: str, fire_at: datetime, status: str, error: str | None) -> None: ...


@dataclass(slots=True)
class OutboxMessage:
    message_id: int
    event_id: str
    event_name: str
    handler: str
    payload: dict[str, Any]
    attempts: int
    status: str
    last_error: str | None = None
    created_at: datetime | None = None


class OutboxRepository(abc.ABC):
    @abc.abstractmethod
    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        """Lease up to ``limit`` due messages so no other worker takes them meanwhile."""

    @abc.abstractmethod
    def due(self, now: datetime, limit: int) -> list[OutboxMessage]:
        """Up to ``limit`` pending messages due at ``now``, earliest due first, without a lease: for a
        consumer that handles them in the write transaction it read them in, which no other writer
        can enter meanwhile."""

    @abc.abstractmethod
    def get(self, message_id: int) -> OutboxMessage | None: ...

    @abc.abstractmethod
    def mark_done(self, message_id: int) -> None: ...

    @abc.abstractmethod
    def mark_failed(self, message_id: int, error: str, retry_at: datetime | None) -> None:
        """retry_at None: dead-lettered."""

    @abc.abstractmethod
    def dead_letters(self, limit: int) -> list[OutboxMessage]: ...

    @abc.abstractmethod
    def redrive(self, message_id: int, now: datetime) -> bool: ...


class UnitOfWork(abc.ABC):
    """One atomic change. Events recorded by aggregates are written to the outbox on commit."""

    members: MemberRepository
    ledger: LedgerRepository
    orders: OrderRepository
    notifications: NotificationRepository
    outbox: OutboxRepository
    imports: ImportRepository
    schedule_runs: ScheduleRunRepository
    payments: PaymentRepository
    payment_batches: PaymentBatchRepository
    audit: AuditLogRepository
    queues: QueueWriter
    campaigns: CampaignRepository
    personal_data: PersonalDataRepository
    webhook_events: WebhookEventRepository
    webhook_endpoints: WebhookEndpointRepository
    webhook_deliveries: WebhookDeliveryRepository
    notification_preferences: PreferenceRepository
    notification_sends: NotificationSendRepository
    referrals: ReferralRepository
    payouts: PayoutRepository

    def __init__(self) -> None:
        self._seen: list[Member] = []
        self._seen_ids: set[int] = set()  # tracking is O(1): bulk imports track 1 000s of members
        self._extra_events: list[Event] = []

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(self, *args: object) -> None:
        self.rollback()

    def track(self, member: Member) -> Member:
        if id(member) not in self._seen_ids:
            self._seen_ids.add(id(member))
            self._seen.append(member)
        return member

    def emit(self, event: Event) -> None:
        """Record an event that belongs to no member aggregate (e.g. OrderCreated)."""
        self._extra_events.append(event)

    def pending_events(self) -> list[Event]:
        found: list[Event] = []
        for member in self._seen:
            found.extend(member.events)
        found.extend(self._extra_events)
        return found

    def commit(self) -> None:
        # Tracking a member means "I changed it": every tracked member is saved (version-guarded).
        self.members.save_all(self._seen)
        self._commit(self.pending_events())
        for member in self._seen:
            member.events.clear()
            member.new_transfers.clear()
        self._extra_events.clear()

    @abc.abstractmethod
    def _commit(self, events: Sequence[Event]) -> None:
        """Write the events to the outbox and commit atomically."""

    @abc.abstractmethod
    def rollback(self) -> None: ...


class IdempotencyOutcome(abc.ABC):  # noqa: B024 - a closed family of results
    pass


@dataclass(frozen=True, slots=True)
class Started(IdempotencyOutcome):
    pass


@dataclass(frozen=True, slots=True)
class Replay(IdempotencyOutcome):
    status_code: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Mismatch(IdempotencyOutcome):
    pass


@dataclass(frozen=True, slots=True)
class InProgress(IdempotencyOutcome):
    pass


class IdempotencyStore(abc.ABC):
    """Stripe semantics: same key and body replays, another body mismatches, a concurrent one waits."""

    @abc.abstractmethod
    def begin(self, scope: str, key: str, request_hash: str, now: datetime) -> IdempotencyOutcome: ...

    @abc.abstractmethod
    def complete(self, scope: str, key: str, status_code: int, body: bytes, now: datetime) -> None: ...

    @abc.abstractmethod
    def release(self, scope: str, key: str) -> None:
        """Forget an in-progress key whose request failed before changing anything."""


class BlobStore(abc.ABC):
    """Objects by key (a local folder, or S3). Keys are ``/``-separated relative paths."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store the object atomically (readers see all of it or nothing); returns its location."""

    @abc.abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream") -> str:
        """Store an object written in pieces without holding it in memory; atomic like ``put``."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; KeyError when absent."""

    @abc.abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the object; KeyError when absent."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]: ...

    @abc.abstractmethod
    def location(self, key: str) -> str:
        """A human-readable location (file path or s3:// URL)."""


class TemplateRenderer(Protocol):
    def render(self, template: str, context: Mapping[str, Any]) -> str: ...


# -- queues ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One delivery of a message. ``receipt_handle`` names this delivery: delete or delay with it."""

    message_id: str
    body: dict[str, Any]
    receipt_handle: str
    # 1 on the first delivery; SQS ApproximateReceiveCount.
    receive_count: int
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    message_id: str
    body: dict[str, Any]
    receive_count: int
    last_error: str | None
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Approximate depths (SQS ApproximateNumberOfMessages, ...NotVisible, ...Delayed; the DLQ's)."""

    visible: int
    in_flight: int
    delayed: int
    dead: int


class Queue(abc.ABC):
    """A durable, at-least-once queue with SQS semantics; the SQLite adapter is the local stand-in.

    - A received message is hidden for the visibility timeout and delivered again unless deleted.
    - Every delivery raises the receive count. A message already received ``max_receive_count``
      times moves to the dead-letter queue instead of being delivered again (SQS redrive policy,
      ``maxReceiveCount``); ``redrive`` moves it back with a fresh count.
    - Messages older than the retention period are dropped (SQS ``MessageRetentionPeriod``).
    - Order is not guaranteed and a message may arrive twice: consumers must be idempotent.
    Bodies are JSON objects.
    """

    name: str
    max_receive_count: int

    def send(self, body: Mapping[str, Any], *, delay_seconds: float = 0.0) -> str:
        """Send one message, visible after ``delay_seconds``; returns its id."""
        return self.send_batch([body], delay_seconds=delay_seconds)[0]

    @abc.abstractmethod
    def send_batch(self, bodies: Sequence[Mapping[str, Any]], *, delay_seconds: float = 0.0) -> list[str]:
        """Send many messages (SQS: SendMessageBatch, ten at a time); their ids, in order."""

    @abc.abstractmethod
    def receive(
        self,
        max_messages: int = 10,
        *,
        visibility_timeout_seconds: float | None = None,
        wait_seconds: float = 0.0,
    ) -> list[QueueMessage]:
        """Up to ``max_messages`` visible messages, hidden for the visibility timeout (the queue's
        default when None); waits up to ``wait_seconds`` for one to arrive (long polling)."""

    @abc.abstractmethod
    def delete(self, receipt_handle: str) -> None:
        """Acknowledge: the message is done. A stale handle (delivered again since) changes nothing."""

    def delete_batch(self, receipt_handles: Sequence[str]) -> None:
        """Acknowledge several deliveries (SQS: DeleteMessageBatch)."""
        for handle in receipt_handles:
            self.delete(handle)

    @abc.abstractmethod
    def change_visibility(self, receipt_handle: str, timeout_seconds: float, *, error: str | None = None) -> None:
        """Deliver the message again after ``timeout_seconds`` (0: at once) - a delayed retry.

        ``error`` says why; adapters that can keep it (SQLite) show it in the dead-letter view.
        """

    @abc.abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetterMessage]: ...

    @abc.abstractmethod
    def redrive(self, message_id: str) -> bool:
        """Move one dead letter back to the queue with a receive count of 0; False when absent."""

    @abc.abstractmethod
    def counts(self) -> QueueCounts: ...

    def purge_expired(self) -> int:
        """Drop messages past the retention period; returns how many. SQS does this by itself."""
        return 0


class QueueWriter(abc.ABC):
    """Sends that belong to a unit of work: the messages exist only if the unit of work commits.

    The SQLite adapter inserts them in the same transaction. An adapter that cannot enlist its queue
    in the store's transaction (SQS next to DynamoDB) sends them right after commit; consumers
    are idempotent, so a resend after a crash is harmless.
    """

    @abc.abstractmethod
    def send_batch(self, queue: str, bodies: Sequence[Mapping[str, Any]], *, delay_seconds: float = 0.0) -> None: ...


# -- webhooks and notification channels -----------------------------------------------------------


class WebhookEventRepository(abc.ABC):
    """Inbound provider events, each recorded once (unique per provider and event id)."""

    @abc.abstractmethod
    def seen(self, provider: str, event_id: str) -> bool: ...

    @abc.abstractmethod
    def record(self, received: ReceivedWebhook) -> bool:
        """False when this provider's event id was already recorded (nothing written)."""

    @abc.abstractmethod
    def for_member(self, member_id: str) -> list[ReceivedWebhook]:
        """Every stored event that named the member, with the key of its archived payload."""

    @abc.abstractmethod
    def forget_member(self, member_id: str) -> list[str]:
        """Unlink the member from stored events (the event ids stay, so replays are still refused);
        returns the blob keys of the archived payloads, for the caller to delete."""


class WebhookEndpointRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, endpoint: WebhookEndpoint) -> None: ...

    @abc.abstractmethod
    def get(self, endpoint_id: str) -> WebhookEndpoint | None: ...

    @abc.abstractmethod
    def page(self, limit: int, cursor: str | None) -> Page[WebhookEndpoint]:
        """Newest first."""

    @abc.abstractmethod
    def subscribed_to(self, event_type: str) -> list[WebhookEndpoint]:
        """Enabled endpoints that chose this event type."""

    @abc.abstractmethod
    def disable(self, endpoint_id: str, reason: str, now: datetime) -> None: ...


class WebhookDeliveryRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, delivery: Delivery) -> bool:
        """False when this event was already queued for this endpoint."""

    @abc.abstractmethod
    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Delivery]:
        """Lease due deliveries: their next attempt moves ``lease_seconds`` on so no one else takes them."""

    @abc.abstractmethod
    def get(self, delivery_id: str) -> Delivery | None: ...

    @abc.abstractmethod
    def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        next_attempt_at: datetime | None,
    ) -> None: ...

    @abc.abstractmethod
    def fail_pending(self, endpoint_id: str, reason: str, now: datetime) -> int:
        """Give up every pending delivery of an endpoint (it was disabled); returns how many."""

    @abc.abstractmethod
    def list_for_endpoint(self, endpoint_id: str, limit: int, cursor: str | None) -> Page[Delivery]:
        """Newest first, each with its attempts."""

    @abc.abstractmethod
    def forget_member(self, member_id: str) -> int:
        """Replace the payloads of deliveries about the member with an erasure marker; returns how many."""


class PreferenceRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, user_id: str) -> Preferences:
        """The member's channel preferences (every channel on when none were saved)."""

    @abc.abstractmethod
    def put(self, preferences: Preferences) -> None: ...


class NotificationSendRepository(abc.ABC):
    """One row per (notification, channel): the de-duplication record of every channel send."""

    @abc.abstractmethod
    def queued(self, limit: int) -> list[QueuedNotification]:
        """Stored notifications not yet planned into channel sends, oldest first."""

    @abc.abstractmethod
    def plan(
        self,
        notification: Notification,
        sends: Sequence[PlannedSend],
        now: datetime,
    ) -> None:
        """Record the sends of a stored notification (queued, or stored unqueued in this
        transaction); an existing key is left alone. A queued notification leaves the queue in the
        same transaction."""

    @abc.abstractmethod
    def claim_due(self, now: datetime, limit: int) -> list[PendingSend]:
        """Move due pending sends to ``sending`` (attempts + 1) and return them."""

    @abc.abstractmethod
    def finish(
        self,
        send_id: int,
        status: SendStatus,
        now: datetime,
        *,
        reason: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        """``sent``, ``skipped``, ``failed``, or ``pending`` again with ``retry_at``."""

    @abc.abstractmethod
    def for_notification(self, notification_id: str) -> list[SendRecord]: ...


class Notifier(abc.ABC):
    """One channel's way out: SMTP, a local outbox, or (on AWS) SES/SNS.

    ``send`` returns when the message has left and raises when it did not; the dispatcher records the
    send's de-duplication key first, so a message is never sent twice for one event.
    """

    @abc.abstractmethod
    def send(self, message: ChannelMessage) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpAttemptResult:
    """What happened to one outbound HTTP request. Network failures are results, not exceptions."""

    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookSender(abc.ABC):
    """Signs (Standard Webhooks) and POSTs our events to subscriber URLs, refusing unsafe targets."""

    @abc.abstractmethod
    def check_url(self, url: str) -> None:
        """Raise ``UrlRefused(rule)`` when the URL may not receive webhooks (scheme, credentials, or a
        host that does not resolve or resolves to a private, loopback, link-local or other non-public
        address)."""

    @abc.abstractmethod
    def deliver(
        self, url: str, secret: str, message_id: str, timestamp: datetime, payload: str
    ) -> HttpAttemptResult: ...


class InboundWebhookAdapter(abc.ABC):
    """A provider's webhook dialect: verify the raw bytes, then parse them into an ``InboundEvent``."""

    provider: str

    @abc.abstractmethod
    def verify(self, body: bytes, headers: Mapping[str, str], now: datetime) -> None:
        """Raise ``WebhookRejected`` unless the signature (and timestamp, where the scheme has one) holds.
        ``headers`` have lower-case names."""

    @abc.abstractmethod
    def parse(self, body: bytes, headers: Mapping[str, str]) -> InboundEvent:
        """Only called on verified bytes; ``InvalidInput`` names the offending field."""


# -- campaigns ------------------------------------------------------------------------------------


class CampaignRepository(abc.ABC):
    """Campaign definitions, and what each has drawn from its budget account in the ledger."""

    @abc.abstractmethod
    def add(self, campaign: Campaign) -> None:
        """Insert; a taken campaign id raises Conflict."""

    @abc.abstractmethod
    def get(self, campaign_id: str) -> Campaign | None: ...

    @abc.abstractmethod
    def save(self, campaign: Campaign) -> None:
        """Persist a change of state (ending early)."""

    @abc.abstractmethod
    def running(self, occasion: Occasion, at: datetime) -> list[Campaign]:
        """Campaigns reacting to ``occasion`` whose window contains ``at``."""

    @abc.abstractmethod
    def drawn(self, campaign_id: str, user_id: str | None = None) -> int:
        """Net points the campaign's budget account has paid out (awards minus reversals), from the
        ledger; only those paid to ``user_id`` when given."""

    @abc.abstractmethod
    def drawn_many(self, campaign_ids: Sequence[str]) -> dict[str, int]:
        """``drawn`` for several campaigns at once (campaigns without awards are absent)."""

    @abc.abstractmethod
    def check(self) -> list[str]:
        """Every campaign that paid out more than its total or per-member budget; empty when none."""

    @abc.abstractmethod
    def list(self, limit: int, cursor: str | None) -> Page[Campaign]:
        """Newest first."""


# -- GDPR -----------------------------------------------------------------------------------------


class PersonalDataRepository(abc.ABC):
    """What the store holds about one member, found across every feature's records."""

    @abc.abstractmethod
    def export(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """Section name -> the member's records (JSON-ready), for every feature that stores any."""

    @abc.abstractmethod
    def erase(self, subject: ErasureSubject) -> dict[str, int]:
        """Blank the subject's personal values out of every stored record linked to them (messages,
        event payloads, stored responses ...) and drop records that only hold personal data.
        Returns records changed per table. Immutable records (the ledger) are never touched."""

    @abc.abstractmethod
    def remaining(self, subject: ErasureSubject) -> list[str]:
        """Where a personal value of the subject is still stored (table.column); empty after erasure."""


# -- payments -------------------------------------------------------------------------------------


class PaymentRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, payment: Payment) -> None:
        """Insert a new payment; a taken payment id raises Conflict."""

    @abc.abstractmethod
    def add_batch_rows(
        self, rows: Sequence[PaymentRow], *, batch_id: str, now: datetime, workflow_step: str
    ) -> dict[int, tuple[str | None, int | None]]:
        """Insert the rows of a batch file as pending payments, in bulk. A row whose payment id is
        already taken (stored before, or earlier in ``rows``) is skipped: the answer maps each
        skipped row's line to the batch and line the existing payment came from."""

    @abc.abstractmethod
    def batch_rows(self, batch_id: str, first_line: int, last_line: int) -> list[PaymentRow]:
        """The payments a batch created from the given lines, in line order (to check audit digests)."""

    @abc.abstractmethod
    def get(self, payment_id: str) -> Payment | None: ...

    @abc.abstractmethod
    def save(self, payment: Payment) -> None:
        """Persist a changed payment, version-guarded (ConcurrencyConflict when it moved meanwhile)."""

    @abc.abstractmethod
    def list(
        self,
        status: PaymentStatus | None,
        created_from: datetime | None,
        created_to: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Payment]:
        """Newest first; ``created_to`` is exclusive."""

    @abc.abstractmethod
    def count_by_status(self, batch_id: str | None = None) -> dict[str, int]: ...


class PaymentBatchRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, batch: PaymentBatch) -> bool:
        """Record a new batch; False (and nothing changed) when one with this id exists."""

    @abc.abstractmethod
    def get(self, batch_id: str) -> PaymentBatch | None: ...

    @abc.abstractmethod
    def advance(self, batch: PaymentBatch, expected_offset: int) -> bool:
        """Store the batch's progress and counts if its stored offset is still ``expected_offset``.

        False means another ingester moved it on: the caller must roll back and stop.
        """

    @abc.abstractmethod
    def add_issues(self, batch_id: str, issues: Sequence[BatchRowIssue]) -> None: ...

    @abc.abstractmethod
    def issues(self, batch_id: str, kind: str | None, limit: int, cursor: str | None) -> Page[BatchRowIssue]:
        """Rejected and duplicate rows in line order."""

    @abc.abstractmethod
    def unfinished(self) -> list[str]:
        """Ids of batches still ``processing`` (to resume after a restart), oldest first."""


class AuditLogRepository(abc.ABC):
    """Append-only and hash-chained; appends in one unit of work extend the chain in order."""

    @abc.abstractmethod
    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]: ...

    @abc.abstractmethod
    def for_subject(self, subject_type: str, subject_id: str, limit: int, cursor: str | None) -> Page[AuditEntry]:
        """Oldest first."""

    @abc.abstractmethod
    def iter_all(self, batch_size: int = 5000) -> Iterator[AuditEntry]:
        """Every entry in chain order, read in pages (never all at once)."""


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    payment_id: str
    amount_minor: int
    currency: str
    # 1 for the first try. A re-run of the same attempt (after a crash) reuses its idempotency key,
    # so the gateway answers it without charging twice; a retry after a known failure is a new one.
    attempt: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.payment_id}:attempt-{self.attempt}"


@dataclass(frozen=True, slots=True)
class ChargeResult:
    reference: str


class PaymentGateway(abc.ABC):
    @abc.abstractmethod
    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge once per idempotency key. Raises ``PaymentDeclined`` (permanent, with a reason such
        as ``card_declined``) or ``TransientPaymentError`` (try again later)."""
