"""How a number, a quantity, a date and a date-time are written for people: one function each.

The pages, the labels (PDF and ZPL), the executed batch record, the certificate of analysis,
the CSV exports and the chart's table all print through these, so the same fact reads the
same everywhere (a bag of 32.25 mL is "32.3 mL" on its label and in its record).

* Numbers are rounded from their decimal text (the text recorded, or ``repr`` of a float),
  never through a binary float, with one rule: half up (32.25 -> 32.3).
* A computed number keeps three significant digits, but never loses its integer part
  (1235, 32.3, 7.5); a recorded one (``digits=None``) keeps every digit typed.
* Very large and very small numbers (cell counts, 1e5 and above or below 1e-3) are written
  in one notation: ``1.80 × 10⁹``.
* A date-time is written ``2026-11-13 00:05 UTC``, or in the lab's zone with its offset
  (``2026-11-13 01:05 +01:00``) where a page says so; a date ``2026-11-13`` (ISO 8601, one
  reading in every country).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
#: Numbers at or above this, or below SMALL (but not zero), are written as a power of ten.
LARGE = Decimal("1e5")
SMALL = Decimal("1e-3")
#: Significant digits of a computed number.
DIGITS = 3

Number = Decimal | str | int | float
#: A number as a result may be reported: below or above a limit of quantitation ("< 0.5").
_CENSORED = re.compile(r"([<>≤≥]\s*)?(.+)")


def decimal(value: Number) -> Decimal:
    """The exact decimal of ``value``: its text as recorded, or the shortest text of a float.

    Raises ValueError for text that is not a finite number.
    """
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not a number")
    if isinstance(value, Decimal):
        result = value
    else:
        text = repr(value) if isinstance(value, float) else str(value).strip()
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return result


def round_half_up(value: Number, places: int) -> Decimal:
    """``value`` rounded half up to ``places`` decimals (32.25, 1 -> 32.3)."""
    return decimal(value).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def format_number(value: Number, digits: int | None = DIGITS) -> str:
    """A number for people: ``1.80 × 10⁹``, ``32.3``, ``1235``, ``7.5``, ``0``; an ``int`` as it is.

    ``digits`` significant digits (the integer part is never rounded away); ``None`` keeps
    every digit of a recorded value and changes only its notation (``1.80e9`` -> ``1.80 × 10⁹``;
    a number written out in full loses the zeros that only place it: ``1800000000`` -> ``1.8 × 10⁹``).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a count of things (bags, days): exact
    exact = decimal(value)
    if exact.is_zero():
        return "0"
    if abs(exact) >= LARGE or abs(exact) < SMALL:
        exponent = exact.adjusted()
        mantissa = exact.scaleb(-exponent)
        if digits is not None:
            mantissa = mantissa.quantize(Decimal(1).scaleb(1 - digits), ROUND_HALF_UP)
            if abs(mantissa) >= 10:  # 9.996e5 rounds up to 10.00
                exponent += 1
                mantissa = exact.scaleb(-exponent).quantize(Decimal(1).scaleb(1 - digits), ROUND_HALF_UP)
        elif exact.as_tuple().exponent == 0:  # written out in full (1800000000): its zeros are not digits typed
            mantissa = mantissa.normalize()
        return f"{mantissa:f} × 10{str(exponent).translate(_SUPERSCRIPTS)}"
    if digits is None:
        text = f"{exact:f}"
    else:
        places = max(0, digits - 1 - exact.adjusted())
        text = f"{exact.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP):f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "0") else text


def format_quantity(value: Number, unit: str | None, digits: int | None = DIGITS) -> str:
    """A number with its unit: ``32.3 mL``, ``1.80 × 10⁹ cells``, ``91 %``; the number alone without one.
    A counted unit named in the plural reads in the singular for exactly one: ``1 vial``, ``2 vials``."""
    number = format_number(value, digits)
    if unit and number == "1" and _COUNTED.fullmatch(unit):
        unit = unit[:-1]
    return f"{number} {unit}" if unit else number


#: A unit that counts things, in the plural (vials, sets, bags, cells): lower-case letters ending in s.
_COUNTED = re.compile(r"[a-z]{2,}s")


def format_weight(kg: Number) -> str:
    """A body weight as recorded (to 0.01 kg), with no zeros it was not typed with: ``64.5 kg``,
    ``80 kg`` (never ``80.0 kg``), ``72.25 kg``: the weight a dose per kg is counted for."""
    return format_quantity(round_half_up(kg, 2).normalize(), "kg", None)


def format_date(day: date) -> str:
    """ISO 8601 (2026-11-25): one reading in every country."""
    return day.isoformat()


def format_datetime(moment: datetime, zone: tzinfo | None = None) -> str:
    """``2026-11-25 14:03 UTC``; in ``zone`` (the lab's), with its offset: ``2026-11-25 15:03 +01:00``.

    Without ``zone`` the moment is written in the zone it carries. A naive moment is refused:
    a printed time must say its zone.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone.")
    if zone is not None:
        moment = moment.astimezone(zone)
    offset = moment.utcoffset()
    assert offset is not None
    if not offset:
        return f"{moment:%Y-%m-%d %H:%M} UTC"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{moment:%Y-%m-%d %H:%M} {sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def format_utc(moment: datetime) -> str:
    """The moment in UTC, as ``format_datetime`` writes it."""
    return format_datetime(moment, UTC)


def recorded_number(value: float | None) -> str:
    """A recorded number (a count, a viability) read back as a float, with every digit typed:
    a float read from the recorded text gives that text back (its shortest repr), but for the
    ``.0`` a whole number gains (``91`` typed reads ``91``, ``1.8e9`` ``1.8 × 10⁹``)."""
    if value is None:
        return ""
    return format_number(str(int(value)) if float(value).is_integer() else value, None)


def format_recorded(text: str, kind: str, unit: str | None) -> str:
    """A value in its storage form as people read it, with its unit: a date-time
    (``2026-11-13T00:05Z``) as ``2026-11-13 00:05 UTC``, a number with every digit typed
    in the one notation (``1.8e9`` -> ``1.8 × 10⁹``, ``< 0.5`` stays), other text as stored.

    ``kind`` is the field's type or the release test's kind. Text that does not read as
    its kind (never stored by the engine) is printed as stored rather than refused.
    """
    shown = text
    try:
        if kind == "datetime":
            shown = format_utc(datetime.fromisoformat(text))
        elif kind == "integer":
            shown = format_number(int(text))
        elif kind == "number":
            censored = _CENSORED.fullmatch(text.strip())
            if censored is not None:
                shown = f"{censored[1] or ''}{format_number(censored[2], None)}"
    except ValueError:
        shown = text
    return f"{shown} {unit}" if unit else shown
