"""Template filters: times in the lab's zone, numbers and recorded values written as
``workflows.formatting`` writes them, so a page reads as the labels and the printed record."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from datetime import datetime, tzinfo
from functools import lru_cache, partial

from flask import Flask, current_app, g, request, url_for
from jinja2.runtime import Macro
from markupsafe import Markup, escape

from lab.models import QcResult, StepValue
from lab.services.audit_trail import Shown
from lab.services.dashboard import BatchRow
from lab.services.progress import lab_timezone
from lab.services.record_marks import PerMark, cache
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
    return "" if value is None else _written(value, lab_timezone())


@lru_cache(maxsize=4096)  # the same moments come back on every view of a list (a batch's start, a step's entry)
def _written(moment: datetime, zone: tzinfo) -> str:
    return format_datetime(moment, zone)


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


def shown(value: Shown) -> Markup:
    """A value of the audit trail as its ledger shows it (templates/audit/_entries.html): shortened
    with the whole on demand, muted when empty or redacted, a code or a time kept on one line, and
    what an id names with the stored id in its title."""
    text = escape(value.text)
    if value.full:
        return Markup(f'<details class="long-value"><summary>{text}</summary>'
                      f'<span class="full-value">{escape(value.full)}</span></details>')
    if value.muted:
        return Markup(f'<span class="muted">{text}</span>')
    kind = ' class="code"' if value.code else ' class="moment"' if value.moment else ""
    title = f' title="stored as {escape(value.stored)}"' if value.stored else ""
    return Markup(f"<span{kind}{title}>{text}</span>")


@lru_cache(maxsize=256)  # a process's states are those of its definitions: a few dozen
def state_badge(state: str) -> Markup:
    """A state as a badge: its class names the state (``state-in_process``), its text reads it."""
    return Markup(f'<span class="badge state-{escape(state.replace(" ", "_"))}">{escape(state.replace("_", " "))}</span>')


#: Stands for an argument in the URL that :func:`row_url` builds once; no URL quoting changes it.
_PLACEHOLDER = "ROWURL{}ARGUMENT"
#: Whether a text is made of characters URL quoting never changes (codes like ``B-A9999-26-00001-5``).
_unquoted = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch


def row_url(endpoint: str, **values: object) -> str:
    """``url_for(endpoint, **values)``, for the links drawn on every row of a long table (the
    dashboard, the batch list). Flask builds the endpoint's URL once per request, with stand-ins
    for the arguments; each row's values then go in their places, quoted as the route's default
    converter quotes them (a code, which quoting leaves as it is, goes in as it is). An argument with
    a converter of its own (``<int:id>``) is left to ``url_for`` every time. tests/test_row_url.py
    compares the two on awkward values."""
    built: dict[tuple[str, ...], _SplitUrl | None] = g.setdefault("row_urls", {})
    key = (endpoint, *values)
    if key not in built:
        built[key] = _split_url(endpoint, tuple(values))
    split = built[key]
    if split is None:
        return url_for(endpoint, **values)
    names, pieces, quote = split
    out = [pieces[0]]
    for name, piece in zip(names, pieces[1:], strict=True):
        value = values[name]
        out += (value if type(value) is str and _unquoted(value) else quote(value), piece)
    return "".join(out)


#: The arguments in the order the URL has them, the URL's text around them, and their quoting.
_SplitUrl = tuple[tuple[str, ...], tuple[str, ...], Callable[[object], str]]


def _split_url(endpoint: str, names: tuple[str, ...]) -> _SplitUrl | None:
    """The endpoint's URL cut where each argument goes, or None unless each is a plain ``<name>``
    in the endpoint's only rule."""
    rules = list(current_app.url_map.iter_rules(endpoint))
    if len(rules) != 1 or any(f"<{name}>" not in rules[0].rule for name in names):
        return None
    stand_ins = {name: _PLACEHOLDER.format(i) for i, name in enumerate(names)}
    url = url_for(endpoint, **stand_ins)
    ordered = tuple(sorted(names, key=lambda name: url.index(stand_ins[name])))
    pieces = []
    for name in ordered:
        before, _, url = url.partition(stand_ins[name])
        pieces.append(before)
    converter = current_app.url_map.converters["default"](current_app.url_map)
    return ordered, (*pieces, url), converter.to_url


#: Dashboard rows kept per app: a few variants (as the clocks move) of some 250 batches' rows.
ROWS_KEPT = 2000


def kept_row(macro: Macro, row: BatchRow, *shown: Hashable) -> Markup:
    """``macro(row, *shown)``, a batch's row on the dashboard (templates/main/_batch_rows.html),
    drawn again on every view: kept per app under the batch's mark (the row reads of ``row`` only
    what its record gives at that mark), the batch's names, ``shown`` (what moves with the clock,
    as the row writes it) and the path the app is served under (the row's links)."""
    kept: PerMark[Markup] = cache("dashboard_rows", ROWS_KEPT)
    return kept.get(row.batch.id, row.batch.mark, partial(macro, row, *shown),
                    macro.name, request.script_root, row.batch, *shown)


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
    app.add_template_filter(shown)
    app.jinja_env.globals["StepState"] = StepState
    app.jinja_env.globals["row_url"] = row_url
    app.jinja_env.globals["kept_row"] = kept_row
    app.jinja_env.globals["state_badge"] = state_badge
    app.jinja_env.globals["signature_needs_username"] = needs_username
