"""Domain errors. Each names the field and the rule so every entrypoint can say what went wrong.

The mapping to HTTP statuses lives in one place: ``accrue.entrypoints.api.errors``.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class: a refusal the caller can act on, never a crash."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as they are (a refusal made in the writer process is answered by the HTTP
        # process); the default would call ``cls(message)``, which subclasses do not accept.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[DomainError], args: tuple[Any, ...], state: dict[str, Any]) -> DomainError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InvalidInput(DomainError):
    """A value breaks a rule (HTTP 400). ``field`` names it, ``rule`` says why."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}", details={"field": field, "rule": rule})
        self.field = field
        self.rule = rule


class NotFound(DomainError):
    """The thing does not exist (or the caller may not know it exists) (HTTP 404)."""


class Conflict(DomainError):
    """The request clashes with the current state (HTTP 409)."""


class InsufficientPoints(Conflict):
    """A redemption asks for more points than the balance holds."""


class RuleViolation(DomainError):
    """Well-formed input that a business rule refuses (HTTP 422)."""


class ConcurrencyConflict(Conflict):
    """An optimistic version guard failed; the caller may retry."""
