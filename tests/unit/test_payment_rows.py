"""Validation of payments and of CSV rows (seed 004's file), and the payment state machine."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accrue.domain.currencies import MINOR_UNITS
from accrue.domain.errors import Conflict, InvalidInput
from accrue.domain.money import to_minor_units
from accrue.domain.payments import (
    CSV_FIELDS,
    MAX_AMOUNT_MINOR,
    Payment,
    PaymentRow,
    PaymentStatus,
    PaymentValidationFailed,
    RowError,
    amount_to_minor,
    check_processable,
    parse_header,
    parse_row,
    rows_digest,
    validate_new_payment,
)

LAYOUT = parse_header("payment_id,amount,currency")
WITH_USER = parse_header("payment_id,amount,currency,user_id\r\n")


def test_the_header_must_be_seed_004s_three_columns_or_those_and_user_id() -> None:
    assert LAYOUT.width == 3 and not LAYOUT.with_user
    assert WITH_USER.width == 4 and WITH_USER.with_user
    assert parse_header("\ufeffpayment_id,amount,currency\r") == LAYOUT


@pytest.mark.parametrize(
    "header",
    ["", "id,amount,currency", "payment_id,amount", "amount,payment_id,currency", "Payment_ID,amount,currency"],
)
def test_any_other_header_is_refused_naming_the_expected_one(header: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_header(header)
    assert refused.value.field == "header"
    assert "payment_id,amount,currency" in refused.value.rule


def test_a_good_row_becomes_minor_units_in_its_currency() -> None:
    assert parse_row(LAYOUT, "pay_1,100.50,USD", 2) == PaymentRow(2, "pay_1", 10050, "USD", None)
    assert parse_row(LAYOUT, "pay_2,1500,JPY", 3) == PaymentRow(3, "pay_2", 1500, "JPY", None)
    assert parse_row(LAYOUT, "pay_3,1.234,BHD", 4) == PaymentRow(4, "pay_3", 1234, "BHD", None)
    assert parse_row(LAYOUT, " pay_4 , 7.5 , eur ", 5) == PaymentRow(5, "pay_4", 750, "EUR", None)
    assert parse_row(LAYOUT, "pay_5,2,", 6) == PaymentRow(6, "pay_5", 200, "USD", None)
    assert parse_row(LAYOUT, '"pay_6","1,000.00",USD', 7) == RowError(7, "amount: must be a decimal number")
    assert parse_row(WITH_USER, "pay_7,10.00,USD,m-1", 8) == PaymentRow(8, "pay_7", 1000, "USD", "m-1")
    assert parse_row(WITH_USER, "pay_8,10.00,USD,", 9) == PaymentRow(9, "pay_8", 1000, "USD", None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (",10.00,USD", "payment_id: is required"),
        ("pay 1,10.00,USD", "payment_id: must be 1 to 128 letters, digits or _ . : -"),
        ("p" * 129 + ",10.00,USD", "payment_id: must be 1 to 128 letters, digits or _ . : -"),
        ("pay_1,,USD", "amount: is required"),
        ("pay_1,ten,USD", "amount: must be a decimal number"),
        ("pay_1,NaN,USD", "amount: must be a finite decimal number"),
        ("pay_1,0,USD", "amount: must be greater than 0"),
        ("pay_1,-5.00,USD", "amount: must be greater than 0"),
        ("pay_1,10.001,USD", "amount: has more than 2 decimal places allowed for USD"),
        ("pay_1,5.5,JPY", "amount: has more than 0 decimal places allowed for JPY"),
        ("pay_1,10.00,XYZ", "currency: 'XYZ' is not an ISO 4217 currency code"),
        ("pay_1,10.00", "expected 3 columns, got 2"),
        ("pay_1,10.00,USD,extra", "expected 3 columns, got 4"),
        ('pay_1,"10.00,USD', "row is not valid CSV (unexpected end of data)"),
        ("pay_1,1e30,USD", "amount: must be at most 9999999999999999.99"),
    ],
)
def test_each_kind_of_bad_row_is_reported_with_its_line_and_the_rule_it_breaks(text: str, reason: str) -> None:
    assert parse_row(LAYOUT, text, 42) == RowError(42, reason)


def test_a_user_id_column_is_checked_too() -> None:
    assert parse_row(WITH_USER, "pay_1,1.00,USD,bad user", 2) == RowError(
        2, "user_id: must be 1 to 128 letters, digits or _ . : @ -"
    )


plain_amounts = st.builds(
    lambda whole, fraction: f"{whole}.{fraction}" if fraction is not None else str(whole),
    st.integers(min_value=0, max_value=10**13),
    st.none() | st.text(alphabet="0123456789", min_size=0, max_size=6),
)


@given(text=plain_amounts, currency=st.sampled_from(sorted(MINOR_UNITS)))
def test_the_fast_amount_path_agrees_with_exact_decimal_arithmetic(text: str, currency: str) -> None:
    """Rows take a regular-expression fast path; it must give what Decimal gives, or the same refusal."""
    try:
        expected: int | str = to_minor_units(Decimal(text), currency)
        if not 0 < int(expected) <= MAX_AMOUNT_MINOR:
            expected = "refused"
    except (InvalidInput, ArithmeticError):
        expected = "refused"
    try:
        found: int | str = amount_to_minor(text, currency, "amount")
    except InvalidInput:
        found = "refused"
    assert found == expected
    row = parse_row(LAYOUT, f"p,{text},{currency}", 2)
    assert (row.amount_minor if isinstance(row, PaymentRow) else "refused") == expected


def test_an_api_request_is_validated_field_by_field_with_api_names() -> None:
    assert validate_new_payment("pay_1", Decimal("10.5"), "USD", None).amount_minor == 1050
    with pytest.raises(InvalidInput) as missing:
        validate_new_payment(None, Decimal("1"), "USD", None)
    assert missing.value.field == "paymentId"
    with pytest.raises(InvalidInput) as floats:
        validate_new_payment("pay_1", 10.5, "USD", None)
    assert floats.value.field == "amount" and "float" in floats.value.rule
    with pytest.raises(InvalidInput) as csv_names:
        validate_new_payment("pay_1", "1", "ABC", None, CSV_FIELDS)
    assert csv_names.value.field == "currency"


def payment(status: PaymentStatus = PaymentStatus.PENDING, amount_minor: int = 1000) -> Payment:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    return Payment("pay_1", amount_minor, "USD", status, now, now)


def test_a_payment_moves_pending_processing_then_processed_or_failed_and_never_back() -> None:
    now = datetime(2026, 3, 2, tzinfo=UTC)
    p = payment()
    p.move_to(PaymentStatus.PROCESSING, now)
    p.move_to(PaymentStatus.PROCESSED, now)
    assert p.status is PaymentStatus.PROCESSED and p.updated_at == now
    for target in (PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.FAILED):
        with pytest.raises(Conflict):
            p.move_to(target, now)
    failed = payment()
    failed.move_to(PaymentStatus.FAILED, now)  # a validation failure may skip processing
    with pytest.raises(Conflict):
        failed.move_to(PaymentStatus.PROCESSED, now)


def test_the_workflows_validation_step_applies_the_risk_limit_and_refuses_a_final_payment() -> None:
    check_processable(payment(amount_minor=100_000_000), Decimal("1000000"))
    with pytest.raises(PaymentValidationFailed) as over:
        check_processable(payment(amount_minor=100_000_001), Decimal("1000000"))
    assert over.value.reason == "amount_over_limit"
    with pytest.raises(PaymentValidationFailed) as final:
        check_processable(payment(PaymentStatus.PROCESSED), None)
    assert final.value.reason == "already_final"


def test_the_digest_of_accepted_rows_changes_with_any_field_of_any_row() -> None:
    rows = [PaymentRow(2, "a", 100, "USD", None), PaymentRow(3, "b", 200, "EUR", "m-1")]
    digest = rows_digest(rows)
    assert digest == rows_digest(list(rows))
    for changed in (
        [rows[0]._replace(amount_minor=101), rows[1]],
        [rows[0], rows[1]._replace(currency="USD")],
        [rows[0], rows[1]._replace(user_id=None)],
        [rows[0]._replace(line=4), rows[1]],
        [rows[0]],
    ):
        assert rows_digest(changed) != digest
