"""Event handlers that tell members what happened, in every channel's words (templates, not literals)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from accrue.domain import events
from accrue.domain.ids import new_id
from accrue.domain.loyalty import Tier
from accrue.domain.notifications import Notification
from accrue.ports import TemplateRenderer, UnitOfWork

CHANNELS = ("default", "email", "sms")

# Stores a notification for its channels (once per de-duplication key; False when it was there):
# ``NotificationDispatcher.store`` in the application, which sends it at once when every channel
# is local; ``queue_for_channels`` where there is no dispatcher.
StoreNotification = Callable[[UnitOfWork, Notification, str], bool]


def queue_for_channels(uow: UnitOfWork, notification: Notification, dedupe_key: str) -> bool:
    """Store the notification queued for the channel dispatcher."""
    return uow.notifications.add(notification, dedupe_key)


def render_message(renderer: TemplateRenderer, kind: str, context: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    subject = renderer.render(f"notifications/{kind}/subject.j2", context)
    message = {channel: renderer.render(f"notifications/{kind}/{channel}.j2", context) for channel in CHANNELS}
    return subject, message


def notify_tier_upgraded(
    event: events.TierUpgraded,
    uow: UnitOfWork,
    renderer: TemplateRenderer,
    clock: Callable[[], datetime],
    store_notification: StoreNotification = queue_for_channels,
) -> None:
    new_tier = Tier(event.new_tier)
    if new_tier.rank <= Tier(event.old_tier).rank:  # a downgrade is never announced as an upgrade
        return
    context = {
        "old_tier": event.old_tier,
        "new_tier": event.new_tier,
        "points": event.points,
        "benefits": new_tier.benefits,
    }
    subject, message = render_message(renderer, "tier_upgrade", context)
    store_notification(
        uow,
        Notification(
            notification_id=new_id("ntf"),
            event_id=event.event_id,
            type="tier_upgrade",
            user_id=event.user_id,
            subject=subject,
            message=message,
            created_at=clock(),
            old_tier=event.old_tier,
            new_tier=event.new_tier,
        ),
        f"{event.event_id}:tier_upgrade",
    )


def notify_milestones_reached(
    event: events.MilestonesReached,
    uow: UnitOfWork,
    renderer: TemplateRenderer,
    clock: Callable[[], datetime],
    store_notification: StoreNotification = queue_for_channels,
) -> None:
    context = {"milestones": list(event.milestones), "points": event.points, "tier": event.tier}
    subject, message = render_message(renderer, "milestone", context)
    store_notification(
        uow,
        Notification(
            notification_id=new_id("ntf"),
            event_id=event.event_id,
            type="milestone",
            user_id=event.user_id,
            subject=subject,
            message=message,
            created_at=clock(),
            milestones=tuple(event.milestones),
        ),
        f"{event.event_id}:milestone",
    )
