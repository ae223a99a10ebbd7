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


def render_message(renderer: TemplateRenderer, kind: str, context: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    subject = renderer.render(f"notifications/{kind}/subject.j2", context)
    message = {channel: renderer.render(f"notifications/{kind}/{channel}.j2", context) for channel in CHANNELS}
    return subject, message


def notify_tier_upgraded(
    event: events.TierUpgraded,
    uow: UnitOfWork,
    renderer: TemplateRenderer,
    clock: Callable[[], datetime],
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
    uow.notifications.add(
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
        dedupe_key=f"{event.event_id}:tier_upgrade",
    )


def notify_milestones_reached(
    event: events.MilestonesReached,
    uow: UnitOfWork,
    renderer: TemplateRenderer,
    clock: Callable[[], datetime],
) -> None:
    context = {"milestones": list(event.milestones), "points": event.points, "tier": event.tier}
    subject, message = render_message(renderer, "milestone", context)
    uow.notifications.add(
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
        dedupe_key=f"{event.event_id}:milestone",
    )
