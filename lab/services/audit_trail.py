"""Reading the audit trail: filters checked and resolved, pages and exports newest first.

Pages are keyset-paged on (occurred_at, id), which an index serves for every filter
(lab.models.audit), so a page costs the same on the first or the millionth entry: no
OFFSET, and no count of the whole table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import BigInteger, Row, Select, String, cast, literal, null, select, tuple_, union_all

from lab.audit import REDACTED
from lab.exceptions import InvalidInput, LabError
from lab.extensions import Base, db
from lab.models import Audited, AuditEvent, Batch, User
from lab.services.progress import lab_timezone
from workflows.codes import CodeError, CodeKind, parse_code
from workflows.formatting import format_datetime

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


def before_id(text: str, *, again: str) -> int | None:
    """The entry id a page of the trail ends before (``before``), or None for the newest page;
    raises InvalidInput naming ``text`` and what to do ``again``."""
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise InvalidInput("Not a page of the audit trail.", {"before": f"{text[:30]!r} is not an entry number; {again}."})
    return int(text)


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


# --- entries as a person reads them --------------------------------------------------------------------
# What is stored stays as it is (the CSV export writes it raw); a page names what an id refers to,
# labels fields in words and shortens long values, with the whole value one click away.

#: A value longer than this, or with a word longer than LONG_WORD (a hash), is shortened on screen.
SHORT = 60
LONG_WORD = 32
#: A value that is one identity code (a container, lot or location code): set as a code, never wrapped.
CODE_LIKE = re.compile(r"[A-Z]{1,4}(-[A-Z0-9*]{1,12}){2,5}")
ISO_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})")
ROLE_WORDS = {"technician": "technician", "supervisor": "supervisor", "qc_analyst": "QC analyst",
              "qa_officer": "QA officer", "auditor": "auditor", "admin": "administrator"}


def _user_name(row: Row[Any]) -> str:
    return f"{row.full_name} ({row.username})"


#: How a row of a table that a foreign key (or an entry's record) points at is named: the columns
#: read, how they are written, and whether the name is an identity code (which never wraps).
NAMES: dict[str, tuple[tuple[str, ...], Any, bool]] = {
    "users": (("full_name", "username", "role"), _user_name, False),
    "batches": (("batch_number",), lambda r: r.batch_number, True),
    "containers": (("code",), lambda r: r.code, True),
    "material_lots": (("code",), lambda r: r.code, True),
    "equipment": (("code",), lambda r: r.code, True),
    "patients": (("patient_ref",), lambda r: r.patient_ref, True),
    "material_items": (("name",), lambda r: r.name, False),
    "attachments": (("filename",), lambda r: r.filename, False),
    "process_definitions": (("key", "version"), lambda r: f"{r.key} version {r.version}", False),
    "step_entries": (("step_key", "occurrence"), lambda r: f"{r.step_key} #{r.occurrence}", False),
    "qc_results": (("test_key",), lambda r: f"result of {r.test_key}", False),
    "step_values": (("field_key",), lambda r: r.field_key, False),
    "signatures": (("meaning", "printed_name"), lambda r: f"{r.meaning}, {r.printed_name}", False),
    "api_tokens": (("name", "prefix"), lambda r: f"\u201c{r.name}\u201d ({r.prefix}\u2026)", False),
}
TABLE_WORDS = {
    "users": "User", "containers": "Container", "downloads": "Download", "equipment_log": "Equipment log entry",
    "lot_decisions": "Lot decision", "process_versions": "Process version", "sign_in_attempts": "Sign-in attempt",
    "issued_records": "Issued record", "lot_consumptions": "Lot consumption", "dispositions": "Disposition",
    "audit_reviews": "Audit review", "batches": "Batch", "weight_corrections": "Weight correction",
    "signatures": "Signature", "step_values": "Step value", "lot_checks": "Lot check", "deviations": "Deviation",
    "equipment": "Equipment", "signing_failures": "Signing failure", "material_lots": "Material lot",
    "qc_results": "QC result", "label_prints": "Label print", "process_definitions": "Process definition",
    "attachments": "Attachment", "step_entries": "Step entry", "patients": "Patient",
    "material_items": "Material item", "custody_events": "Custody event", "api_tokens": "API token",
    "submissions": "Submission",
}
ACTION_WORDS = {
    "user.login": "Signed in", "user.sign_in_refused": "Sign-in refused", "user.create": "Created a user",
    "user.update": "Changed a user", "user.unlock": "Unlocked a user", "user.reset_password": "Reset a password",
    "user.change_password": "Changed their password", "user.end_sessions": "Ended sessions",
    "step.record": "Recorded a step", "step.verify": "Verified a step", "step.correct": "Corrected a value",
    "signature.refused": "Signature refused", "result.record": "Recorded a QC result",
    "result.correct": "Corrected a QC result", "record.issue": "Issued the batch record",
    "process.import": "Imported a process", "process.approve": "Approved a process",
    "patient.register": "Registered a patient", "patient.correct_weight": "Corrected a patient's weight",
    "material.lot_receive": "Received a lot", "material.lot_recall": "Recalled a lot",
    "material.lot_check": "Checked a lot", "material.item_create": "Created a material item",
    "material.lot_released": "Released a lot", "material.lot_rejected": "Rejected a lot",
    "label.print": "Printed labels", "equipment.register": "Registered equipment",
    "equipment.out_of_service": "Took equipment out of service",
    "equipment.returned_to_service": "Returned equipment to service",
    "deviation.open": "Opened a deviation", "deviation.investigate": "Investigated a deviation",
    "deviation.close": "Closed a deviation", "demo.inventory": "Set up the demo inventory",
    "custody.scan": "Scanned a container", "custody.mismatch": "Scan mismatch", "batch.start": "Started a batch",
    "audit.review": "Reviewed the audit trail",
    "api_token.create": "Made an API token", "api_token.revoke": "Revoked an API token",
    "submission.receive": "Received values to sign", "submission.record": "Recorded submitted values",
    "submission.withdraw": "Withdrew submitted values", "counter_file.import": "Imported a cell counter file",
}


@dataclass(frozen=True)
class Shown:
    """A stored value as a page shows it."""

    text: str
    #: The whole value when ``text`` is shortened, for a <details>.
    full: str | None = None
    #: An identity code: set in the code font, never wrapped.
    code: bool = False
    #: The stored value when ``text`` names what it refers to (an id), for a title.
    stored: str | None = None
    #: Nothing to show: an empty or redacted value.
    muted: bool = False
    #: A time, which never wraps.
    moment: bool = False


@dataclass(frozen=True)
class Entry:
    """One entry of the trail in words: who by name, the action, the record named, what changed."""

    id: int
    hash: str
    occurred_at: datetime
    who: str
    username: str
    role: str | None
    action: str
    action_words: str
    operation: str
    record_kind: str
    record: Shown
    batch_number: str | None
    #: An update: the field in words, its old and new value.
    field: str | None = None
    old: Shown | None = None
    new: Shown | None = None
    #: An insert: its content as (field in words, value) pairs.
    fields: Sequence[tuple[str, Shown]] = ()
    reason: str | None = None
    #: The API token the action came through (its label), None for the pages and the command line.
    via: str | None = None


@cache
def references() -> dict[tuple[str, str], str]:
    """(table, column) of each audited foreign key to the table it names, for tables in NAMES."""
    found = {}
    for table in Base.metadata.tables.values():
        for column in table.columns:
            for key in column.foreign_keys:
                if key.column.table.name in NAMES:
                    found[(table.name, column.name)] = key.column.table.name
    return found


def readable(entries: Iterable[Row[Any]]) -> list[Entry]:
    """``entries`` (rows of ``page``) in words. Every id they refer to is looked up at once:
    one query, however many entries, people or records they name."""
    entries = list(entries)
    refs = references()
    contents = {e.id: _content(e) for e in entries}
    wanted: dict[str, set[int]] = {"users": {e.actor_id for e in entries if e.actor_id is not None}}

    def want(table: str | None, value: str | None) -> None:
        if table and value and value.isdigit() and len(value) < 19:
            wanted.setdefault(table, set()).add(int(value))

    for e in entries:
        if e.table_name in NAMES:
            want(e.table_name, e.row_id)
        if e.operation == "update":
            want(refs.get((e.table_name, e.field or "")), e.old_value)
            want(refs.get((e.table_name, e.field or "")), e.new_value)
        for column, value in contents[e.id].items():
            want(refs.get((e.table_name, column)), value)
    names = _names({table: ids for table, ids in wanted.items() if ids})
    users = names.get("users", {})
    return [_entry(e, contents[e.id], refs, names, users) for e in entries]


def _names(wanted: dict[str, set[int]]) -> dict[str, dict[int, Any]]:
    """The rows naming ``wanted`` ids of each table, in one query (a UNION ALL of one select per table)."""
    width = max(len(columns) for columns, _, _ in NAMES.values())
    selects = []
    for table, ids in sorted(wanted.items()):
        columns = NAMES[table][0]
        source = Base.metadata.tables[table]
        texts = [cast(source.c[c], String) for c in columns] + [cast(null(), String)] * (width - len(columns))
        selects.append(select(cast(literal(table), String).label("source"), cast(source.c.id, BigInteger).label("id"),
                              *(text.label(f"c{n}") for n, text in enumerate(texts)))
                       .where(source.c.id.in_(sorted(ids))))
    found: dict[str, dict[int, Any]] = {}
    if not selects:
        return found
    for row in db.session.execute(union_all(*selects)):
        columns = NAMES[row.source][0]
        found.setdefault(row.source, {})[row.id] = SimpleNamespace(
            **{column: row[2 + n] for n, column in enumerate(columns)})
    return found


def _content(e: Row[Any]) -> dict[str, str | None]:
    """An insert's stored content (JSON of column: text), or nothing if it is not such JSON."""
    if e.operation != "insert" or not e.new_value:
        return {}
    try:
        content = json.loads(e.new_value)
    except ValueError:
        return {}
    if not isinstance(content, dict):
        return {}
    return {str(k): v if v is None or isinstance(v, str) else json.dumps(v) for k, v in content.items()}


def _entry(e: Row[Any], content: dict[str, str | None], refs: dict[tuple[str, str], str],
           names: dict[str, dict[int, Any]], users: dict[int, Any]) -> Entry:
    actor = users.get(e.actor_id) if e.actor_id is not None else None

    def value(column: str | None, text: str | None) -> Shown:
        return _shown(text, refs.get((e.table_name, column or "")), names)

    record = _shown(e.row_id, e.table_name if e.table_name in NAMES else None, names)
    if record.stored is None:
        record = Shown(f"#{e.row_id}")
    common = {"id": e.id, "hash": e.hash, "occurred_at": e.occurred_at,
              "who": actor.full_name if actor else ("the system" if e.actor_id is None else e.actor_username),
              "username": e.actor_username, "role": ROLE_WORDS.get(actor.role, actor.role) if actor else None,
              "action": e.action, "action_words": action_words(e.action), "operation": e.operation,
              "record_kind": TABLE_WORDS.get(e.table_name, e.table_name.replace("_", " ").capitalize()),
              "record": record, "batch_number": e.batch_number, "reason": e.reason, "via": e.via}
    if e.operation == "update" or e.field:
        label = field_words(e.field or "", (e.table_name, e.field or "") in refs)
        return Entry(**common, field=label, old=value(e.field, e.old_value), new=value(e.field, e.new_value))
    if not content and e.new_value:
        return Entry(**common, fields=(("Content", _shown(e.new_value, None, names)),))
    fields = tuple((field_words(column, (e.table_name, column) in refs), value(column, text))
                   for column, text in content.items() if column != "id")
    return Entry(**common, fields=fields)


def _shown(text: str | None, table: str | None, names: dict[str, dict[int, Any]]) -> Shown:
    if text is None or text == "":
        return Shown("empty", muted=True)
    if text == REDACTED:
        return Shown(REDACTED, muted=True)
    if table and text.isdigit():
        row = names.get(table, {}).get(int(text))
        if row is not None:
            return Shown(NAMES[table][1](row), code=NAMES[table][2], stored=text)
        return Shown(f"#{text}")
    if ISO_MOMENT.fullmatch(text):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return Shown(format_datetime(moment, lab_timezone()), stored=text, moment=True)
    if CODE_LIKE.fullmatch(text):
        return Shown(text, code=True)
    if text in ("true", "false"):
        return Shown("yes" if text == "true" else "no")
    if len(text) > SHORT or any(len(word) > LONG_WORD for word in text.split()):
        return Shown(_shortened(text), full=text)
    return Shown(text)


def _shortened(text: str) -> str:
    """The start of ``text``, cut at a word boundary (a long word, such as a hash, at 12 characters)."""
    words, length = [], 0
    for word in text.split():
        if len(word) > LONG_WORD:
            words.append(word[:12])
            break
        if length + len(word) > SHORT - 12:
            break
        words.append(word)
        length += len(word) + 1
    return (" ".join(words) or text[:12]) + "…"


def field_words(column: str, reference: bool = False) -> str:
    """A column name in words: ``downloaded_by_id`` → "Downloaded by"."""
    if reference and column.endswith("_id"):
        column = column[:-3]
    words = column.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


#: What each kind of download (lab.services.downloads.KINDS) is, in words.
DOWNLOAD_WORDS = {
    "record": "the executed batch record", "coa": "the certificate of analysis",
    "rfic": "the release-for-infusion certificate", "audit_export": "an audit-trail export",
    "record_export": "a records export", "lot_label": "a lot label", "equipment_label": "an equipment label",
    "coi-report": "a chain-of-identity report", "shipper_label": "a shipper label",
}


def action_words(action: str) -> str:
    """An action name in words: ``step.verify`` → "Verified a step"; an unlisted one spelled out."""
    if action in ACTION_WORDS:
        return ACTION_WORDS[action]
    subject, _, verb = action.partition(".")
    if subject == "download":
        return f"Downloaded {DOWNLOAD_WORDS.get(verb, verb.replace('_', ' '))}"
    text = f"{subject.replace('_', ' ')}: {verb.replace('_', ' ')}" if verb else subject.replace("_", " ")
    return text[:1].upper() + text[1:]
