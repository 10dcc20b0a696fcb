"""Reading the audit trail: filters checked and resolved, pages and exports newest first.

Pages are keyset-paged on (occurred_at, id), which an index serves for every filter
(lab.models.audit), so a page costs the same on the first or the millionth entry: no
OFFSET, and no count of the whole table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Row, Select, literal, select, tuple_

from lab.exceptions import InvalidInput, LabError
from lab.extensions import Base, db
from lab.models import Audited, AuditEvent, Batch, User
from lab.services.progress import lab_timezone
from workflows.codes import CodeError, CodeKind, parse_code

PAGE_SIZE = 50
EXPORT_CHUNK = 1000
#: The earliest date a filter may name: CellTrail holds no record from before.
EARLIEST = date(2000, 1, 1)
#: How far past today a range may end (a range ending "end of the month" is fine; 3000 is not).
LATEST_AHEAD = timedelta(days=366)
ACTION_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
FILTER_KEYS = ("batch", "user", "action", "table", "from", "to")


class NotFoundInTrail(LabError):
    """A filter names a batch or user this lab does not have."""

    status = 404


@dataclass(frozen=True)
class TrailFilter:
    """A checked filter of the trail; each part is optional."""

    batch: Batch | None = None
    user: User | None = None
    action: str | None = None
    table: str | None = None
    date_from: date | None = None
    date_to: date | None = None

    def args(self) -> dict[str, str]:
        """The query arguments that give this filter again."""
        values = {"batch": self.batch.batch_number if self.batch else None,
                  "user": self.user.username if self.user else None, "action": self.action, "table": self.table,
                  "from": self.date_from.isoformat() if self.date_from else None,
                  "to": self.date_to.isoformat() if self.date_to else None}
        return {key: value for key, value in values.items() if value}

    def describe(self) -> str:
        args = self.args()
        if not args:
            return "all entries"
        text = "; ".join(f"{key}={value}" for key, value in args.items())
        return f"{text} (dates in {lab_timezone().key})" if self.date_from or self.date_to else text


@dataclass(frozen=True)
class Page:
    #: Rows with every column of AuditEvent and the ``batch_number`` of the entry's batch.
    rows: Sequence[Row[Any]]
    #: The id to pass as ``before`` for the next (older) page; None on the last page.
    next_before: int | None


def audited_tables() -> list[str]:
    """Names of the tables the trail records, sorted."""
    return sorted(mapper.tables[0].name for mapper in Base.registry.mappers
                  if issubclass(mapper.class_, Audited))


def parse_filter(args: Mapping[str, str], *, today: date) -> TrailFilter:
    """Check and resolve filter arguments (``FILTER_KEYS``); ``today`` is the lab's date.

    Raises InvalidInput naming each malformed or absurd argument, NotFoundInTrail for a
    batch or user this lab does not have.
    """
    raw = {key: args.get(key, "").strip() for key in FILTER_KEYS}
    errors: dict[str, str] = {}
    for key, value in raw.items():
        if len(value) > 64:
            errors[key] = f"The {key} filter is too long (at most 64 characters)."
    if raw["action"] and "action" not in errors and not ACTION_RE.fullmatch(raw["action"]):
        errors["action"] = ("An action is a name such as step.correct: lower-case letters, digits, dots, "
                            "hyphens and underscores.")
    if raw["table"] and "table" not in errors and raw["table"] not in audited_tables():
        errors["table"] = f"No audited table is called {raw['table']!r}; choose one from the list."
    dates = {key: _date(raw[key], key, today, errors) for key in ("from", "to")}
    if dates["from"] and dates["to"] and dates["from"] > dates["to"]:
        errors["to"] = f"The range ends ({dates['to']}) before it starts ({dates['from']}): swap the dates."
    batch_number = None
    if raw["batch"] and "batch" not in errors:
        try:
            batch_number = str(parse_code(raw["batch"], CodeKind.BATCH))
        except CodeError as error:
            errors["batch"] = str(error)
    if errors:
        raise InvalidInput("The audit trail was not filtered: " + " ".join(errors.values()), errors)
    batch = user = None
    if batch_number:
        batch = db.session.scalar(select(Batch).where(Batch.batch_number == batch_number))
        if batch is None:
            raise NotFoundInTrail(f"No batch {batch_number} is registered in this lab.")
    if raw["user"]:
        user = db.session.scalar(select(User).where(User.username == raw["user"].lower()))
        if user is None:
            raise NotFoundInTrail(f"No user {raw['user']!r} has an account in this lab.")
    return TrailFilter(batch, user, raw["action"] or None, raw["table"] or None, dates["from"], dates["to"])


def _date(text: str, key: str, today: date, errors: dict[str, str]) -> date | None:
    if not text or key in errors:
        return None
    label = "From" if key == "from" else "To"
    try:
        if not DATE_RE.fullmatch(text):
            raise ValueError
        value = date.fromisoformat(text)
    except ValueError:
        errors[key] = f"{label}: {text!r} is not a date; use YYYY-MM-DD, such as {today.isoformat()}."
        return None
    if value < EARLIEST:
        errors[key] = f"{label}: {value} is before {EARLIEST}; CellTrail holds no record that old."
    elif value > today + LATEST_AHEAD:
        errors[key] = f"{label}: {value} is more than a year from today; check the year."
    return value


def page(filters: TrailFilter, *, before: int | None = None, size: int = PAGE_SIZE) -> Page:
    """The ``size`` newest entries matching ``filters``, older than entry ``before`` if given.

    Raises NotFoundInTrail when ``before`` is no entry of the trail.
    """
    query = _query(filters)
    if before is not None:
        cursor = db.session.execute(select(AuditEvent.occurred_at, AuditEvent.id)
                                    .where(AuditEvent.id == before)).one_or_none()
        if cursor is None:
            raise NotFoundInTrail(f"The audit trail has no entry {before} to page from: start again from the "
                                  "newest entries.")
        query = query.where(tuple_(AuditEvent.occurred_at, AuditEvent.id)
                            < tuple_(literal(cursor.occurred_at, AuditEvent.occurred_at.type), literal(cursor.id)))
    found = db.session.execute(query.limit(size + 1)).all()
    more = len(found) > size
    return Page(found[:size], found[size - 1].id if more else None)


def rows(filters: TrailFilter) -> Iterator[Row[Any]]:
    """Every entry matching ``filters``, newest first, a chunk at a time (for exports).
    Rows are plain tuples, not ORM objects, so nothing accumulates in the session."""
    before: int | None = None
    while True:
        chunk = page(filters, before=before, size=EXPORT_CHUNK)
        yield from chunk.rows
        if chunk.next_before is None:
            return
        before = chunk.next_before


def _query(filters: TrailFilter) -> Select[Any]:
    query = (select(*AuditEvent.__table__.c, Batch.batch_number).outerjoin(Batch, Batch.id == AuditEvent.batch_id)
             .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()))
    if filters.batch is not None:
        query = query.where(AuditEvent.batch_id == filters.batch.id)
    if filters.user is not None:
        query = query.where(AuditEvent.actor_id == filters.user.id)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.table:
        query = query.where(AuditEvent.table_name == filters.table)
    if filters.date_from:
        query = query.where(AuditEvent.occurred_at >= _start_of(filters.date_from))
    if filters.date_to:
        query = query.where(AuditEvent.occurred_at < _start_of(filters.date_to + timedelta(days=1)))
    return query


def _start_of(day: date) -> datetime:
    """Midnight at the start of ``day`` in the lab's time zone, in UTC."""
    return datetime.combine(day, time(0), tzinfo=lab_timezone()).astimezone(UTC)
