"""The hash chain of the audit trail: how an entry's hash is computed, and appending under a lock.

Canonical form of an entry (what ``hash`` is the SHA-256 of, as lowercase hex): the UTF-8
bytes of the JSON object of its fields ``id``, ``prev_hash``, ``occurred_at``,
``actor_id``, ``actor_username``, ``action``, ``operation``, ``table_name``, ``row_id``,
``field``, ``old_value``, ``new_value``, ``reason`` and ``batch_id``, keys sorted, no
whitespace (separators ``,`` and ``:``), non-ASCII characters as themselves (not
``\\u`` escapes). Integers are JSON numbers, texts JSON strings, absent values ``null``;
``occurred_at`` is UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six decimals).
``prev_hash`` is the previous entry's ``hash``, or 64 zeros for the first entry. An entry made
through an API token also has the field ``via`` (the token's label); an entry without one has no
``via`` key at all, so entries written before the API existed keep their hashes.

Appends are serialized: the writer locks the one ``audit_chain_head`` row (SELECT ... FOR
UPDATE on PostgreSQL) and holds it until its transaction ends. On SQLite the flush that
produced the entries already holds the database's write lock when the head is read, which
serializes writers the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, event, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import Pool

from lab.exceptions import LabError
from lab.models import AuditChainHead, AuditEvent

GENESIS = "0" * 64
HASHED_FIELDS = ("id", "prev_hash", "occurred_at", "actor_id", "actor_username", "action", "operation",
                 "table_name", "row_id", "field", "old_value", "new_value", "reason", "batch_id")
HEAD_ID = 1
#: The hashed fields and ``via`` in the order of the canonical form (sorted: ``via`` comes last).
CANONICAL_ORDER = tuple(sorted((*HASHED_FIELDS, "via")))
_OBJECT_WITH_VIA = "{" + ",".join(f'"{name}":%s' for name in CANONICAL_ORDER) + "}"
_OBJECT = _OBJECT_WITH_VIA.replace(',"via":%s}', "}")


class ChainHeadMissing(LabError):
    """The trail has entries but no chain head: someone deleted it behind the application.
    Every write is refused until an administrator restores it (verify-audit says what is left)."""

    status = 503


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers (module docstring)."""
    return canonical_values([entry.get("via") if name == "via" else entry[name] for name in CANONICAL_ORDER])


def canonical_values(values: Sequence[Any]) -> bytes:
    """:func:`canonical` of an entry given as its values in CANONICAL_ORDER (a row read in that
    column order), ``occurred_at`` as a datetime or as its UTC text (:func:`utc_text`).

    The JSON object is written key by key in sorted order, each value by the encoder
    ``json.dumps`` itself uses: the same bytes as ``json.dumps(..., sort_keys=True)``, without
    building a dict per entry (the verifier hashes millions).
    """
    texts = [_json(value) for value in values]
    if values[-1] is None:  # no via: no key at all
        texts.pop()
        return (_OBJECT % tuple(texts)).encode("utf-8")
    return (_OBJECT_WITH_VIA % tuple(texts)).encode("utf-8")


def utc_text(when: datetime) -> str:
    """``occurred_at`` as the canonical form writes it: ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC."""
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    if when.year < 1000:  # strftime does not pad the year to four digits: keep its text
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.isoformat(timespec="microseconds")[:-6] + "Z"


def _json(value: Any) -> str:
    if type(value) is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    if type(value) is int:
        return repr(value)
    if isinstance(value, datetime):
        return f'"{utc_text(value)}"'
    return json.dumps(value, ensure_ascii=False)


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def append(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Number, chain and insert ``rows`` (every field of HASHED_FIELDS but the first two),
    leaving the chain head locked by this transaction until it commits or rolls back.

    The head is read (and locked) by a transaction's first append only: each append notes the
    head it moved to on the database connection, and the next append in the same transaction
    chains after it. The note is dropped whenever the connection commits or rolls back, to a
    savepoint too (:func:`_forget_head`). It lives on the connection, not on a session, because
    sessions sharing one connection (in-memory SQLite) append to one chain."""
    last_id, last_hash = connection.info.get(_HEAD) or _lock_head(connection)
    for row in rows:
        last_id += 1
        row.update(id=last_id, prev_hash=last_hash)
        row["hash"] = last_hash = entry_hash(row)
    connection.execute(_INSERT, rows)
    connection.execute(_MOVE_HEAD, {"new_id": last_id, "new_hash": last_hash})
    connection.info[_HEAD] = last_id, last_hash


@event.listens_for(Engine, "commit")
@event.listens_for(Engine, "rollback")
@event.listens_for(Engine, "rollback_savepoint")
def _forget_head(connection: Connection, *args: Any) -> None:
    """The head noted on ``connection`` holds only inside the transaction that moved it: a commit
    ends its lock, a rollback (to a savepoint too) takes the entries and the move back."""
    connection.info.pop(_HEAD, None)


@event.listens_for(Pool, "reset")
def _forget_head_on_reset(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
    """A connection given back to the pool mid-transaction is rolled back by the pool itself."""
    record.info.pop(_HEAD, None)


#: Connection.info key: the (last id, last hash) this connection's transaction moved the head to.
_HEAD = "audit_chain_head"
_INSERT = insert(AuditEvent)
_MOVE_HEAD = (update(AuditChainHead).where(AuditChainHead.id == HEAD_ID)
              .values(last_id=bindparam("new_id"), last_hash=bindparam("new_hash")))
_LOCK_HEAD = (select(AuditChainHead.last_id, AuditChainHead.last_hash).where(AuditChainHead.id == HEAD_ID)
              .with_for_update())


def _lock_head(connection: Connection) -> tuple[int, str]:
    head = connection.execute(_LOCK_HEAD).one_or_none()
    if head is None:
        if connection.scalar(select(exists().select_from(AuditEvent))):
            raise ChainHeadMissing("The audit trail's chain head is missing: nothing was saved. "
                                   "Run `flask --app lab verify-audit` and call your administrator.")
        # A new trail. A concurrent first writer's row wins; this one then waits on it.
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(dialect.insert(AuditChainHead).values(id=HEAD_ID, last_id=0, last_hash=GENESIS)
                           .on_conflict_do_nothing())
        head = connection.execute(_LOCK_HEAD).one()
    return head.last_id, head.last_hash
