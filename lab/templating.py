"""Template filters: times in the lab's zone, numbers and recorded values written as
``workflows.formatting`` writes them, so a page reads as the labels and the printed record."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from markupsafe import Markup, escape

from lab.models import QcResult, StepValue
from lab.services.progress import lab_timezone
from lab.views.signing import needs_username
from workflows.codes import PRINTED_CODE
from workflows.formatting import (
    Number,
    format_datetime,
    format_number,
    format_quantity,
    format_recorded,
    format_weight,
    recorded_number,
)
from workflows.model import FieldSpec, StepState


def localtime(value: datetime | None) -> str:
    """``value`` (aware) in the lab's zone: ``2026-11-13 01:05 +01:00`` (``... UTC`` in UTC)."""
    return "" if value is None else format_datetime(value, lab_timezone())


def utc_text(text: str) -> datetime:
    """A canonical UTC text from the engine ("2026-11-25T08:30Z") as a datetime."""
    return datetime.fromisoformat(text)


def number(value: Number | None) -> str:
    """A computed number: three significant digits, half up (``1.80 × 10⁹``, ``32.3``)."""
    return "" if value is None else format_number(value)


def field_value(value: StepValue | None, spec: FieldSpec) -> str:
    """A stored value of ``spec`` as the printed record writes it, with its unit; a date-time
    in the lab's zone (the page says so), not in UTC as the record does."""
    if value is None:
        return ""
    if spec.type == "datetime":
        return localtime(utc_text(value.text))
    return format_recorded(value.text, spec.type, value.unit)


def result_value(result: QcResult) -> str:
    """A release result as the record and the certificate write it (``1.02 × 10⁶ cells/kg``,
    ``< 0.5 EU/mL``, ``no growth to date``): a result with a unit is a number."""
    return format_recorded(result.text, "number" if result.unit else "result", result.unit)


def codes(text: str | None) -> Markup:
    """``text`` escaped, each identity code in it marked as one (``<span class="code">``), so that a
    code inside a sentence never breaks across lines at its hyphens."""
    return Markup(PRINTED_CODE.sub(lambda found: f'<span class="code">{found[0]}</span>', str(escape(text or ""))))


def register(app: Flask) -> None:
    app.add_template_filter(localtime)
    app.add_template_filter(number)
    app.add_template_filter(format_quantity, "quantity")
    app.add_template_filter(recorded_number, "recorded")
    app.add_template_filter(format_weight, "kg")
    app.add_template_filter(field_value)
    app.add_template_filter(result_value)
    app.add_template_filter(utc_text)
    app.add_template_filter(codes)
    app.jinja_env.globals["StepState"] = StepState
    app.jinja_env.globals["signature_needs_username"] = needs_username
