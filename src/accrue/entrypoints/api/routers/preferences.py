"""A member's notification channel preferences (email, SMS, push)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path
from pydantic import Field, StrictBool

from accrue.bootstrap import Application
from accrue.domain.errors import NotFound
from accrue.domain.notification_channels import Preferences, UpdatePreferences
from accrue.entrypoints.api.routing import application, router
from accrue.entrypoints.api.schemas import ApiModel, Envelope, ResponseModel, ok
from accrue.entrypoints.api.security import AdminOrMember, Principal
from accrue.service_layer.notify import get_preferences

api = router()
App = Annotated[Application, Depends(application)]
UserIdPath = Annotated[str, Path(min_length=1, max_length=128, alias="userId")]


class PreferencesIn(ApiModel):
    email: StrictBool = Field(description="Send notifications by email")
    sms: StrictBool = Field(description="Send notifications by SMS (needs a phone number)")
    push: StrictBool = Field(description="Send push notifications")


class PreferencesOut(ResponseModel):
    user_id: str
    email: bool
    sms: bool
    push: bool
    updated_at: datetime | None = Field(default=None, description="null while the defaults (all on) apply")


def _out(preferences: Preferences) -> PreferencesOut:
    return PreferencesOut(
        user_id=preferences.user_id,
        email=preferences.email,
        sms=preferences.sms,
        push=preferences.push,
        updated_at=preferences.updated_at,
    )


def _check_visible(principal: Principal, user_id: str) -> None:
    # Another member's preferences are 'not found', never 'forbidden'.
    if not principal.can_see(user_id):
        raise NotFound(f"user {user_id} not found")


@api.get("/users/{userId}/preferences", response_model=Envelope[PreferencesOut], tags=["notifications"])
def read_preferences(user_id: UserIdPath, app: App, principal: AdminOrMember) -> dict[str, object]:
    _check_visible(principal, user_id)
    return ok(_out(app.bus.query(get_preferences, user_id)))


@api.put(
    "/users/{userId}/preferences",
    response_model=Envelope[PreferencesOut],
    tags=["notifications"],
    summary="Replace the member's channel preferences (the member or an admin)",
)
def replace_preferences(
    user_id: UserIdPath, body: PreferencesIn, app: App, principal: AdminOrMember
) -> dict[str, object]:
    _check_visible(principal, user_id)
    preferences = app.bus.handle(UpdatePreferences(user_id=user_id, email=body.email, sms=body.sms, push=body.push))
    return ok(_out(preferences))
