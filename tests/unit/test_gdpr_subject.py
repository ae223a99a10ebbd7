"""What erasure looks for in stored text, and what it blanks out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from accrue.domain.gdpr import ERASED, ErasureSubject
from accrue.domain.members import Member

ZOE = ErasureSubject(user_id="usr_1", email="Zoë.Doe@Example.com", name="Zoë Doe", phone="+1 555 0100")


def test_every_spelling_of_a_value_is_blanked_as_typed_lower_case_and_json_escaped() -> None:
    text = " | ".join(
        [
            "Zoë.Doe@Example.com",
            "zoë.doe@example.com",
            json.dumps({"email": "Zoë.Doe@Example.com"}),
            json.dumps({"name": "Zoë Doe"}, ensure_ascii=False),
            "call +1 555 0100",
        ]
    )
    scrubbed = ZOE.scrub(text)
    assert "Zo" not in scrubbed and "555" not in scrubbed and "\\u00eb" not in scrubbed
    assert scrubbed.count(ERASED) == 5
    json.loads(ZOE.scrub(json.dumps({"email": "Zoë.Doe@Example.com", "n": 1})))  # JSON stays JSON


def test_a_very_short_name_is_blanked_only_as_a_whole_json_string() -> None:
    al = ErasureSubject(user_id="usr_2", name="Al")
    assert al.scrub('{"name":"Al","sku":"ALPHA-Al9"}') == '{"name":"[erased]","sku":"ALPHA-Al9"}'


def test_records_are_linked_by_email_phone_or_the_id_as_a_json_string_never_by_name_alone() -> None:
    assert ZOE.mentioned_in('{"customer":"zoë.doe@example.com"}')
    assert ZOE.mentioned_in('{"userId":"usr_1"}')
    assert not ZOE.mentioned_in('{"userId":"usr_10"}')
    assert not ZOE.mentioned_in("Zoë Doe")  # another member may share the name
    assert ErasureSubject(user_id="u", phone="112").link_terms() == ('"u"',)


def test_erasing_a_member_keeps_the_id_and_the_points_and_happens_once() -> None:
    member = Member(
        user_id="usr_1", email="a@b.c", name="A", phone="123", created_at=datetime(2025, 1, 1, tzinfo=UTC), balance=70
    )
    assert member.erase() is True
    assert (member.email, member.name, member.phone, member.erased, member.balance) == (None, None, None, True, 70)
    assert member.erase() is False
