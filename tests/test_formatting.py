"""workflows.formatting: the one way a number, a quantity, a date and a date-time are written for people."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from workflows.formatting import (
    decimal,
    format_date,
    format_datetime,
    format_number,
    format_quantity,
    format_recorded,
    format_utc,
    format_weight,
    recorded_number,
    round_half_up,
)

pytestmark = pytest.mark.requirements("ALCOA-LEGIBLE")


@pytest.mark.parametrize(("value", "expected"), [
    ("32.25", "32.3"),  # half up from the decimal text, where a binary float rounds half to even
    (32.25, "32.3"),
    (Decimal("32.25"), "32.3"),
    ("32.35", "32.4"),
    (2.675, "2.68"),  # repr 2.675, though the float is 2.67499999...
    ("0.125", "0.125"),
    ("0.1255", "0.126"),
    ("-32.25", "-32.3"),  # half away from zero
])
def test_computed_numbers_round_half_up_from_their_decimal_text(value, expected):
    assert format_number(value) == expected


def test_round_half_up_works_on_the_text_not_the_float():
    assert round_half_up("32.25", 1) == Decimal("32.3")
    assert round_half_up(32.25, 1) == Decimal("32.3")
    assert round_half_up(0.045, 2) == Decimal("0.05")
    assert round(0.045, 2) == 0.04  # what a float would have given


@pytest.mark.parametrize(("value", "expected"), [
    (1234.5, "1235"),  # the integer part is never rounded away
    (7.5, "7.5"),
    (91.0, "91"),
    ("0", "0"),
    (0.0, "0"),
    (99999, "99999"),
    ("0.001", "0.001"),
])
def test_three_significant_digits_without_losing_the_integer_part(value, expected):
    assert format_number(value) == expected


@pytest.mark.parametrize(("value", "digits", "expected"), [
    ("1.8e9", 3, "1.80 × 10⁹"),
    (1.8e9, 3, "1.80 × 10⁹"),
    ("1.8e9", None, "1.8 × 10⁹"),  # recorded: the digits typed, one notation
    ("1.80e9", None, "1.80 × 10⁹"),
    ("1800000000", None, "1.8 × 10⁹"),
    ("1.234e9", None, "1.234 × 10⁹"),
    ("6.45e7", 3, "6.45 × 10⁷"),
    ("1e5", 3, "1.00 × 10⁵"),
    ("99999", 3, "99999"),  # just below the notation's threshold
    ("9.996e5", 3, "1.00 × 10⁶"),  # the mantissa rounds up to 10
    ("0.0005", 3, "5.00 × 10⁻⁴"),
    ("-2.5e6", None, "-2.5 × 10⁶"),
])
def test_large_and_small_numbers_are_written_in_one_notation(value, digits, expected):
    assert format_number(value, digits) == expected


@pytest.mark.requirements("ALCOA-ORIGINAL")
@pytest.mark.parametrize(("value", "expected"), [("91.20", "91.20"), ("32.25", "32.25"), ("7", "7"), ("0.50", "0.50")])
def test_a_recorded_number_keeps_every_digit_typed(value, expected):
    assert format_number(value, None) == expected


def test_integers_are_counts_and_printed_exactly():
    assert format_number(3) == "3"
    assert format_number(1234567) == "1234567"
    assert format_number(3, None) == "3"


@pytest.mark.parametrize("value", ["abc", "", "1,5", "nan", "inf", float("nan"), float("inf")])
def test_what_is_not_a_finite_number_is_refused(value):
    with pytest.raises(ValueError):
        format_number(value)


def test_a_boolean_is_not_a_number():
    with pytest.raises(TypeError):
        decimal(True)


def test_quantities_carry_their_unit():
    assert format_quantity(32.25, "mL") == "32.3 mL"
    assert format_quantity("32.25", "mL", None) == "32.25 mL"
    assert format_quantity("1.8e9", "cells") == "1.80 × 10⁹ cells"
    assert format_quantity(91, "%") == "91 %"
    assert format_quantity("7.5", None) == "7.5"


def test_dates_are_iso():
    assert format_date(date(2026, 11, 3)) == "2026-11-03"


def test_date_times_say_their_zone_to_the_minute():
    moment = datetime(2026, 11, 13, 0, 5, 27, tzinfo=UTC)
    assert format_datetime(moment) == "2026-11-13 00:05 UTC"
    assert format_utc(moment) == "2026-11-13 00:05 UTC"
    assert format_datetime(moment, ZoneInfo("Europe/Berlin")) == "2026-11-13 01:05 +01:00"
    assert format_datetime(moment, ZoneInfo("America/New_York")) == "2026-11-12 19:05 -05:00"
    assert format_datetime(moment, timezone(timedelta(hours=5, minutes=30))) == "2026-11-13 05:35 +05:30"
    # The same moment written in UTC, whatever zone it carries.
    assert format_utc(moment.astimezone(ZoneInfo("Asia/Tokyo"))) == "2026-11-13 00:05 UTC"
    # Summer time: the offset of that day.
    assert format_datetime(datetime(2026, 7, 1, 12, 0, tzinfo=UTC), ZoneInfo("Europe/Berlin")) == "2026-07-01 14:00 +02:00"


def test_a_naive_date_time_is_refused():
    naive = datetime(2026, 11, 13, 0, 5)
    for write in (format_datetime, format_utc):
        with pytest.raises(ValueError, match="no time zone"):
            write(naive)


@pytest.mark.parametrize(("value", "expected"), [(91.0, "91"), (1.8e9, "1.8 × 10⁹"), (92.5, "92.5"), (None, "")])
def test_a_recorded_number_read_back_as_a_float_prints_as_typed(value, expected):
    assert recorded_number(value) == expected


@pytest.mark.parametrize(("text", "kind", "unit", "expected"), [
    ("2026-11-13T00:05Z", "datetime", None, "2026-11-13 00:05 UTC"),
    ("2026-11-13T00:05:27Z", "datetime", None, "2026-11-13 00:05 UTC"),
    ("1.8e9", "number", "cells", "1.8 × 10⁹ cells"),
    ("< 0.5", "number", "EU/mL", "< 0.5 EU/mL"),
    ("32.25", "number", "mL", "32.25 mL"),
    ("12", "integer", None, "12"),
    ("no growth to date", "result", None, "no growth to date"),
    ("not a date", "datetime", None, "not a date"),  # never stored by the engine: printed as stored
])
def test_a_stored_value_reads_one_way_everywhere(text, kind, unit, expected):
    assert format_recorded(text, kind, unit) == expected


@pytest.mark.parametrize(("kg", "expected"), [(64.5, "64.5 kg"), (80.0, "80 kg"), (Decimal("61.0"), "61 kg"),
                                              (72.25, "72.25 kg"), (100, "100 kg"), ("102.50", "102.5 kg")])
def test_a_weight_reads_as_recorded_without_zeros_it_was_not_typed_with(kg, expected):
    assert format_weight(kg) == expected


@pytest.mark.parametrize(("value", "unit", "text"), [
    (1, "vials", "1 vial"), (2, "vials", "2 vials"), (1.0, "sets", "1 set"), (0, "bags", "0 bags"),
    (1, "mL", "1 mL"), (1, "cells/kg", "1 cells/kg"), (1, "%", "1 %"), (1.5, "vials", "1.5 vials"),
])
def test_a_counted_unit_reads_in_the_singular_for_exactly_one(value: float, unit: str, text: str) -> None:
    assert format_quantity(value, unit) == text
