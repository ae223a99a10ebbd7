"""Channel delivery of stored notifications (email, SMS, push), honouring member preferences.

The loyalty core's event handlers store each notification with its texts (``notifications`` table);
storing it also queues it for channels in the same transaction (a trigger in SQLite). The
``NotificationDispatcher`` then works in three short steps, none of which holds a transaction
while a message is on the wire:

1. plan: for each queued notification, one send per channel, ``pending`` or ``skipped`` (the member
   turned the channel off, or has no address for it), keyed by the notification's own key (event id
   and kind) plus the channel: a second plan of the same notification adds nothing;
2. claim: due ``pending`` sends become ``sending`` in a committed transaction *before* the message
   leaves;
3. send the batch, then record each ``sent`` (or ``pending`` again with a backoff, ``failed`` after
   the last attempt) in one transaction.

A crash between 2 and the end of 3 leaves the send ``sending``: it is never sent again automatically, so no
member hears about one event twice on one channel (at most once; operators see such sends in the
table and may re-queue them).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from accrue.domain.commands import Command
from accrue.domain.errors import NotFound
from accrue.domain.members import Member
from accrue.domain.notification_channels import (
    Channel,
    ChannelMessage,
    PendingSend,
    PlannedSend,
    Preferences,
    Recipient,
    SendStatus,
    UpdatePreferences,
    plan_channel,
    send_key,
)
from accrue.domain.notifications import Notification
from accrue.ports import Notifier, TemplateRenderer, UnitOfWork
from accrue.service_layer.background import PollingWorker, let_requests_in

log = logging.getLogger(__name__)

UowFactory = Callable[..., UnitOfWork]
# What became of one send: its new status, why (skipped or failed), and when to try again (pending).
SendOutcome = tuple[SendStatus, str | None, datetime | None]
EMAIL_LAYOUT_TEMPLATE = "notifications/email_layout.html"


def recipient_of(member: Member | None) -> Recipient | None:
    if member is None:
        return None
    return Recipient(user_id=member.user_id, email=member.email, phone=member.phone, erased=member.erased)


# -- preferences --------------------------------------------------------------------------------


def update_preferences(cmd: UpdatePreferences, uow: UnitOfWork, clock: Callable[[], datetime]) -> Preferences:
    member = uow.members.get(cmd.user_id)
    if member is None or member.erased:
        raise NotFound(f"user {cmd.user_id} not found", details={"field": "userId"})
    preferences = Preferences(user_id=cmd.user_id, email=cmd.email, sms=cmd.sms, push=cmd.push, updated_at=clock())
    uow.notification_preferences.put(preferences)
    uow.commit()
    return preferences


def get_preferences(uow: UnitOfWork, user_id: str) -> Preferences:
    member = uow.members.get(user_id)
    if member is None or member.erased:
        raise NotFound(f"user {user_id} not found", details={"field": "userId"})
    return uow.notification_preferences.get(user_id)


# -- dispatch -----------------------------------------------------------------------------------


class NotificationDispatcher(PollingWorker):
    def __init__(
        self,
        uow_factory: UowFactory,
        notifiers: Mapping[Channel, Notifier],
        renderer: TemplateRenderer,
        clock: Callable[[], datetime],
        *,
        max_attempts: int = 5,
        retry_base_seconds: float = 5.0,
        batch_size: int = 50,
        poll_seconds: float = 1.0,
        transaction_group: Callable[[], AbstractContextManager[object]] | None = None,
        linger_seconds: float = 0.0,
    ) -> None:
        self.uow_factory = uow_factory
        # Only for channels that write to the application's own database (see send_due).
        self.transaction_group = transaction_group or contextlib.nullcontext
        self.notifiers = dict(notifiers)
        self.renderer = renderer
        self.clock = clock
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.batch_size = batch_size
        # Off when the dispatcher runs on the thread that also serves writes (``run_slice``): there
        # is no other thread to hand the interpreter to between sends.
        self.yield_between_sends = True
        # With every channel local, ``store`` sends a notification at once (off: it is queued for
        # the rounds, as with a channel on the network; bench/pipeline_bench.py compares both).
        self.send_at_once = True
        super().__init__(
            thread_name="notification-dispatcher", poll_seconds=poll_seconds, linger_seconds=linger_seconds
        )

    def run_once(self) -> int:
        """Plan queued notifications and attempt every due send once; returns how much was done."""
        if self.sends_in_database:
            with self.transaction_group():
                return self.plan_and_send() + self.send_due()
        return self.plan_queued() + self.send_due()

    @property
    def sends_in_database(self) -> bool:
        """True when every channel writes to the application's own database (local outboxes): a
        round is then only database work, and may share a transaction with other writes."""
        return self.transaction_group is not contextlib.nullcontext

    def run_slice(self, limit: int) -> int:
        """One short round on the calling thread, in one transaction: plan and send at most
        ``limit`` queued notifications and retry at most ``limit`` due sends. Only when the sends
        stay in the database (``sends_in_database``); the writer process runs the dispatcher this way."""
        if not self.sends_in_database:
            raise RuntimeError("a dispatcher that sends over the network runs on its own thread")
        with self.transaction_group():
            return self.plan_and_send(limit) + self.send_due(limit)

    def drain(self, max_rounds: int = 100) -> None:
        for _ in range(max_rounds):
            if self.run_once() == 0:
                return

    def plan_queued(self, limit: int | None = None) -> int:
        now = self.clock()
        with self.uow_factory() as uow:
            queued = uow.notification_sends.queued(limit or self.batch_size)
            for item in queued:
                sends = self._planned_only(uow, item.notification.user_id, item.dedupe_key)
                uow.notification_sends.plan(item.notification, sends, now)
            uow.commit()
        return len(queued)

    @property
    def send_on_store(self) -> bool:
        """Whether ``store`` sends a notification at once (every channel local) instead of queueing it."""
        return self.sends_in_database and self.send_at_once

    def store(self, uow: UnitOfWork, notification: Notification, dedupe_key: str) -> bool:
        """Store a notification for its channels, once per ``dedupe_key`` (False when it was already
        there): the event handlers' way to store one.

        With every channel local (``send_on_store``) it is planned and sent at once, in the caller's
        unit of work: the messages and their records commit with the notification or not at all,
        and the queue (a row written only to be deleted by the next round) is skipped. Otherwise
        it is queued for the dispatcher's rounds."""
        if not self.send_on_store:
            return uow.notifications.add(notification, dedupe_key)
        if not uow.notifications.add(notification, dedupe_key, queue=False):
            return False
        self._send_or_plan(uow, notification, dedupe_key, self.clock())
        return True

    def plan_and_send(self, limit: int | None = None) -> int:
        """Plan queued notifications and send them at once, each send recorded with what came of
        it, all in one unit of work. Only when every channel writes to this database (local
        outboxes): a message and its record then commit together or not at all, and the claim
        step that guards a message on the network is not needed. Returns how many were planned."""
        if not self.sends_in_database:
            raise RuntimeError("a dispatcher that sends over the network claims each send first")
        now = self.clock()
        with self.uow_factory() as uow:
            queued = uow.notification_sends.queued(limit or self.batch_size)
            for item in queued:
                self._send_or_plan(uow, item.notification, item.dedupe_key, now)
            uow.commit()
        return len(queued)

    def _send_or_plan(self, uow: UnitOfWork, notification: Notification, dedupe_key: str, now: datetime) -> None:
        """Send to every local channel the member allows, each send recorded with its outcome."""
        sends = self._send_local(uow, notification, dedupe_key)
        if sends is None:
            # Planned only, as on the network path: the send step then logs it and leaves it
            # 'sending' for an operator, and the queue behind it moves on.
            sends = self._planned_only(uow, notification.user_id, dedupe_key)
        uow.notification_sends.plan(notification, sends, now)

    def _send_local(self, uow: UnitOfWork, notification: Notification, dedupe_key: str) -> list[PlannedSend] | None:
        """Send to every channel the member allows, each send with its outcome; None (nothing
        sent) when a message cannot be rendered: every message is rendered before the first
        leaves."""
        recipient, preferences = self._audience(uow, notification.user_id)
        plan = self._plan(recipient, preferences)
        try:
            messages = {
                channel: self.message_for(notification, channel, send_key(dedupe_key, channel), address)
                for channel, reason in plan
                if reason is None and recipient is not None and (address := recipient.address(channel))
            }
        except Exception:
            log.exception("notification %s could not be rendered", dedupe_key)
            return None
        sends: list[PlannedSend] = []
        for channel, reason in plan:
            key = send_key(dedupe_key, channel)
            if reason is not None:
                sends.append(PlannedSend(key, channel, SendStatus.SKIPPED, reason))
            else:
                status, error, retry_at = self._deliver(messages[channel], attempts=1)
                sends.append(PlannedSend(key, channel, status, error, attempts=1, retry_at=retry_at))
        return sends

    def _planned_only(self, uow: UnitOfWork, user_id: str, dedupe_key: str) -> list[PlannedSend]:
        """Every channel's send, ``pending`` or ``skipped`` with the reason, none attempted."""
        recipient, preferences = self._audience(uow, user_id)
        return [
            PlannedSend(send_key(dedupe_key, channel), channel, SendStatus.PENDING)
            if reason is None
            else PlannedSend(send_key(dedupe_key, channel), channel, SendStatus.SKIPPED, reason)
            for channel, reason in self._plan(recipient, preferences)
        ]

    def _audience(self, uow: UnitOfWork, user_id: str) -> tuple[Recipient | None, Preferences]:
        return recipient_of(uow.members.get(user_id)), uow.notification_preferences.get(user_id)

    def _plan(self, recipient: Recipient | None, preferences: Preferences) -> list[tuple[Channel, str | None]]:
        """Every channel, with why it is skipped (None: send)."""
        return [
            (
                channel,
                plan_channel(channel, preferences, recipient)
                if channel in self.notifiers
                else f"no {channel.value} channel is configured",
            )
            for channel in Channel
        ]

    def send_due(self, limit: int | None = None) -> int:
        with self.uow_factory() as uow:
            claimed = uow.notification_sends.claim_due(self.clock(), limit or self.batch_size)
            uow.commit()
        if not claimed:
            return 0
        # Checked again at send time, once per member of the batch: the member may have opted out,
        # or been erased, since planning.
        with self.uow_factory(readonly=True) as uow:
            audience = {user_id: self._audience(uow, user_id) for user_id in {s.notification.user_id for s in claimed}}
        # Skip decisions and rendering first, outside any transaction.
        prepared: list[tuple[PendingSend, SendOutcome | ChannelMessage]] = []
        for send in claimed:
            try:
                prepared.append((send, self._prepare(send, *audience[send.notification.user_id])))
                if self.yield_between_sends:
                    let_requests_in()
            except Exception:
                # The send stays 'sending': never sent twice, and logged for an operator.
                log.exception("notification send %s could not be prepared", send.dedupe_key)
        # Then send, and record the batch in one transaction: a crash before it commits leaves these
        # sends 'sending' (never sent again), as a crash between one send and its own record would.
        # When every channel writes to this database (local outboxes) the group makes the sends and
        # their records one transaction; a channel on the network is never called inside one.
        with self.transaction_group():
            outcomes: list[tuple[PendingSend, SendOutcome]] = []
            for send, step in prepared:
                try:
                    outcome = self._deliver(step, send.attempts) if isinstance(step, ChannelMessage) else step
                    outcomes.append((send, outcome))
                except Exception:
                    log.exception("notification send %s could not be completed", send.dedupe_key)
            now = self.clock()
            with self.uow_factory() as uow:
                for send, (status, reason, retry_at) in outcomes:
                    uow.notification_sends.finish(send.send_id, status, now, reason=reason, retry_at=retry_at)
                uow.commit()
        return len(claimed)

    def _prepare(
        self, send: PendingSend, recipient: Recipient | None, preferences: Preferences
    ) -> SendOutcome | ChannelMessage:
        """The message to send, or the reason not to send it."""
        reason = plan_channel(send.channel, preferences, recipient)
        if reason is not None or recipient is None:
            return SendStatus.SKIPPED, reason or "no such member", None
        address = recipient.address(send.channel)
        if address is None:
            return SendStatus.SKIPPED, f"no {send.channel.value} address", None
        return self.message_for(send.notification, send.channel, send.dedupe_key, address)

    def _deliver(self, message: ChannelMessage, attempts: int) -> SendOutcome:
        """Hand the message to its channel; ``attempts`` counts this one."""
        try:
            self.notifiers[message.channel].send(message)
        except Exception as exc:  # noqa: BLE001 - a refused message did not leave: retry, then give up
            error = f"{type(exc).__name__}: {exc}"
            if attempts >= self.max_attempts:
                log.warning("notification %s failed for good: %s", message.dedupe_key, error)
                return SendStatus.FAILED, error, None
            delay = self.retry_base_seconds * (2 ** (attempts - 1))
            return SendStatus.PENDING, error, self.clock() + timedelta(seconds=delay)
        return SendStatus.SENT, None, None

    def message_for(
        self, notification: Notification, channel: Channel, dedupe_key: str, address: str
    ) -> ChannelMessage:
        texts = notification.message
        default = texts.get("default", "")
        if channel is Channel.EMAIL:
            body = texts.get("email") or default
            html = self.renderer.render(
                EMAIL_LAYOUT_TEMPLATE,
                {"subject": notification.subject, "paragraphs": [p for p in body.split("\n\n") if p.strip()]},
            )
            return ChannelMessage(
                channel=channel,
                dedupe_key=dedupe_key,
                user_id=notification.user_id,
                recipient=address,
                subject=notification.subject,
                text=body,
                html=html,
            )
        text = (texts.get("sms") or default) if channel is Channel.SMS else default
        return ChannelMessage(
            channel=channel,
            dedupe_key=dedupe_key,
            user_id=notification.user_id,
            recipient=address,
            subject=notification.subject,
            text=text,
        )


COMMAND_HANDLERS: dict[type[Command], Callable[..., Any]] = {UpdatePreferences: update_preferences}
