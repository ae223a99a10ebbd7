"""The message bus: commands go to exactly one handler; events fan out to their subscribers.

Command handlers run inside a fresh unit of work and commit it. Events recorded during the command
are written to the outbox in the same transaction (one row per subscriber) and are handled after
commit by the outbox worker (locally) or the DynamoDB Streams processor (on AWS): a crash can
neither lose an event nor deliver one for a change that was rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from accrue.domain.commands import Command
from accrue.domain.events import Event
from accrue.ports import UnitOfWork

UowFactory = Callable[..., UnitOfWork]
CommandHandler = Callable[[Any, UnitOfWork], Any]
EventHandler = Callable[[Any, UnitOfWork], None]
Interest = Callable[[UnitOfWork, str], bool]


class MessageBus:
    def __init__(
        self,
        uow_factory: UowFactory,
        command_handlers: Mapping[type[Command], CommandHandler],
        event_handlers: Mapping[str, Mapping[str, EventHandler]],
        interest: Mapping[str, Interest] | None = None,
        steady_interest: frozenset[str] = frozenset(),
    ) -> None:
        self.uow_factory = uow_factory
        self.command_handlers = dict(command_handlers)
        # event name -> {handler name -> handler}; handler names are stable (stored in the outbox).
        self.event_handlers = {k: dict(v) for k, v in event_handlers.items()}
        # handler name -> whether it wants an event of that name now (asked inside the committing
        # transaction). A subscriber with nothing to do (no webhook endpoint listens) gets no outbox
        # row: a bulk import posts 100 000s of PointsEarned events.
        self.interest = dict(interest or {})
        # Subscribers whose answer holds for a whole write transaction (whatever could change it
        # ends the transaction's memo): asked once per transaction rather than once per commit.
        self.steady_interest = steady_interest
        self._steady: dict[str, bool] = {}

    def handle(self, command: Command) -> Any:
        handler = self.command_handlers.get(type(command))
        if handler is None:
            raise LookupError(f"no handler for command {type(command).__name__}")
        with self.uow_factory() as uow:
            return handler(command, uow)

    def subscribers(self, event_name: str) -> Sequence[str]:
        return tuple(self.event_handlers.get(event_name, {}))

    def interested(self, handler_name: str, event_name: str, uow: UnitOfWork) -> bool:
        """False when the subscriber declared that it has nothing to do with such an event now."""
        wants = self.interest.get(handler_name)
        return wants is None or wants(uow, event_name)

    def interest_is_steady(self, event_name: str) -> bool:
        """Whether which subscribers want an event of this name can change only with what ends a
        write transaction's memo: every subscriber either always wants it or is steady."""
        steady = self._steady.get(event_name)
        if steady is None:
            steady = self._steady[event_name] = all(
                name not in self.interest or name in self.steady_interest for name in self.subscribers(event_name)
            )
        return steady

    def handle_event(self, handler_name: str, event: Event, uow: UnitOfWork) -> None:
        """Run one subscriber inside the caller's unit of work (which the caller commits)."""
        handler = self.event_handlers.get(event.name, {}).get(handler_name)
        if handler is None:
            raise LookupError(f"no handler {handler_name!r} for event {event.name}")
        handler(event, uow)

    def query(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a read-side function in a read-only unit of work."""
        with self.uow_factory(readonly=True) as uow:
            return fn(uow, *args, **kwargs)
