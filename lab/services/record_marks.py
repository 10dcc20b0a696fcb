"""What a batch's record looks like at a moment, named by one number: its mark.

Every change to anything in a batch's record (its steps, values, containers, custody, results,
deviations, decisions, signatures, shipments) writes an audit entry carrying the batch's id,
in the same transaction, under the chain-head lock that hands out ids in order. So the id of a
batch's newest audit entry changes whenever its record does, and only grows: it is the record's
version, wider than ``Batch.version`` (which only counts changes to the batch row itself).

What is derived from a batch's record alone (a dashboard row, a chart, a page section) is kept
in a :class:`PerMark` cache keyed by the batch's id and mark, so a changed record is never shown
from the cache: its new mark misses and the value is derived again. Read the mark *before*
loading what the value is derived from; a change committed in between is then in the loaded
data, and the value is stored under the older mark, which the next request no longer asks for.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from threading import Lock
from typing import Generic, TypeVar

from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditEvent

T = TypeVar("T")


def marks(batch_ids: Iterable[int]) -> dict[int, int]:
    """Each batch's mark, in one query (index ``ix_audit_events_batch_id_id``: one seek a batch).
    A batch without any audit entry (none exists in practice: its insert is audited) gets 0."""
    ids = sorted(set(batch_ids))
    if not ids:
        return {}
    found = dict(db.session.execute(select(AuditEvent.batch_id, func.max(AuditEvent.id))
                                    .where(AuditEvent.batch_id.in_(ids)).group_by(AuditEvent.batch_id)).tuples())
    return {batch_id: found.get(batch_id) or 0 for batch_id in ids}


def mark(batch_id: int) -> int:
    return marks([batch_id])[batch_id]


class PerMark(Generic[T]):
    """A bounded cache of values derived from one batch's record at one mark, per process.

    Keys are ``(batch_id, mark, *extra)``: ``extra`` names whatever else the value depends on
    (a role, a definition version). Least recently used values go first past ``size``.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[tuple[Hashable, ...], T] = OrderedDict()
        self._lock = Lock()

    def get(self, batch_id: int, batch_mark: int, make: Callable[[], T], *extra: Hashable) -> T:
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

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
