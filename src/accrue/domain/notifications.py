"""Notifications: what a member is told, in every channel's words."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: str
    # The event that caused it and the handler that sent it: together, the de-duplication key.
    event_id: str
    type: str
    user_id: str
    subject: str
    message: dict[str, str]
    created_at: datetime
    old_tier: str | None = None
    new_tier: str | None = None
    milestones: tuple[int, ...] = field(default_factory=tuple)
    data: dict[str, object] = field(default_factory=dict)
