"""The SQLite index column ``members.email_identity`` computes exactly the domain's ``email_identity``.

The rule lives in the domain; the migration mirrors it in SQL so that "an email already used by
another member" is an index lookup. Hypothesis generates addresses (and non-addresses) to keep them equal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accrue.adapters.sqlite.database import Database
from accrue.domain.members import normalize_email
from accrue.domain.referrals import email_identity

LOCAL_CHARS = st.sampled_from(list("abcXYZ019._+-éÅß"))
DOMAINS = st.sampled_from(
    ["gmail.com", "googlemail.com", "GMail.COM", "example.com", "mail.example.org", "gmail.com.evil", "x"]
)
ADDRESSES = st.builds(lambda local, domain: f"{local}@{domain}", st.text(LOCAL_CHARS, max_size=12), DOMAINS)
ANYTHING = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@pytest.fixture(scope="module")
def connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    db = Database(tmp_path_factory.mktemp("identity") / "identity.db")
    db.migrate()
    yield db.connection()
    db.close()


_ids = count()


def sql_identity(conn: sqlite3.Connection, email: str) -> str | None:
    user_id = f"u{next(_ids)}"
    conn.execute(
        "INSERT INTO members (user_id, email, email_key, created_at) VALUES (?, ?, ?, '2026-01-01T00:00:00Z')",
        (user_id, email, normalize_email(email)),
    )
    row = conn.execute("SELECT email_identity FROM members WHERE user_id = ?", (user_id,)).fetchone()
    conn.execute("DELETE FROM members WHERE user_id = ?", (user_id,))
    return None if row[0] is None else str(row[0])


@settings(max_examples=300, deadline=None)
@given(email=st.one_of(ADDRESSES, ANYTHING))
def test_the_indexed_column_agrees_with_the_domain_rule(connection: sqlite3.Connection, email: str) -> None:
    assert sql_identity(connection, email) == email_identity(email)


@pytest.mark.parametrize(
    ("email", "identity"),
    [
        ("J.Doe+News@GoogleMail.com", "jdoe@gmail.com"),
        ("j.doe+news@example.com", "j.doe@example.com"),
        ("plain@example.com", "plain@example.com"),
    ],
)
def test_the_indexed_column_on_known_addresses(connection: sqlite3.Connection, email: str, identity: str) -> None:
    assert sql_identity(connection, email) == identity
