"""GDPR: what identifies a member, and how it is found and blanked out in stored text.

Erasure removes personal data (email, name, phone) and keeps the member's pseudonymous id, balance
and ledger postings: the ledger stays balanced and no longer says whose points they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from accrue.domain.commands import Command
from accrue.domain.events import Event

ERASED = "[erased]"
# Shorter values (a two-letter name) are blanked only where they are a whole JSON string: as a
# substring they would also hit ids and words that are not personal data.
MIN_SUBSTRING_LENGTH = 3
# An email or phone number shorter than this links nothing reliably.
MIN_LINK_LENGTH = 5


def _spellings(value: str) -> list[str]:
    """The forms a value takes in stored text: as typed, lower case, and JSON-escaped (ASCII or not)."""
    forms = [value, value.lower()]
    for form in list(forms):
        forms.append(json.dumps(form)[1:-1])
        forms.append(json.dumps(form, ensure_ascii=False)[1:-1])
    unique: list[str] = []
    for form in forms:
        if form and form not in unique:
            unique.append(form)
    return unique


@dataclass(frozen=True, slots=True)
class ErasureSubject:
    user_id: str
    email: str | None = None
    name: str | None = None
    phone: str | None = None

    @property
    def personal_values(self) -> tuple[str, ...]:
        values = (v.strip() for v in (self.email, self.name, self.phone) if v)
        return tuple(dict.fromkeys(v for v in values if v))

    def replacements(self) -> list[tuple[str, str]]:
        """(text to find, text to put instead), longest first so a name inside an email goes whole."""
        pairs: list[tuple[str, str]] = []
        for value in self.personal_values:
            for form in _spellings(value):
                if len(value) >= MIN_SUBSTRING_LENGTH:
                    pairs.append((form, ERASED))
                else:
                    pairs.append((f'"{form}"', f'"{ERASED}"'))
        return sorted(dict.fromkeys(pairs), key=lambda p: -len(p[0]))

    def link_terms(self) -> tuple[str, ...]:
        """Text whose presence ties a stored record to this member: the email, the phone number, or
        the user id as a JSON string."""
        terms: list[str] = []
        for value in (self.email, self.phone):
            if value and len(value.strip()) >= MIN_LINK_LENGTH:
                terms.extend(_spellings(value.strip()))
        terms.append(json.dumps(self.user_id))
        return tuple(dict.fromkeys(terms))

    def scrub(self, text: str) -> str:
        for old, new in self.replacements():
            text = text.replace(old, new)
        return text

    def mentioned_in(self, text: str) -> bool:
        return any(term in text for term in self.link_terms())

    def values_in(self, text: str) -> list[str]:
        """The personal values still present in ``text`` (for verification)."""
        return [v for v in self.personal_values if len(v) >= MIN_SUBSTRING_LENGTH and v.lower() in text.lower()]


@dataclass(frozen=True, kw_only=True)
class EraseMember(Command):
    user_id: str
    requested_by: str


@dataclass(frozen=True, kw_only=True)
class MemberErased(Event):
    """Carries no personal data: only the id and the archived blobs still to delete."""

    user_id: str
    blob_keys: tuple[str, ...] = ()
