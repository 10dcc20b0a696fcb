"""Template filters: times in the lab's zone, numbers the way the lab reads them."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Flask, current_app

from lab.views.signing import needs_username
from workflows.formatting import format_number
from workflows.model import StepState


def localtime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """``value`` (aware UTC) in the lab's time zone, with the zone's abbreviation."""
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(current_app.config["TIMEZONE"]))
    return f"{local.strftime(fmt)} {local.tzname()}"


def utc_text(text: str) -> datetime:
    """A canonical UTC text from the engine ("2026-11-25T08:30Z") as a datetime."""
    return datetime.fromisoformat(text)


def number(value: float | None) -> str:
    return "" if value is None else format_number(value)


def register(app: Flask) -> None:
    app.add_template_filter(localtime)
    app.add_template_filter(number)
    app.add_template_filter(utc_text)
    app.jinja_env.globals["StepState"] = StepState
    app.jinja_env.globals["signature_needs_username"] = needs_username
