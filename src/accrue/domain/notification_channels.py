"""Notification channels and member preferences: who is told what, where, and only once.

A stored notification (``domain/notifications.py``) is sent to every channel the member allows and
can be reached on. Each (notification, channel) pair is one send with its own de-duplication key,
recorded before the message leaves, so a retry or a crash never sends it twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from accrue.domain.commands import Command
from accrue.domain.notifications import Notification


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class SendStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed: the message may have left; never sent again automatically
    SENT = "sent"
    SKIPPED = "skipped"  # the member opted out of the channel, or cannot be reached on it
    FAILED = "failed"  # every attempt failed


@dataclass(frozen=True, slots=True)
class Preferences:
    """Opt-out model: every channel is on until the member turns it off."""

    user_id: str
    email: bool = True
    sms: bool = True
    push: bool = True
    updated_at: datetime | None = None

    def allows(self, channel: Channel) -> bool:
        return bool(getattr(self, channel.value))


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: str
    email: str | None
    phone: str | None
    erased: bool = False

    def address(self, channel: Channel) -> str | None:
        """Where the channel reaches the member; push goes to the member's devices, keyed by id."""
        if self.erased:
            return None
        if channel is Channel.EMAIL:
            return self.email or None
        if channel is Channel.SMS:
            return self.phone or None
        return self.user_id


def plan_channel(channel: Channel, preferences: Preferences, recipient: Recipient | None) -> str | None:
    """None when the channel should be used; otherwise why it is skipped."""
    if recipient is None:
        return "no such member"
    if not preferences.allows(channel):
        return f"{channel.value} turned off by the member"
    if recipient.address(channel) is None:
        return f"no {channel.value} address"
    return None


def send_key(notification_dedupe_key: str, channel: Channel) -> str:
    """The de-duplication key of one send: the notification's own key (event id and kind) + channel."""
    return f"{notification_dedupe_key}:{channel.value}"


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """One rendered message for one channel, ready for a notifier."""

    channel: Channel
    dedupe_key: str
    user_id: str
    recipient: str
    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedSend:
    """One send as first recorded: ``pending`` (due at once) or ``skipped`` when only planned; when
    attempted as it is planned (channels in the application's own database), what came of that
    attempt: ``sent``, ``failed``, or ``pending`` again until ``retry_at``."""

    dedupe_key: str
    channel: Channel
    status: SendStatus
    reason: str | None = None
    attempts: int = 0
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendingSend:
    """A send the dispatcher has claimed (status ``sending``), with the notification it carries."""

    send_id: int
    dedupe_key: str
    channel: Channel
    notification: Notification
    attempts: int


@dataclass(frozen=True, slots=True)
class QueuedNotification:
    """A stored notification not yet planned into sends."""

    notification: Notification
    dedupe_key: str


@dataclass(frozen=True, slots=True)
class SendRecord:
    dedupe_key: str
    notification_id: str
    user_id: str
    channel: Channel
    status: SendStatus
    attempts: int
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class UpdatePreferences(Command):
    """Replace a member's channel preferences (``PUT /users/{userId}/preferences``)."""

    user_id: str
    email: bool
    sms: bool
    push: bool
