"""Money typed by staff becomes integer cents, and integer cents are shown without ever touching float."""
from __future__ import annotations

import pytest

from isp_admin.services.billing.money import cents_to_input, format_cents, parse_money


@pytest.mark.parametrize(("typed", "cents"), [
    ("29.99", 2999),
    ("49", 4900),
    ("0", 0),
    ("0.5", 50),
    (".5", 50),
    ("5.", 500),
    ("  12.30  ", 1230),
    ("1,234.50", 123450),
    ("1,000,000.00", 100000000),
    ("12345.67", 1234567),
    ("0.10", 10),
    ("9999999.99", 999999999),
])
def test_staff_can_type_an_amount_with_or_without_thousands_commas(typed, cents):
    assert parse_money(typed) == cents


@pytest.mark.parametrize("typed", ["-1", "-0.01", "-1,000.00"])
def test_a_negative_amount_is_refused_with_a_clear_message(typed):
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_money(typed)


@pytest.mark.parametrize("typed", ["0.005", "1.999", "29.990001"])
def test_fractions_of_a_cent_are_refused_not_rounded(typed):
    with pytest.raises(ValueError, match="two decimal places"):
        parse_money(typed)


@pytest.mark.parametrize("typed", ["10000000", "10,000,000.00", "21474836.48", "9" * 30,
                                   "123456789012345678901234567890.12"])
def test_a_huge_amount_is_refused_not_a_crash(typed):
    with pytest.raises(ValueError, match="too large"):
        parse_money(typed)


@pytest.mark.parametrize("typed", [
    "", "   ", None, "abc", "12abc", "$12", "-", ".", "1.2.3",
    "1e3", "1E3", "1e30", "1e-2",   # exponents: nobody types prices that way; refused every time
    "NaN", "Infinity", "inf",
    "1,23", "12,34.50", "1234,567", ",5",   # a comma anywhere but between thousands is a typo, not 123
    "1_000",                        # Decimal would accept this; staff never mean it
    "١٢٣",                          # non-ASCII digits
])
def test_anything_else_is_refused(typed):
    with pytest.raises(ValueError, match="Enter an amount"):
        parse_money(typed)


def test_parsing_is_exact_where_float_would_drift():
    assert parse_money("0.29") == 29  # float: int(0.29 * 100) == 28
    assert parse_money("1.15") == 115
    assert sum(parse_money("0.10") for _ in range(10)) == parse_money("1.00")


@pytest.mark.parametrize(("cents", "currency", "shown"), [
    (0, "USD", "$0.00"),
    (5, "USD", "$0.05"),
    (2999, "USD", "$29.99"),
    (123456789, "USD", "$1,234,567.89"),
    (-150, "USD", "-$1.50"),
    (-5, "EUR", "-€0.05"),
    (-123456, "GBP", "-£1,234.56"),
    (250000, "KES", "KSh 2,500.00"),
    (-250000, "KES", "-KSh 2,500.00"),
    (1999, "ZAR", "R 19.99"),
])
def test_amounts_are_shown_with_the_currency_symbol_and_sign(cents, currency, shown):
    assert format_cents(cents, currency) == shown


@pytest.mark.parametrize(("cents", "shown"), [(2999, "29.99 CHF"), (-2999, "-29.99 CHF"), (100000, "1,000.00 CHF")])
def test_a_currency_without_a_known_symbol_is_shown_by_its_code(cents, shown):
    assert format_cents(cents, "CHF") == shown


def test_no_amount_shows_nothing():
    assert format_cents(None) == ""
    assert cents_to_input(None) == ""


@pytest.mark.parametrize(("cents", "typed"), [(0, "0.00"), (5, "0.05"), (2999, "29.99"), (123450, "1234.50"),
                                              (-150, "-1.50"), (-5, "-0.05")])
def test_an_amount_put_back_in_an_input_box_reads_as_typed(cents, typed):
    assert cents_to_input(cents) == typed


@pytest.mark.parametrize("cents", [0, 1, 99, 100, 2999, 123450, 999999999])
def test_what_the_input_box_shows_parses_back_to_the_same_cents(cents):
    assert parse_money(cents_to_input(cents)) == cents
