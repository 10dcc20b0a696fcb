"""Checks behind ``flask --app lab verify-audit``: is the trail the one the application wrote,
and does every signature still match what it signs?

Chain: entries are read in id order, ten thousand at a time (constant memory). An entry whose
content no longer gives its hash was edited; one whose ``prev_hash`` is not the previous
entry's hash follows a deleted, inserted or rewritten entry; the chain head must name the
last entry, which catches entries deleted from or added to the end.

Signatures: the application changes signed content only by a correction, and signs the
corrected record (meaning "corrected"). So the rule is: a record's latest signature must
match the record, and an earlier signature may stop matching only if a later "corrected"
signature of the same record follows it. Those are information (the record shows them as
no longer matching); any other mismatch, or a signature whose record is gone, means the
signed record was changed in the database. Each signature is hashed as it was made
(``Signature.hash_scheme``): those made before the hash covered every field a reader relies
on are checked over the narrower content they were made on.

The trail records every signature as it was made: one whose row is missing, or differs from
that entry (say a hash recomputed to match a changed record), was deleted or rewritten.

Decisions: a batch in a state only a signed decision leads to (released, shipped, rejected)
needs such a decision with a matching signature of the decision's meaning.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Dialect, func, select, text
from sqlalchemy.orm import selectinload

from lab.audit import as_text
from lab.audit_chain import CANONICAL_ORDER, GENESIS, HEAD_ID, canonical_values
from lab.extensions import db
from lab.models import AuditChainHead, AuditEvent, Batch, Deviation, Disposition, QcResult, Signature, StepEntry
from lab.models.patients import WeightCorrection
from lab.services.progress import definition_for
from lab.services.signatures import HASH_SCHEMES, RECORD_TYPES, Signable, digest, record_batch_id
from workflows.model import DecisionSpec, ProcessDefinition

CHUNK = 1000
#: Entries read at a time by the chain walk.
TRAIL_CHUNK = 10_000
#: Problems listed in full; the rest are counted.
SHOWN = 20


@dataclass
class Findings:
    """Problems found (in the order found, the first few in full) and their number."""

    problems: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.problems) < SHOWN:
            self.problems.append(message)


@dataclass
class ChainReport:
    entries: int = 0
    last_id: int = 0
    last_hash: str = GENESIS
    findings: Findings = field(default_factory=Findings)


@dataclass
class SignatureReport:
    checked: int = 0
    #: Signatures that no longer match because a later signed correction changed their record.
    superseded: int = 0
    #: Signatures checked against their record that do not match it (each also a finding).
    mismatched: int = 0
    findings: Findings = field(default_factory=Findings)


@dataclass
class DecisionReport:
    #: Batches whose state was checked against their signed decisions.
    checked: int = 0
    findings: Findings = field(default_factory=Findings)


def verify_chain() -> ChainReport:
    """Walk the whole trail and compare its end with the chain head.

    The head is read after the walk: a legitimate append commits its entries and the head
    together, so entries seen before the head was read and beyond it were not written by
    the application. Entries appended while the walk ran are walked too.
    """
    report = ChainReport()
    _walk(report)
    head = _head()
    while head is not None and head.last_id > report.last_id and _walk(report):
        head = _head()
    findings = report.findings
    if head is None:
        if report.entries:
            findings.add("The chain head is missing: it was deleted in the database.")
    elif head.last_id < report.last_id:
        first = db.session.scalar(select(func.min(AuditEvent.id)).where(AuditEvent.id > head.last_id))
        findings.add(f"Entry {first}: added after the last entry the application wrote (entry {head.last_id}): "
                     "inserted in the database.")
    elif head.last_id > report.last_id:
        findings.add(f"Entry {head.last_id}: missing. The trail ends at entry {report.last_id}, but the "
                     f"application's last entry was {head.last_id}: entries were deleted from its end.")
    elif head.last_hash != report.last_hash:
        findings.add(f"Entry {head.last_id}: its hash is not the one the application recorded for the last "
                     "entry: the entry or the chain head was rewritten in the database.")
    return report


def _head() -> Any:
    return db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)
                              .where(AuditChainHead.id == HEAD_ID)).one_or_none()


def _walk(report: ChainReport) -> int:
    """Check the entries after ``report.last_id``; return how many there were.

    Read by a textual query (no ORM, no type processing), only the hashed columns, in
    CANONICAL_ORDER: the values go to the hash as read, with no model or mapping per entry."""
    walked = 0
    connection = db.session.connection()
    time_text = _time_text(connection.dialect)
    while rows := connection.execute(_NEXT_ENTRIES if report.entries else _FIRST_ENTRIES,
                                     {"after": report.last_id}).all():
        for row in rows:
            values = list(row)
            stored_hash = values.pop()
            values[_AT] = time_text(values[_AT])
            _check_entry(report, values[_ID], values[_PREV], stored_hash,
                         hashlib.sha256(canonical_values(values)).hexdigest())
        walked += len(rows)
    return walked


_COLUMNS = ", ".join((*CANONICAL_ORDER, "hash"))
_FIRST_ENTRIES = text(f"SELECT {_COLUMNS} FROM audit_events ORDER BY id LIMIT {TRAIL_CHUNK}")
_NEXT_ENTRIES = text(f"SELECT {_COLUMNS} FROM audit_events WHERE id > :after ORDER BY id LIMIT {TRAIL_CHUNK}")
_ID, _PREV, _AT = (CANONICAL_ORDER.index(name) for name in ("id", "prev_hash", "occurred_at"))
#: How SQLite stores every ``occurred_at`` the application writes (SQLAlchemy's format, in UTC).
_SQLITE_TIME = re.compile(r"[1-9]\d{3}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def _time_text(dialect: Dialect) -> Callable[[Any], Any]:
    """What turns an ``occurred_at`` as the driver hands it into what canonical_values takes:
    the column's own reader (the ORM's datetime), except that SQLite's usual text is rewritten
    as the canonical text directly (the same text, without parsing and formatting a datetime)."""
    read = AuditEvent.__table__.c.occurred_at.type.dialect_impl(dialect).result_processor(dialect, None)
    assert read is not None  # UTCDateTime reads every value
    if dialect.name != "sqlite":
        return read

    def sqlite_time(value: Any) -> Any:
        if type(value) is str and _SQLITE_TIME.fullmatch(value):
            return f"{value[:10]}T{value[11:]}Z"
        return read(value)

    return sqlite_time


def _check_entry(report: ChainReport, entry_id: int, prev_hash: str, stored_hash: str, content_hash: str) -> None:
    """Check an entry whose content hashes to ``content_hash`` and follows the last one checked."""
    if prev_hash != report.last_hash:
        if not report.entries:
            where = "it starts the trail, but does not link to the start of the chain: entries before it were deleted"
        elif entry_id > report.last_id + 1 and report.last_id > 0:
            missing = (f"entry {report.last_id + 1} is" if entry_id == report.last_id + 2
                       else f"entries {report.last_id + 1} to {entry_id - 1} are")
            where = f"its link to entry {report.last_id} is broken, and {missing} missing: deleted"
        else:
            where = (f"its link to entry {report.last_id} is broken: that entry was rewritten or inserted, or "
                     "an entry between them deleted")
        report.findings.add(f"Entry {entry_id}: {where} in the database.")
    if content_hash != stored_hash:
        report.findings.add(f"Entry {entry_id}: its content does not match its hash: edited or inserted in the "
                            "database.")
    report.entries += 1
    report.last_id, report.last_hash = entry_id, stored_hash


# --- signatures -------------------------------------------------------------------------------

_LOAD: dict[type, tuple[Any, ...]] = {
    StepEntry: (selectinload(StepEntry.values), selectinload(StepEntry.batch), selectinload(StepEntry.performed_by)),
    QcResult: (selectinload(QcResult.batch), selectinload(QcResult.recorded_by)),
    Deviation: (selectinload(Deviation.batch),),
    Disposition: (selectinload(Disposition.batch), selectinload(Disposition.decided_by)),
    WeightCorrection: (selectinload(WeightCorrection.patient), selectinload(WeightCorrection.corrected_by)),
}


def verify_signatures() -> SignatureReport:
    """Check every signature against the record it signs, a hundred batches at a time, and
    against the trail's record of its making."""
    report = SignatureReport()
    for signatures in _signatures_in_chunks():
        _check_batch(report, signatures)
        db.session.expunge_all()  # constant memory: nothing of a checked chunk stays loaded
    _check_against_trail(report.findings)
    return report


def _signatures_in_chunks(batches: int = 100) -> Iterator[Sequence[Signature]]:
    """The signatures of ``batches`` batches at a time (each record's in the order they were
    made), then those of no batch: one query a chunk, and one per kind of record it signs."""
    after = 0
    while batch_ids := db.session.scalars(select(Batch.id).where(Batch.id > after).order_by(Batch.id)
                                          .limit(batches)).all():
        yield db.session.scalars(select(Signature).where(Signature.batch_id.in_(batch_ids))
                                 .order_by(Signature.batch_id, Signature.id)).all()
        after = batch_ids[-1]
    yield db.session.scalars(select(Signature).where(Signature.batch_id.is_(None)).order_by(Signature.id)).all()


def _check_batch(report: SignatureReport, signatures: Sequence[Signature]) -> None:
    by_record: dict[tuple[str, int], list[Signature]] = defaultdict(list)
    for signature in signatures:
        by_record[(signature.record_type, signature.record_id)].append(signature)
    records = _records(by_record)
    for (record_type, record_id), signed in by_record.items():
        report.checked += len(signed)
        record = records.get((record_type, record_id))
        if record is None or record_batch_id(record) != signed[0].batch_id:
            for signature in signed:
                report.mismatched += 1
                report.findings.add(f"Signature {signature.id}: the {record_type.replace('_', ' ')} {record_id} it "
                                    "signs is not in its batch: deleted or moved in the database.")
            continue
        current = {scheme: digest(record, scheme) for scheme in {s.hash_scheme for s in signed} if scheme in HASH_SCHEMES}
        for position, signature in enumerate(signed):
            if signature.content_sha256 == current.get(signature.hash_scheme):
                continue
            if signature.hash_scheme in current and any(later.meaning == "corrected"
                                                        for later in signed[position + 1:]):
                report.superseded += 1
            else:
                report.mismatched += 1
                report.findings.add(
                    f"Signature {signature.id} ({signature.meaning}, {signature.printed_name}, "
                    f"{signature.signed_at:%Y-%m-%d %H:%M:%S} UTC): the {record_type.replace('_', ' ')} {record_id} "
                    "it signs has changed with no signed correction since: changed in the database.")


def _records(by_record: dict[tuple[str, int], list[Signature]]) -> dict[tuple[str, int], Signable]:
    wanted: dict[str, list[int]] = defaultdict(list)
    for record_type, record_id in by_record:
        wanted[record_type].append(record_id)
    found: dict[tuple[str, int], Signable] = {}
    models = {name: model for model, name in RECORD_TYPES.items()}  # read now: SignedRecords register on import
    for record_type, ids in wanted.items():
        model = models.get(record_type)
        if model is None:
            continue
        records: Sequence[Any] = db.session.scalars(select(model).where(model.id.in_(ids))
                                                    .options(*_LOAD.get(model, ()))).all()
        found.update(((record_type, record.id), record) for record in records)
    return found


def _check_against_trail(findings: Findings) -> None:
    """Compare every signature the trail says was made with its row, a thousand at a time;
    then look for rows the trail never recorded (inserted in the database)."""
    table = AuditEvent.__table__
    recorded: set[int] = set()  # ids only: a few bytes a signature
    # One query, streamed: paging it by id would sort every signature entry again for each page.
    made_entries = db.session.execute(select(table.c.id, table.c.row_id, table.c.new_value)
                                      .where(table.c.table_name == Signature.__tablename__,
                                             table.c.operation == "insert")
                                      .order_by(table.c.id).execution_options(yield_per=CHUNK))
    for rows in made_entries.partitions():
        made = {int(row.row_id): row for row in rows if row.row_id.isdigit()}
        recorded.update(made)
        stored = {s.id: s for s in db.session.scalars(select(Signature).where(Signature.id.in_(made)))}
        for signature_id, row in made.items():
            _compare_with_trail(findings, signature_id, row.id, row.new_value, stored.get(signature_id))
        db.session.expunge_all()
    after = 0
    while rows := db.session.execute(select(Signature.id, Signature.meaning, Signature.printed_name,
                                            Signature.signed_at).where(Signature.id > after)
                                     .order_by(Signature.id).limit(CHUNK)).all():
        for row in rows:
            if row.id not in recorded:
                findings.add(f"Signature {row.id} ({row.meaning}, {row.printed_name}, "
                             f"{row.signed_at:%Y-%m-%d %H:%M:%S} UTC): the audit trail never recorded it being "
                             "made: inserted in the database.")
        after = rows[-1].id


def _compare_with_trail(findings: Findings, signature_id: int, entry_id: int, recorded: str | None,
                        signature: Signature | None) -> None:
    try:
        content = json.loads(recorded or "")
    except ValueError:
        return  # not the application's entry: the chain check names it
    if not isinstance(content, dict):
        return
    if signature is None:
        signed_at = str(content.get("signed_at", ""))[:19].replace("T", " ")
        findings.add(f"Signature {signature_id} ({content.get('meaning')}, {content.get('printed_name')}, "
                     f"{signed_at} UTC): the audit trail records it was made (entry {entry_id}), but it is "
                     "missing: deleted in the database.")
        return
    # Columns added since the signature was made (hash_scheme) are not in its entry: not compared.
    changed = [column.name for column in Signature.__table__.columns
               if column.name in content and as_text(getattr(signature, column.name)) != content[column.name]]
    if changed:
        findings.add(f"Signature {signature_id}: differs from what the audit trail recorded when it was made "
                     f"(entry {entry_id}): {', '.join(changed)} changed in the database.")


# --- decisions --------------------------------------------------------------------------------

def verify_decisions() -> DecisionReport:
    """Check that every batch's state is one its signed decisions support, a hundred batches at a time."""
    report = DecisionReport()
    after = 0
    while batches := db.session.scalars(select(Batch).where(Batch.id > after).order_by(Batch.id).limit(100)
                                        .options(selectinload(Batch.definition),
                                                 selectinload(Batch.dispositions)
                                                 .selectinload(Disposition.decided_by))).all():
        signed: dict[int, list[Signature]] = defaultdict(list)
        for signature in db.session.scalars(select(Signature).where(
                Signature.batch_id.in_([b.id for b in batches]), Signature.record_type == "disposition")):
            signed[signature.record_id].append(signature)
        for batch in batches:
            report.checked += 1
            problem = _unsupported_state(batch, definition_for(batch), signed)
            if problem:
                report.findings.add(problem)
        after = batches[-1].id
        db.session.expunge_all()
    return report


def _unsupported_state(batch: Batch, definition: ProcessDefinition, signed: dict[int, list[Signature]]) -> str | None:
    """Why ``batch``'s state is not supported by its decisions, or None. A state reached only
    by a decision needs one of its decisions with a signature of its meaning that still matches."""
    released = definition.release.released_states if definition.release else ()
    specs: list[DecisionSpec]
    if batch.state in released:
        specs, what = [d for d in definition.decisions if d.target in released], "release decision"
    elif any(t.target == batch.state for t in definition.transitions):
        return None
    else:
        specs = [d for d in definition.decisions if d.target == batch.state]
        what = " or ".join(f"'{spec.title}' decision" for spec in specs)
    if not specs:
        return None
    meanings = {spec.key: spec.meaning for spec in specs}
    for disposition in batch.dispositions:
        meaning = meanings.get(disposition.decision)
        if any(s.meaning == meaning and s.content_sha256 == digest(disposition, s.hash_scheme)
               for s in signed.get(disposition.id, [])):
            return None
    wanted = " or ".join(sorted({f"'{spec.meaning}'" for spec in specs}))
    return (f"Batch {batch.batch_number}: it is {batch.state.replace('_', ' ')}, but no {what} carries a valid "
            f"signature {wanted}: its state was set, or its decision or signature deleted or changed, in the "
            "database.")
