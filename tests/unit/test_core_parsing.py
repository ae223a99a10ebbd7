"""Parsing at the edges: amounts (never via binary floats), cursors, bulk-import rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from accrue.adapters.sqlite.codec import CURSOR_LIMIT, decode_cursor, encode_cursor, iso, parse_iso
from accrue.domain.errors import InvalidInput
from accrue.domain.money import format_minor_units, parse_amount, to_minor_units
from accrue.entrypoints.api.schemas import CreateOrderRequest, TransactionRequest
from accrue.service_layer.imports import AwardRow, parse_rows


def transaction(amount: object) -> TransactionRequest:
    return TransactionRequest.model_validate(
        {"memberId": "m-1", "transactionAmount": amount, "transactionType": "purchase"}
    )


@pytest.mark.parametrize(
    ("wire", "value"),
    [("12000.00", "12000.00"), ("0", "0"), (12000, "12000"), (0.1, "0.1"), (19.99, "19.99"), (1e-7, "1E-7")],
)
def test_amounts_arrive_as_the_exact_decimal_the_client_wrote(wire: object, value: str) -> None:
    parsed = transaction(wire).transaction_amount
    assert isinstance(parsed, Decimal)
    assert parsed == Decimal(value)
    assert str(parsed) == value


@pytest.mark.parametrize("wire", ["-1", "1e3", " 1", "01", "1.", ".5", "1,5", "", "NaN", True, None, [], -0.5, 1e14])
def test_amounts_outside_the_documented_forms_are_refused_naming_the_field(wire: object) -> None:
    with pytest.raises(ValidationError) as raised:
        transaction(wire)
    assert raised.value.errors()[0]["loc"] == ("transactionAmount",)


def test_an_order_amount_must_be_positive_and_its_currency_a_capitalised_iso_code() -> None:
    for amount in ("0", "0.00", 0):
        with pytest.raises(ValidationError):
            CreateOrderRequest.model_validate({"userId": "u", "amount": amount})
    assert CreateOrderRequest.model_validate({"userId": "u", "amount": "0.01"}).currency == "USD"
    assert CreateOrderRequest.model_validate({"userId": "u", "amount": "5", "currency": "JPY"}).currency == "JPY"
    for currency in ("usd", "XXX1", "ABC"):
        with pytest.raises(ValidationError):
            CreateOrderRequest.model_validate({"userId": "u", "amount": "5", "currency": currency})


def test_domain_money_parsing_names_the_field_and_converts_to_minor_units() -> None:
    assert parse_amount("19.99", "amount") == Decimal("19.99")
    assert parse_amount(0.1, "amount") == Decimal("0.1")
    for bad in (None, "", "abc", True, "Infinity"):
        with pytest.raises(InvalidInput) as raised:
            parse_amount(bad, "amount")
        assert raised.value.field == "amount"
    assert to_minor_units(Decimal("19.99"), "USD") == 1999
    assert to_minor_units(Decimal("500"), "JPY") == 500
    assert to_minor_units(Decimal("1.234"), "BHD") == 1234
    with pytest.raises(InvalidInput, match="more than 0 decimal places"):
        to_minor_units(Decimal("1.5"), "JPY")
    assert format_minor_units(46500, "USD") == "465.00"


@given(st.integers(min_value=0, max_value=CURSOR_LIMIT - 1))
def test_every_position_round_trips_through_its_cursor(seq: int) -> None:
    assert decode_cursor(encode_cursor(seq)) == seq


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=64))
def test_every_string_of_the_cursor_alphabet_is_a_position(cursor: str) -> None:
    position = decode_cursor(cursor)
    assert position is not None and 0 <= position <= CURSOR_LIMIT


def test_a_cursor_outside_the_alphabet_is_refused_and_none_means_the_start() -> None:
    assert decode_cursor(None) is None
    assert decode_cursor("") is None
    with pytest.raises(ValueError):
        decode_cursor("abc=")


def test_import_rows_stream_with_line_numbers_and_bad_rows_named(tmp_path: Path) -> None:
    path = tmp_path / "awards.csv"
    path.write_text(
        "userId,points,reason\nu-1,10,spring\n\nu-2,abc,x\nu-3,-5,x\n,5,x\nu-4,7\nu-5, 3 ,\n"
        f",,\nu-6,1_000,x\nu-7,1000000001,x\nu-8,1,{'r' * 201}\n",
        encoding="utf-8",
    )
    assert list(parse_rows(path)) == [
        AwardRow(line=2, user_id="u-1", points=10, reason="spring"),
        (4, "points: must be a whole number"),
        (5, "points: must be greater than 0"),
        (6, "userId: is required"),
        (7, "expected 3 columns, got 2"),
        AwardRow(line=8, user_id="u-5", points=3, reason="bulk import"),
        (10, "points: must be a whole number"),
        (11, "points: must be at most 1000000000"),
        (12, "reason: must be at most 200 characters"),
    ]


def test_an_import_file_without_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "awards.csv"
    path.write_text("user,points\nu-1,10\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as raised:
        list(parse_rows(path))
    assert raised.value.field == "header"


def test_a_date_time_query_value_must_be_rfc_3339_text_not_a_unix_time() -> None:
    from pydantic import TypeAdapter

    from accrue.entrypoints.api.schemas import DateTimeText

    adapter = TypeAdapter(DateTimeText)
    assert adapter.validate_python("2026-11-01T00:00:00Z").year == 2026
    for number in ("268435456", "1.5", 268435456):
        with pytest.raises(ValidationError, match="RFC 3339"):
            adapter.validate_python(number)


@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_stored_timestamps_keep_one_sortable_utc_text_form(moment: datetime, offset_minutes: int) -> None:
    """The form rows have always been written in (``strftime``), whatever the time zone of the
    value: ISO 8601 in UTC, microseconds, ``Z``; and it reads back as the same instant."""
    for value in (moment.replace(tzinfo=UTC), moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))):
        text = iso(value)
        assert text == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert parse_iso(text) == value
