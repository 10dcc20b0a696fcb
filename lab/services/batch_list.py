"""The list of every batch (``GET /batches``): newest first, a page at a time, searchable by
batch number, patient reference or COI and filtered by state, product and start date.

Read only. Paging is by key (created_at, id), not by offset, so a page costs the same however
old it is and a batch started meanwhile does not shift the pages. The cursor in the link is
signed with the app's secret key: a cursor that was altered is refused (400) instead of being
trusted. A page runs a fixed number of queries whatever the number of batches
(tests/test_batch_list.py counts them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import contains_eager
from sqlalchemy.sql.elements import ColumnElement

from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import Batch, Patient, ProcessDefinitionRecord
from lab.services.batch_summary import BatchSummary, summaries
from lab.services.progress import lab_timezone
from lab.services.record_marks import mark_of, newest_entry
from lab.workflow_registry import pinned_definition
from workflows.codes import normalize
from workflows.model import ProcessDefinition

PAGE_SIZE = 50
#: The list counts the batches matching its filter up to this many, and says "more than" past it:
#: a count of every batch ever made would grow with the facility's years.
COUNT_LIMIT = 1000
#: Longest search term: a batch number, patient reference or COI is at most 32 characters.
MAX_QUERY = 64
#: Longest cursor accepted before even checking its signature.
MAX_CURSOR = 200
#: The earliest start date a filter may name: CellTrail holds no batch from before.
EARLIEST = date(2000, 1, 1)
FILTER_KEYS = ("q", "state", "product", "from", "to")
_SALT = "celltrail.batch-list.page"
#: What a batch number, patient ID or COI holds once normalized (``*`` is a MOD 37-2 check character).
SEARCHABLE = re.compile(r"[A-Z0-9*]+")


class BadCursor(InvalidInput):
    """The ``page`` argument was not written by this lab (altered or cut): the request itself is wrong."""

    status = 400


@dataclass(frozen=True)
class BatchFilter:
    q: str = ""  # as typed (trimmed)
    state: str = ""
    product: str = ""
    date_from: date | None = None
    date_to: date | None = None

    def args(self) -> dict[str, str]:
        """The filter as URL arguments, for the paging links."""
        found = {"q": self.q, "state": self.state, "product": self.product,
                 "from": self.date_from.isoformat() if self.date_from else "",
                 "to": self.date_to.isoformat() if self.date_to else ""}
        return {key: value for key, value in found.items() if value}

    @property
    def active(self) -> bool:
        return bool(self.args())


@dataclass(frozen=True)
class Choices:
    states: list[tuple[str, str]]  # (state, title) of every definition, in file order
    products: list[tuple[str, str]]  # (process key, title of its newest version)


@dataclass(frozen=True)
class ListedBatch:
    batch: Batch
    definition: ProcessDefinition
    stage: str  # the current step's title while steps are recorded, else the state's title


@dataclass(frozen=True)
class BatchPage:
    rows: list[ListedBatch]
    total: int  # batches matching the filter, counted up to COUNT_LIMIT + 1
    newer: str | None  # cursor of the page before (newer batches), None on the first page
    older: str | None  # cursor of the next page (older batches), None on the last

    @property
    def more_than_counted(self) -> bool:
        return self.total > COUNT_LIMIT


def choices() -> Choices:
    """The states and products a filter may name: those of every definition a batch pinned (one query)."""
    records = db.session.scalars(select(ProcessDefinitionRecord).order_by(ProcessDefinitionRecord.key,
                                                                          ProcessDefinitionRecord.version)).all()
    states: dict[str, str] = {}
    products: dict[str, str] = {}
    for record in records:
        definition = definition_for_record(record)
        for state, title in definition.states.items():
            states.setdefault(state, title)
        products[record.key] = definition.title  # newest version last
    return Choices(list(states.items()), sorted(products.items()))


def definition_for_record(record: ProcessDefinitionRecord) -> ProcessDefinition:
    return pinned_definition(record.sha256, record.source_text, record.source_name)


def parse_filter(args: Mapping[str, str], *, today: date, known: Choices) -> BatchFilter:
    """Check the filter arguments; raises InvalidInput (422) naming each field at fault."""
    raw = {key: str(args.get(key, "")).strip() for key in FILTER_KEYS}
    errors: dict[str, str] = {}
    q = raw["q"]
    if len(q) > MAX_QUERY:
        errors["q"] = (f"The search is {len(q)} characters long; a batch number, patient ID or COI is at most "
                       f"32. Type at most {MAX_QUERY} characters, or part of the code.")
    elif not q.isprintable():
        errors["q"] = "The search holds unprintable characters; type or scan the code again."
    elif q and not normalize(q):
        errors["q"] = "Type part of a batch number, patient ID or COI, not only hyphens."
    elif q and not SEARCHABLE.fullmatch(normalize(q)):
        errors["q"] = (f"{q!r} cannot be part of a batch number, patient ID or COI: use letters, digits, "
                       "hyphens and the check character * only.")
    if raw["state"] and raw["state"] not in dict(known.states):
        errors["state"] = f"No batch state is called {raw['state'][:40]!r}; choose one from the list."
    if raw["product"] and raw["product"] not in dict(known.products):
        errors["product"] = f"No product is called {raw['product'][:40]!r}; choose one from the list."
    dates = {key: _date(raw[key], key, today, errors) for key in ("from", "to")}
    if dates["from"] and dates["to"] and dates["from"] > dates["to"]:
        errors["to"] = f"The range ends ({dates['to']}) before it starts ({dates['from']}): swap the dates."
    if errors:
        raise InvalidInput("The search was not understood: see the fields marked.", errors)
    return BatchFilter(q, raw["state"], raw["product"], dates["from"], dates["to"])


def _date(text: str, key: str, today: date, errors: dict[str, str]) -> date | None:
    if not text:
        return None
    label = "Started from" if key == "from" else "Started to"
    try:
        value = date.fromisoformat(text[:32]) if len(text) <= 32 else None
    except ValueError:
        value = None
    if value is None:
        errors[key] = f"{label}: {text[:32]!r} is not a date; use YYYY-MM-DD, such as {today.isoformat()}."
    elif value < EARLIEST:
        errors[key] = f"{label}: {value} is before {EARLIEST}; CellTrail holds no batch that old."
    elif value > today + timedelta(days=366):
        errors[key] = f"{label}: {value} is more than a year from today; check the year."
    else:
        return value
    return None


def signed_cursor(salt: str, *parts: Any) -> str:
    """``parts`` (ending with a row's time as ISO 8601 and its id) signed with the app's key."""
    return str(URLSafeSerializer(current_app.config["SECRET_KEY"], salt=salt).dumps(list(parts)))


def read_signed_cursor(salt: str, text: str, refused: BadCursor) -> tuple[list[Any], datetime, int]:
    """What ``signed_cursor(salt, ...)`` signed: the leading parts, then the row's aware time and
    id; raises ``refused`` when the text was altered, cut short or is too long."""
    if len(text) > MAX_CURSOR:
        raise refused
    try:
        *leading, moment, row_id = URLSafeSerializer(current_app.config["SECRET_KEY"], salt=salt).loads(text)
        when = datetime.fromisoformat(moment)
    except (BadData, ValueError, TypeError):
        raise refused from None
    if not isinstance(row_id, int) or when.tzinfo is None:
        raise refused
    return leading, when, row_id


def make_cursor(direction: str, batch: Batch) -> str:
    return signed_cursor(_SALT, direction, batch.created_at.astimezone(UTC).isoformat(), batch.id)


def read_cursor(text: str) -> tuple[str, datetime, int] | None:
    """(direction, created_at, id) from a ``page`` argument; raises BadCursor when it was altered."""
    text = text.strip()
    if not text:
        return None
    refused = BadCursor("That page link was altered or cut short.",
                        {"page": "That page link was altered or cut short; start again from the newest batches."})
    leading, when, batch_id = read_signed_cursor(_SALT, text, refused)
    if leading not in (["older"], ["newer"]):
        raise refused
    return leading[0], when, batch_id


def _matching(filters: BatchFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.q:
        part = normalize(filters.q)
        conditions.append(or_(*(func.replace(func.upper(column), "-", "").contains(part)
                                for column in (Batch.batch_number, Patient.patient_ref, Patient.coi))))
    if filters.state:
        conditions.append(Batch.state == filters.state)
    if filters.product:
        conditions.append(ProcessDefinitionRecord.key == filters.product)
    if filters.date_from:
        conditions.append(Batch.created_at >= _start_of(filters.date_from))
    if filters.date_to:
        conditions.append(Batch.created_at < _start_of(filters.date_to + timedelta(days=1)))
    return conditions


def _start_of(day: date) -> datetime:
    """Midnight at the start of ``day`` in the lab's time zone, in UTC."""
    return datetime.combine(day, time(0), tzinfo=lab_timezone()).astimezone(UTC)


def _joined(query: Select[Any]) -> Select[Any]:
    return query.join(Batch.patient).join(Batch.definition)


#: What a listed batch's definition row brings: not its text (about 33 KB, the same for every batch of a
#: version), which choices() has read once and the summaries parse once per version.
_LISTED_DEFINITION = (ProcessDefinitionRecord.key, ProcessDefinitionRecord.version, ProcessDefinitionRecord.sha256,
                      ProcessDefinitionRecord.source_name)


def batch_page(filters: BatchFilter, cursor: str = "", *, size: int = PAGE_SIZE) -> BatchPage:
    """One page of the batches matching ``filters``, newest first, after or before ``cursor``."""
    size = max(1, min(size, PAGE_SIZE))
    position = read_cursor(cursor)
    conditions = _matching(filters)
    query = _joined(select(Batch, newest_entry(Batch.id))).where(*conditions).options(
        contains_eager(Batch.patient), contains_eager(Batch.definition).load_only(*_LISTED_DEFINITION))
    going_newer = position is not None and position[0] == "newer"
    if position is not None:
        _, when, batch_id = position
        if going_newer:
            query = query.where(or_(Batch.created_at > when, and_(Batch.created_at == when, Batch.id > batch_id)))
        else:
            query = query.where(or_(Batch.created_at < when, and_(Batch.created_at == when, Batch.id < batch_id)))
    order = (Batch.created_at.asc(), Batch.id.asc()) if going_newer else (Batch.created_at.desc(), Batch.id.desc())
    found = db.session.execute(query.order_by(*order).limit(size + 1)).all()
    more = len(found) > size
    current = {batch.id: mark_of(entry, batch.version) for batch, entry in found[:size]}  # before the summaries
    batches = [batch for batch, _ in found[:size]]
    if going_newer:
        batches.reverse()
    matching = _joined(select(Batch.id)).where(*conditions).limit(COUNT_LIMIT + 1).subquery()
    total = db.session.scalar(select(func.count()).select_from(matching)) or 0
    summary = summaries(current)
    rows = [_row(batch, summary[batch.id]) for batch in batches]
    if going_newer:
        newer = make_cursor("newer", batches[0]) if more and batches else None
        older = make_cursor("older", batches[-1]) if batches else None
    else:
        newer = make_cursor("newer", batches[0]) if position is not None and batches else None
        older = make_cursor("older", batches[-1]) if more else None
    return BatchPage(rows, total, newer, older)


def _row(batch: Batch, summary: BatchSummary) -> ListedBatch:
    definition = summary.definition
    stage = definition.states.get(batch.state, batch.state.replace("_", " "))
    if summary.recording and summary.current_step is not None:
        stage = summary.current_step.title
    return ListedBatch(batch, definition, stage)
