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

Parts: the chain is walked in stretches of ids and the signatures checked a hundred batches
at a time, each part on its own (in worker processes: lab.services.verify_workers); each
stretch's first link is checked as the stretches are joined in order, and every part's
findings are taken in order, so the findings, their order and their counts are the same
however many processes ran them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from hashlib import sha256
from itertools import islice, pairwise
from typing import Any

from sqlalchemy import Connection, Dialect, func, select
from sqlalchemy.orm import Session, selectinload

from lab.audit import as_text
from lab.audit_chain import CANONICAL_ORDER, GENESIS, HEAD_ID, canonical_values
from lab.extensions import db
from lab.models import AuditChainHead, AuditEvent, Batch, Disposition, Signature
from lab.services.progress import definition_for
from lab.services.signatures import HASH_SCHEMES, digest
from lab.services.signed_rows import load_records, named_tuples
from lab.services.verify_workers import run
from workflows.model import DecisionSpec, ProcessDefinition

CHUNK = 1000
#: Entries read at a time by the chain walk.
TRAIL_CHUNK = 10_000
#: Ids of entries a worker walks as one part of the chain.
TRAIL_STRETCH = 100_000
#: Batches whose signatures are checked together.
BATCH_CHUNK = 100
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

    def merge(self, later: Findings) -> None:
        """Add the findings of a part checked after these (its first few in full, as found)."""
        self.count += later.count
        self.problems.extend(later.problems[:SHOWN - len(self.problems)])


@dataclass
class ChainReport:
    entries: int = 0
    last_id: int = 0
    last_hash: str = GENESIS
    findings: Findings = field(default_factory=Findings)
    #: A stretch's walk: its first entry's id and ``prev_hash`` (its link is checked when joined).
    first: tuple[int, str] | None = None
    #: What comparing the signatures the trail records as made with their rows found (a signature check).
    made: Findings = field(default_factory=Findings)
    #: Ids of the signatures the trail records as made.
    recorded: list[int] = field(default_factory=list)


@dataclass
class SignatureReport:
    checked: int = 0
    #: Signatures that no longer match because a later signed correction changed their record.
    superseded: int = 0
    #: Signatures checked against their record that do not match it (each also a finding).
    mismatched: int = 0
    findings: Findings = field(default_factory=Findings)

    def merge(self, later: SignatureReport) -> None:
        self.checked += later.checked
        self.superseded += later.superseded
        self.mismatched += later.mismatched
        self.findings.merge(later.findings)


@dataclass
class DecisionReport:
    #: Batches whose state was checked against their signed decisions.
    checked: int = 0
    findings: Findings = field(default_factory=Findings)


def verify_audit(jobs: int = 1) -> tuple[ChainReport, SignatureReport, DecisionReport]:
    """Check the chain (:func:`verify_chain`), every signature against the record it signs and
    against the trail's record of its making, and every batch's state against its signed
    decisions (:func:`verify_decisions`): the chain's stretches and the batches' signatures in
    ``jobs`` worker processes, while this one checks decisions."""
    stretches, chunks = _stretches(), _batch_chunks()
    tasks: list[tuple[Callable[[Connection, Any], Any], Any]] = [
        *((_walk_stretch, stretch) for stretch in stretches), *((_check_batches, chunk) for chunk in chunks)]
    parts = run(_do, tasks, jobs)
    unbatched = _check_batches(db.session.connection(), None)
    decisions = verify_decisions()
    chain = _chain_end(_walked(islice(parts, len(stretches))))
    signatures = SignatureReport()
    for part in parts:
        signatures.merge(part)
    signatures.merge(unbatched)
    signatures.findings.merge(chain.made)
    _check_recorded(signatures.findings, set(chain.recorded))
    return chain, signatures, decisions


def _do(connection: Connection, task: tuple[Callable[[Connection, Any], Any], Any]) -> Any:
    work, argument = task
    return work(connection, argument)


def verify_chain(jobs: int = 1) -> ChainReport:
    """Walk the whole trail and compare its end with the chain head.

    The trail is walked in stretches of ids (in ``jobs`` processes), joined in order. The head
    is read after the walk: a legitimate append commits its entries and the head together, so
    entries seen before the head was read and beyond it were not written by the application.
    Entries appended while the walk ran are walked too.
    """
    return _chain_end(_walked(run(_walk_stretch, _stretches(), jobs)))


def _walked(stretches: Iterable[ChainReport]) -> ChainReport:
    report = ChainReport()
    for stretch in stretches:
        _join(report, stretch)
    return report


def _chain_end(report: ChainReport) -> ChainReport:
    """``report`` of the walk so far, carried on to the trail's end and compared with the chain head."""
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


def _stretches() -> list[tuple[int | None, int | None]]:
    """The trail's ids as it is now, cut into stretches (after, up to] of TRAIL_STRETCH ids."""
    first, last = db.session.execute(select(func.min(AuditEvent.id), func.max(AuditEvent.id))).one()
    if first is None:
        return []
    return [(None if after < first else after, min(after + TRAIL_STRETCH, last))
            for after in range(first - 1, last, TRAIL_STRETCH)]


def _walk(report: ChainReport) -> int:
    """Check the entries after ``report.last_id``; return how many there were."""
    stretch = _walk_stretch(db.session.connection(), (report.last_id if report.entries else None, None))
    _join(report, stretch)
    return stretch.entries


def _join(report: ChainReport, stretch: ChainReport) -> None:
    """Carry ``report`` on over the walk of the stretch that follows it: check the link of the
    stretch's first entry (the one thing its walk could not), then take its findings, in order."""
    if stretch.first is None:
        return
    entry_id, prev_hash = stretch.first
    _check_link(report, entry_id, prev_hash)
    report.findings.merge(stretch.findings)
    report.made.merge(stretch.made)
    report.recorded += stretch.recorded
    report.entries += stretch.entries
    report.last_id, report.last_hash = stretch.last_id, stretch.last_hash


def _walk_stretch(connection: Connection, stretch: tuple[int | None, int | None]) -> ChainReport:
    """The entries with ids in (after, up to] (None: no bound) checked, but for the link of the
    first, which the report names (``first``) for :func:`_join` to check; and the signatures
    those entries record as made compared with their rows (``made``, ``recorded``).

    Read through the driver's own cursor (no ORM, no result rows, no type processing), only the
    hashed columns, in CANONICAL_ORDER: the values go to the hash as read, with no model or
    mapping per entry."""
    after, upto = stretch
    report = ChainReport()
    first, walked, last_id, last_hash = None, 0, 0, ""  # locals: this loop runs for every entry
    made: list[tuple[int, int, str | None]] = []
    with closing(connection.connection.cursor()) as cursor:
        time_text = _time_text(connection.dialect, cursor)
        while rows := _entries(cursor, after, upto):
            for position, row in enumerate(rows):
                values = list(row)
                stored_hash = values.pop()
                values[_AT] = time_text(values[_AT])
                entry_id, prev_hash = values[_ID], values[_PREV]
                if first is None:
                    first = (entry_id, prev_hash)
                elif prev_hash != last_hash:
                    report.entries, report.last_id, report.last_hash = walked + position, last_id, last_hash
                    _check_link(report, entry_id, prev_hash)
                if sha256(canonical_values(values)).hexdigest() != stored_hash:
                    report.findings.add(f"Entry {entry_id}: its content does not match its hash: edited or "
                                        "inserted in the database.")
                if values[_TABLE] == "signatures" and values[_OPERATION] == "insert" and values[_ROW].isdigit():
                    made.append((entry_id, int(values[_ROW]), values[_NEW]))
                last_id, last_hash = entry_id, stored_hash
            walked += len(rows)
            after = last_id
            _compare_made(connection, made, report)
            made.clear()
    report.first, report.entries, report.last_id, report.last_hash = first, walked, last_id, last_hash
    return report


def _entries(cursor: Any, after: int | None, upto: int | None) -> list[Any]:
    """The next TRAIL_CHUNK entries after id ``after`` (None: from the first) up to ``upto``
    (None: to the last). The bounds are ints written into the query: no placeholder style to
    tell apart between drivers."""
    where = " AND ".join([*([] if after is None else [f"id > {int(after)}"]),
                          *([] if upto is None else [f"id <= {int(upto)}"])]) or "TRUE"
    cursor.execute(f"SELECT {_COLUMNS} FROM audit_events WHERE {where} ORDER BY id LIMIT {TRAIL_CHUNK}")
    return cursor.fetchall()


_COLUMNS = ", ".join((*CANONICAL_ORDER, "hash"))
_ID, _PREV, _AT, _TABLE, _OPERATION, _ROW, _NEW = (
    CANONICAL_ORDER.index(name)
    for name in ("id", "prev_hash", "occurred_at", "table_name", "operation", "row_id", "new_value"))
#: How SQLite stores every ``occurred_at`` the application writes (SQLAlchemy's format, in UTC).
_SQLITE_TIME = re.compile(r"[1-9]\d{3}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
#: How PostgreSQL writes a ``timestamptz`` in UTC as text (DateStyle ISO): fractional digits but
#: trailing zeros, none for a whole second.
_POSTGRES_TIME = re.compile(r"([1-9]\d{3}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\+00")


def _time_text(dialect: Dialect, cursor: Any) -> Callable[[Any], Any]:
    """What turns an ``occurred_at`` as ``cursor`` hands it into what canonical_values takes: the
    column's own reader (the ORM's datetime), except that the usual text of each database is
    rewritten as the canonical text directly (the same text, without parsing and formatting a
    datetime: a sixth of the walk). PostgreSQL's cursor is told to hand the column over as text;
    any other text is read as psycopg reads it, then by the column's reader."""
    read = AuditEvent.__table__.c.occurred_at.type.dialect_impl(dialect).result_processor(dialect, None)
    assert read is not None  # UTCDateTime reads every value
    if dialect.name == "sqlite":
        def sqlite_time(value: Any) -> Any:
            if type(value) is str and _SQLITE_TIME.fullmatch(value):
                return f"{value[:10]}T{value[11:]}Z"
            return read(value)
        return sqlite_time
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        from psycopg.adapt import Loader
        from psycopg.types.string import TextLoader

        timestamptz = cursor.adapters.types["timestamptz"].oid
        parse: Loader = cursor.adapters.get_loader(timestamptz, 0)(timestamptz, cursor)  # psycopg's own
        cursor.adapters.register_loader(timestamptz, TextLoader)

        def postgres_time(value: str) -> Any:
            if (found := _POSTGRES_TIME.fullmatch(value)) is not None:
                day, clock, fraction = found.groups()
                return f"{day}T{clock}.{(fraction or '').ljust(6, '0')}Z"
            return read(parse.load(value.encode()))
        return postgres_time
    return read


def _check_link(report: ChainReport, entry_id: int, prev_hash: str) -> None:
    """Check that the entry ``entry_id`` links to the last one checked."""
    if prev_hash == report.last_hash:
        return
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


# --- signatures -------------------------------------------------------------------------------

def _batch_chunks() -> list[tuple[int, int | None]]:
    """The batches, BATCH_CHUNK at a time in id order, each chunk as its ids (after, up to]; the
    last has no upper bound (batches made while the check runs are in it)."""
    numbered = (select(Batch.id, func.row_number().over(order_by=Batch.id).label("position"))
                .where(Batch.id > 0).subquery())
    ends = db.session.scalars(select(numbered.c.id).where(numbered.c.position % BATCH_CHUNK == 0)
                              .order_by(numbered.c.id)).all()
    bounds: list[int | None] = [0, *ends, None]
    return [(after, upto) for after, upto in pairwise(bounds) if after is not None]


def _check_batches(connection: Connection, batches: tuple[int, int | None] | None) -> SignatureReport:
    """Check the signatures of the batches with ids in (after, up to] (None: no upper bound),
    each record's in the order they were made; with ``batches`` None, those of no batch."""
    table = Signature.__table__
    if batches is None:
        query = select(table).where(table.c.batch_id.is_(None)).order_by(table.c.id)
    else:
        after, upto = batches
        ids = select(Batch.id).where(Batch.id > after)
        if upto is not None:
            ids = ids.where(Batch.id <= upto)
        query = select(table).where(table.c.batch_id.in_(ids)).order_by(table.c.batch_id, table.c.id)
    report = SignatureReport()
    with Session(bind=connection) as session:  # for the few kinds of record read as models
        _check_batch(report, named_tuples(connection.execute(query)), connection, session)
    return report


def _check_batch(report: SignatureReport, signatures: Sequence[Any], connection: Connection,
                 session: Session) -> None:
    by_record: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for signature in signatures:
        by_record[(signature.record_type, signature.record_id)].append(signature)
    wanted: dict[str, list[int]] = defaultdict(list)
    for record_type, record_id in by_record:
        wanted[record_type].append(record_id)
    records = load_records(connection, session, wanted)
    for (record_type, record_id), signed in by_record.items():
        report.checked += len(signed)
        record = records.get((record_type, record_id))
        if record is None or record.batch_id != signed[0].batch_id:
            for signature in signed:
                report.mismatched += 1
                report.findings.add(f"Signature {signature.id}: the {record_type.replace('_', ' ')} {record_id} it "
                                    "signs is not in its batch: deleted or moved in the database.")
            continue
        current = {scheme: _digest_or_none(record.digest, scheme) for scheme in {s.hash_scheme for s in signed}
                   if scheme in HASH_SCHEMES}
        if None in current.values():
            for signature in signed:
                report.mismatched += 1
                report.findings.add(f"Signature {signature.id}: the {record_type.replace('_', ' ')} {record_id} it "
                                    "signs names a signer or batch that is not there: deleted or changed in the "
                                    "database.")
            continue
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


def _compare_made(connection: Connection, made: list[tuple[int, int, str | None]], report: ChainReport) -> None:
    """Compare each signature the entries (id, signature id, recorded row) record as made with its row."""
    if not made:
        return
    signatures = Signature.__table__
    report.recorded += (signature_id for _, signature_id, _ in made)
    stored = {row.id: row for row in connection.execute(  # all at once: iterating a result fetches row by row
        select(signatures).where(signatures.c.id.in_({signature_id for _, signature_id, _ in made}))).all()}
    for entry_id, signature_id, recorded in made:
        _compare_with_trail(report.made, signature_id, entry_id, recorded, stored.get(signature_id))


def _check_recorded(findings: Findings, recorded: set[int]) -> None:
    """Look for signatures the trail never recorded being made (inserted in the database): their
    ids read a thousand at a time, the few not recorded then read in full."""
    after = 0
    while ids := db.session.scalars(select(Signature.id).where(Signature.id > after).order_by(Signature.id)
                                    .limit(CHUNK)).all():
        if unrecorded := [signature_id for signature_id in ids if signature_id not in recorded]:
            for row in db.session.execute(select(Signature.id, Signature.meaning, Signature.printed_name,
                                                 Signature.signed_at).where(Signature.id.in_(unrecorded))
                                          .order_by(Signature.id)):
                findings.add(f"Signature {row.id} ({row.meaning}, {row.printed_name}, "
                             f"{row.signed_at:%Y-%m-%d %H:%M:%S} UTC): the audit trail never recorded it being "
                             "made: inserted in the database.")
        after = ids[-1]


def _compare_with_trail(findings: Findings, signature_id: int, entry_id: int, recorded: str | None,
                        signature: Any) -> None:
    """Compare the signature's row (None: there is none) with the trail's entry of its making."""
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
    changed = [name for name, value in zip(_SIGNATURE_COLUMNS, signature, strict=True)
               if name in content and (value if type(value) is str else as_text(value)) != content[name]]
    if changed:
        findings.add(f"Signature {signature_id}: differs from what the audit trail recorded when it was made "
                     f"(entry {entry_id}): {', '.join(changed)} changed in the database.")


_SIGNATURE_COLUMNS = tuple(column.name for column in Signature.__table__.columns)


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
        if any(s.meaning == meaning and s.content_sha256 == _digest_or_none(partial(digest, disposition), s.hash_scheme)
               for s in signed.get(disposition.id, [])):
            return None
    wanted = " or ".join(sorted({f"'{spec.meaning}'" for spec in specs}))
    return (f"Batch {batch.batch_number}: it is {batch.state.replace('_', ' ')}, but no {what} carries a valid "
            f"signature {wanted}: its state was set, or its decision or signature deleted or changed, in the "
            "database.")


def _digest_or_none(hash_: Callable[[int], str], scheme: int) -> str | None:
    """A record's hash under ``scheme``, or None when a row the hash reads is gone (a signer or
    batch deleted behind the application): such a record matches no signature."""
    try:
        return hash_(scheme)
    except (AttributeError, TypeError):
        return None
