"""The key builders and the attribute codec of the DynamoDB adapter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.table import STREAM_FILTER_PATTERN, create_table_arguments
from accrue.domain.errors import InvalidInput
from accrue.domain.orders import LineItem, Order


def test_sortable_times_sort_as_the_instants_do_across_years_and_offsets() -> None:
    instants = [
        datetime(5, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 3, 14, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 14, 13, 30, tzinfo=timezone(timedelta(hours=1))),  # 12:30 UTC
        datetime(9999, 1, 1, tzinfo=UTC),
    ]
    texts = [keys.sortable_time(i) for i in instants]
    assert texts == sorted(texts)
    assert texts[0] == "0005-01-01T00:00:00.000000Z"
    assert [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in texts] == instants


def test_keys_with_two_free_parts_cannot_collide() -> None:
    assert keys.idempotency("member:a#1", "k") != keys.idempotency("member:a", "1#k")
    assert keys.webhook_event("a#b", "c") != keys.webhook_event("a", "b#c")
    assert keys.delivery_claim("e#1", "x") != keys.delivery_claim("e", "1#x")


def test_a_domain_object_round_trips_exactly_and_floats_are_refused() -> None:
    order = Order(
        order_id="o-1",
        user_id="ada",
        amount=Decimal("12.34"),
        currency="USD",
        amount_minor=1234,
        status="confirmed",
        points_earned=12,
        created_at=datetime(2026, 3, 14, tzinfo=UTC),
        items=(LineItem("A-1", 2, Decimal("6.17"), "books"),),
    )
    wire = codec.serialize(codec.to_attributes(order))
    assert codec.from_attributes(Order, codec.deserialize(wire)) == order
    assert wire["amount"] == {"N": "12.34"}
    with pytest.raises(TypeError, match="floats"):
        codec.encode_value(1.5)


def test_a_cursor_is_a_short_token_and_a_foreign_character_is_refused() -> None:
    position = keys.join(keys.sortable_time(datetime(2026, 3, 14, tzinfo=UTC)), keys.short_digest("order-1"))
    token = codec.encode_cursor(position)
    assert len(token) <= 64 and codec.decode_cursor(token) == position
    with pytest.raises(InvalidInput):
        codec.decode_cursor("not/a/token")


def test_the_table_definition_streams_both_images_and_the_filter_names_only_what_the_stream_handles() -> None:
    arguments = create_table_arguments("t")
    assert arguments["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert arguments["BillingMode"] == "PAY_PER_REQUEST"
    prefixes = [p["prefix"] for p in STREAM_FILTER_PATTERN["dynamodb"]["Keys"]["PK"]["S"]]
    assert prefixes == [keys.join(keys.Prefix.OUTBOX, ""), keys.join(keys.Prefix.QUEUE, "")]
