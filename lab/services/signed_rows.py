"""Signed records as ``verify-audit`` reads them: the many kinds (step entries, QC results,
decisions) by Core queries into plain namespaces carrying the models' attribute names, which
the hash functions of lab.services.signatures read exactly as they read the models; the rare
kinds through the ORM. A facility has hundreds of thousands of signed records: building ORM
objects for them was most of the check's time.

A related row that is gone (a batch, a signer) reads as None, as the ORM's relationship would,
so a record's hash fails the same way either way.
"""

from __future__ import annotations

from collections import defaultdict, namedtuple
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Result, Table, select
from sqlalchemy.orm import Session, selectinload

from lab.models import Batch, Deviation, Disposition, QcResult, StepEntry, StepValue, User
from lab.models.patients import WeightCorrection
from lab.services.signatures import (
    RECORD_TYPES,
    digest,
    disposition_sha256,
    entry_sha256,
    record_batch_id,
    result_sha256,
)


@dataclass(frozen=True, slots=True)
class LoadedRecord:
    """A signed record as read: the batch it belongs to, and what ``hash`` reads to give the
    hash its signature made with a scheme must carry (a model or a namespace like one)."""

    batch_id: int | None
    content: Any
    hash: Callable[[Any, int], str]

    def digest(self, scheme: int) -> str:
        return self.hash(self.content, scheme)


#: The ORM loads for the kinds read as models.
_LOAD: dict[type, tuple[Any, ...]] = {
    Deviation: (selectinload(Deviation.batch),),
    WeightCorrection: (selectinload(WeightCorrection.patient), selectinload(WeightCorrection.corrected_by)),
}


def load_records(connection: Connection, session: Session, wanted: dict[str, list[int]]
                 ) -> dict[tuple[str, int], LoadedRecord]:
    """The records of each type with the ids given, by (record type, id); a type no model has
    and ids no row has are left out."""
    models = {name: model for model, name in RECORD_TYPES.items()}  # read now: SignedRecords register on import
    found: dict[tuple[str, int], LoadedRecord] = {}
    for record_type, ids in wanted.items():
        read = _READERS.get(record_type)
        if read is not None:
            found.update(((record_type, record_id), record) for record_id, record in read(connection, ids).items())
        elif (model := models.get(record_type)) is not None:
            records: list[Any] = list(session.scalars(select(model).where(model.id.in_(ids))
                                                      .options(*_LOAD.get(model, ()))))
            found.update(((record_type, record.id), LoadedRecord(record_batch_id(record), record, digest))
                         for record in records)
    return found


def _named_rows(connection: Connection, table: Table, ids: Collection[int], user_relation: str) -> list[Any]:
    """Rows of ``table`` as namespaces with their model's attribute names: their columns, their
    ``batch`` (its number) and ``user_relation`` (its username, from the column of that name
    with ``_id``); either is None when its row is gone."""
    batches, users = Batch.__table__, User.__table__
    query = (select(table, batches.c.batch_number.label("_batch_number"), users.c.username.label("_username"))
             .outerjoin(batches, batches.c.id == table.c.batch_id)
             .outerjoin(users, users.c.id == table.c[f"{user_relation}_id"])
             .where(table.c.id.in_(ids)))
    found = namespaces(connection.execute(query))
    for content in found:
        batch_number, username = content.__dict__.pop("_batch_number"), content.__dict__.pop("_username")
        content.batch = None if batch_number is None else SimpleNamespace(batch_number=batch_number)
        setattr(content, user_relation, None if username is None else SimpleNamespace(username=username))
    return found


def named_tuples(result: Result[Any]) -> list[Any]:
    """A result's rows as named tuples, for rows only read: as quick to read by attribute as a
    namespace (below), and several times quicker to make (a facility has hundreds of thousands
    of signatures and step values)."""
    return list(map(_row_class(tuple(result.keys()))._make, result.all()))


@lru_cache(maxsize=16)
def _row_class(keys: tuple[str, ...]) -> type:
    return namedtuple("SignedRow", keys)  # type: ignore[misc]  # the fields are the query's columns


def namespaces(result: Result[Any]) -> list[SimpleNamespace]:
    """A result's rows as namespaces: the hash functions read a value's attributes a dozen times
    or more, and a row's attribute is several times slower to read than a namespace's."""
    keys = tuple(result.keys())  # once: a row's own keys() builds a view each time
    return [SimpleNamespace(**dict(zip(keys, row, strict=True))) for row in result.all()]


def _step_entries(connection: Connection, ids: Collection[int]) -> dict[int, LoadedRecord]:
    """Step entries with their values (in id order, as ``StepEntry.values`` is ordered)."""
    values: dict[int, list[Any]] = defaultdict(list)
    table = StepValue.__table__
    for value in named_tuples(connection.execute(select(table).where(table.c.entry_id.in_(ids))
                                               .order_by(table.c.id))):
        values[value.entry_id].append(value)
    found = {}
    for content in _named_rows(connection, StepEntry.__table__, ids, "performed_by"):
        content.values = values.get(content.id, [])
        found[content.id] = LoadedRecord(content.batch_id, content, entry_sha256)
    return found


def _simple(table: Table, user_relation: str, hash_: Callable[[Any, int], str]
            ) -> Callable[[Connection, Collection[int]], dict[int, LoadedRecord]]:
    """A reader of records whose hash reads their columns, their batch and one user."""
    def read(connection: Connection, ids: Collection[int]) -> dict[int, LoadedRecord]:
        return {content.id: LoadedRecord(content.batch_id, content, hash_)
                for content in _named_rows(connection, table, ids, user_relation)}
    return read


_READERS: dict[str, Callable[[Connection, Collection[int]], dict[int, LoadedRecord]]] = {
    "step_entry": _step_entries,
    "qc_result": _simple(QcResult.__table__, "recorded_by", result_sha256),
    "disposition": _simple(Disposition.__table__, "decided_by", disposition_sha256),
}
