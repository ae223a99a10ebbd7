"""Dead letters from every source (the event outbox; the payment queue) behind one interface.

Ids are ``<source>:<id>`` so one list and one redrive serve the API and the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from accrue.service_layer.messagebus import MessageBus


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    id: str
    source: str
    name: str
    handler: str | None
    attempts: int
    last_error: str | None
    payload: dict[str, Any]


class DeadLetterSource(Protocol):
    name: str

    def list(self, limit: int) -> list[DeadLetterView]: ...

    def redrive(self, local_id: str) -> bool: ...


class OutboxDeadLetters:
    name = "outbox"

    def __init__(self, bus: MessageBus, clock: Callable[[], datetime], wake: Callable[[], None]) -> None:
        self.bus = bus
        self.clock = clock
        self.wake = wake

    def list(self, limit: int) -> list[DeadLetterView]:
        messages = self.bus.query(lambda uow: uow.outbox.dead_letters(limit))
        return [
            DeadLetterView(
                id=f"outbox:{m.message_id}",
                source="outbox",
                name=m.event_name,
                handler=m.handler,
                attempts=m.attempts,
                last_error=m.last_error,
                payload=m.payload,
            )
            for m in messages
        ]

    def redrive(self, local_id: str) -> bool:
        try:
            message_id = int(local_id)
        except ValueError:
            return False
        with self.bus.uow_factory() as uow:
            done = uow.outbox.redrive(message_id, self.clock())
            uow.commit()
        if done:
            self.wake()
        return done


class HasDeadLetterSources(Protocol):
    @property
    def dead_letter_sources(self) -> Mapping[str, DeadLetterSource]: ...


def list_all(app: HasDeadLetterSources, limit: int) -> list[DeadLetterView]:
    found: list[DeadLetterView] = []
    for source in app.dead_letter_sources.values():
        found.extend(source.list(limit))
    return found[:limit]


def redrive(app: HasDeadLetterSources, dead_letter_id: str) -> bool:
    source_name, _, local_id = dead_letter_id.partition(":")
    source = app.dead_letter_sources.get(source_name)
    return source is not None and bool(local_id) and source.redrive(local_id)
