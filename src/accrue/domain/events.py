"""Domain events: facts in the past tense. Serialised to the outbox as JSON-compatible dicts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from accrue.domain.ids import new_id


def _now() -> datetime:
    return datetime.now(UTC)


_IMMUTABLE = (str, int, float, bool, type(None), Decimal, datetime, tuple, frozenset)
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _all_immutable(values: tuple[Any, ...]) -> bool:
    return all(isinstance(v, _IMMUTABLE) and (not isinstance(v, tuple) or _all_immutable(v)) for v in values)


@dataclass(frozen=True)
class _Box:
    """Lets dataclasses.asdict convert one value (a nested dataclass, list or dict) as it always has."""

    value: Any


@dataclass(frozen=True, kw_only=True)
class Event:
    event_id: str = field(default_factory=lambda: new_id("evt"))
    occurred_at: datetime = field(default_factory=_now)
    registry: ClassVar[dict[str, type[Event]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Event.registry[cls.__name__] = cls

    @property
    def name(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict, which deep-copies every value: immutable
        # values (most of them, and tuples of them) are shared; anything else is copied as asdict would.
        data: dict[str, Any] = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if not isinstance(value, _IMMUTABLE) or (isinstance(value, tuple) and not _all_immutable(value)):
                value = dataclasses.asdict(_Box(value))["value"]
            data[name] = value
        data["occurred_at"] = self.occurred_at.isoformat()
        return data

    @staticmethod
    def from_dict(name: str, data: dict[str, Any]) -> Event:
        cls = Event.registry[name]
        values = dict(data)
        values["occurred_at"] = datetime.fromisoformat(values["occurred_at"])
        for f in dataclasses.fields(cls):
            if f.name in values and isinstance(values[f.name], list):
                values[f.name] = tuple(values[f.name])
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class UserCreated(Event):
    user_id: str
    email: str
    referral_code: str = ""


@dataclass(frozen=True, kw_only=True)
class PointsEarned(Event):
    user_id: str
    transfer_id: str
    points: int
    reason: str
    reference: str
    balance: int
    lifetime: int


@dataclass(frozen=True, kw_only=True)
class PointsRedeemed(Event):
    user_id: str
    transfer_id: str
    points: int
    balance: int


@dataclass(frozen=True, kw_only=True)
class TierUpgraded(Event):
    user_id: str
    old_tier: str
    new_tier: str
    points: int
    lifetime: int


@dataclass(frozen=True, kw_only=True)
class TierDowngraded(Event):
    user_id: str
    old_tier: str
    new_tier: str
    lifetime: int


@dataclass(frozen=True, kw_only=True)
class MilestonesReached(Event):
    user_id: str
    milestones: tuple[int, ...]
    points: int
    lifetime: int
    tier: str


@dataclass(frozen=True, kw_only=True)
class OrderCreated(Event):
    order_id: str
    user_id: str
    amount: str
    currency: str
    categories: tuple[str, ...] = ()
    base_points: int = 0
    first_order: bool = False
