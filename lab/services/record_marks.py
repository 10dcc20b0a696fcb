"""What a batch's record looks like at a moment, named by a mark.

Every change to anything in a batch's record (its steps, values, containers, custody, results,
deviations, decisions, signatures, shipments, submissions) writes an audit entry carrying the
batch's id, in the same transaction, under the chain-head lock that hands out ids in order. So
the id of a batch's newest audit entry changes whenever its record does, and only grows. Copies
taken out (downloads, issued records: ``COPY_TABLES``) describe a printout, not the batch, and do
not count. A correction of the patient's weight changes what the batch's record shows (the
weight, what is computed from it) and writes its entries under the patient, not the batch; it
moves each of the patient's batches' ``version`` instead. A batch's mark is the pair of both.

What is derived from a batch's record alone (a dashboard row, a page, a printed record's data)
is kept in the app's :class:`PerMark` caches keyed by the batch's id and mark, so a changed record
is never shown from a cache: its new mark misses and the value is derived again. Read the mark
*before* loading what the value is derived from; a change committed in between is then in the
loaded data, and the value is stored under the older mark, which the next request no longer
asks for.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from threading import Lock
from typing import Any, Generic, TypeVar

from flask import current_app
from sqlalchemy import ColumnElement, ScalarSelect, bindparam, select

from lab.extensions import db
from lab.models import AuditEvent, Batch

T = TypeVar("T")
#: (id of the batch's newest audit entry that is not a copy taken out, ``Batch.version``)
Mark = tuple[int, int]
#: Tables that log copies taken out of CellTrail: they describe a printout, not the batch,
#: so they stay out of the record's audit appendix and its mark (else every download would change them).
#: As ``lab.models.audit.CHANGES`` writes them, the condition of the index the marks are read from.
COPY_TABLES = ("downloads", "issued_records")


def newest_entry(batch_id: ColumnElement[int]) -> ScalarSelect[int | None]:
    """The id of the newest audit entry of the batch ``batch_id`` names that is not a copy taken
    out, as a column: the query that finds a batch (by its number, a container by its code) reads
    it too, walking the index ``ix_audit_events_batch_id_id`` down from the top (a copy or two at
    most are skipped), instead of a round trip of its own."""
    copies = bindparam("copy_tables", COPY_TABLES, expanding=True, literal_execute=True)  # as CHANGES, not bound
    return (select(AuditEvent.id).where(AuditEvent.batch_id == batch_id, AuditEvent.table_name.not_in(copies))
            .order_by(AuditEvent.id.desc()).limit(1).scalar_subquery())


def mark_of(entry: int | None, version: int) -> Mark:
    """A mark from a row read with :func:`newest_entry` and ``Batch.version``."""
    return entry or 0, version


def mark(batch_id: int) -> Mark:
    """The mark of the existing batch ``batch_id``, in one query of one index walk. Lists of
    batches read their marks in the query that lists them (:func:`newest_entry`)."""
    entry, version = db.session.execute(select(newest_entry(Batch.id), Batch.version)
                                        .where(Batch.id == batch_id)).one()
    return mark_of(entry, version)


class PerMark(Generic[T]):
    """A bounded cache of values derived from one batch's record at one mark, per process.

    Keys are ``(batch_id, mark, *extra)``: ``extra`` names whatever else the value depends on
    (a viewer's role, a container). Least recently used values go first past ``size``.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[tuple[Hashable, ...], T] = OrderedDict()
        self._lock = Lock()

    def get(self, batch_id: int, batch_mark: Mark, make: Callable[[], T], *extra: Hashable) -> T:
        key = (batch_id, batch_mark, *extra)
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def peek(self, batch_id: int, batch_mark: Mark, *extra: Hashable) -> T | None:
        """The value kept under this key, if any, without making it."""
        with self._lock:
            return self._values.get((batch_id, batch_mark, *extra))


def cache(name: str, size: int) -> PerMark[Any]:
    """The app's cache called ``name``: one per app, as two apps (tests, a restored copy) may
    reuse batch ids and marks for different records."""
    key = f"per_mark.{name}"
    kept: PerMark[Any] | None = current_app.extensions.get(key)
    if kept is None:  # made once: a dashboard asks for its rows' cache dozens of times a view
        kept = current_app.extensions.setdefault(key, PerMark(size))
    return kept
