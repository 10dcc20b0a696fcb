"""The audit trail mechanism: every insert and update of an audited model, field by field.

Completeness comes from a session event, so no write path can forget the trail
(21 CFR 11.10(e)); meaning comes from the service, which wraps its writes in
``audit.action(name, actor=..., reason=...)``. A flush that changes audited rows outside
such a block is refused, as is any update or delete of append-only rows, or any delete
of an audited row. Entries are written on the flush's own connection, so they commit
or roll back with the change they describe, and chained (lab.audit_chain) under a lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from flask import g, has_request_context
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, UOWTransaction

from lab import audit_chain
from lab.exceptions import ImmutableRecordError
from lab.extensions import db
from lab.models import AppendOnly, Audited, AuditEvent, User, utcnow
from lab.models.base import simulated_now

_KEY = "audit_action"
REDACTED = "(redacted)"
#: The reason of an action recorded on seed-demo's simulated clock, or what follows its own reason.
DEMO_REASON = "Demo data (simulated clock)"
DEMO_MARK = " [demo data, simulated clock]"
#: The request attribute naming the API token a request came through (lab.api sets it): every
#: entry the request writes carries it as ``via``.
VIA = "audit_via"


@dataclass(frozen=True)
class Action:
    name: str
    actor: User | None  # None: the command line, acting as the system
    reason: str | None = None
    #: One time for every entry of the action: the clock's, never a time a caller passes.
    at: datetime = field(default_factory=utcnow, init=False)


@contextmanager
def action(name: str, *, actor: User | None, reason: str | None = None) -> Iterator[None]:
    """Attribute the writes inside the block to ``actor`` doing ``name`` (for ``reason``).

    The block's changes are flushed before it ends, so their entries carry this action.
    """
    session = db.session()
    previous = session.info.get(_KEY)
    session.info[_KEY] = Action(name, actor, _marked(reason))
    try:
        yield
        session.flush()
    finally:
        session.info[_KEY] = previous


def _marked(reason: str | None) -> str | None:
    """``reason``, said to be demo data when the action runs on the simulated clock: an
    inspector must never read a demo entry as one made at the time it shows."""
    if simulated_now() is None:
        return reason
    return reason + DEMO_MARK if reason else DEMO_REASON


def as_text(value: Any) -> str | None:
    """How a column value is written into the trail."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


@event.listens_for(Session, "before_flush")
def _refuse_rewriting_history(session: Session, context: UOWTransaction, instances: object) -> None:
    for obj in session.deleted:
        if isinstance(obj, (Audited, AuditEvent)):
            raise ImmutableRecordError(f"{type(obj).__name__} rows are never deleted.")
    for obj in session.dirty:
        if isinstance(obj, (AppendOnly, AuditEvent)) and session.is_modified(obj, include_collections=False):
            raise ImmutableRecordError(f"{type(obj).__name__} rows are append-only: record a correction.")


@event.listens_for(Session, "after_flush")
def _write_audit_entries(session: Session, context: UOWTransaction) -> None:
    rows = [*_insert_rows(session), *_update_rows(session)]
    if not rows:
        return
    current: Action | None = session.info.get(_KEY)
    if current is None:
        raise RuntimeError("Audited rows changed outside audit.action(): name the action.")
    actor_id = current.actor.id if current.actor else None
    actor_name = current.actor.username if current.actor else "system"
    via = g.get(VIA) if has_request_context() else None
    for row in rows:
        row.update(occurred_at=current.at, actor_id=actor_id, actor_username=actor_name,
                   action=current.name, reason=current.reason, via=via)
    audit_chain.append(session.connection(), rows)


def _columns(obj: Audited) -> Iterator[tuple[str, str]]:
    """(attribute key, column name) of each audited column of ``obj``."""
    mapper = inspect(obj).mapper
    for attr in mapper.column_attrs:
        if attr.key not in obj.__audit_ignore__:
            yield attr.key, attr.columns[0].name


def _base_row(obj: Audited, operation: str) -> dict[str, Any]:
    # Not inspect(obj).identity: in after_flush a just-inserted row has its key but no identity yet.
    identity = inspect(obj).mapper.primary_key_from_instance(obj)
    return {
        "operation": operation,
        "table_name": obj.__table__.name,  # type: ignore[attr-defined]
        "row_id": "/".join(str(part) for part in identity),
        "batch_id": obj.audit_batch_id,
    }


def _insert_rows(session: Session) -> Iterator[dict[str, Any]]:
    for obj in session.new:
        if not isinstance(obj, Audited):
            continue
        content = {
            name: REDACTED if key in obj.__audit_redact__ else as_text(getattr(obj, key))
            for key, name in _columns(obj)
        }
        yield {**_base_row(obj, "insert"), "field": None, "old_value": None,
               "new_value": json.dumps(content, sort_keys=True, ensure_ascii=False)}


def _update_rows(session: Session) -> Iterator[dict[str, Any]]:
    for obj in session.dirty:
        if not isinstance(obj, Audited):
            continue
        state = inspect(obj)
        for key, name in _columns(obj):
            history = state.attrs[key].history
            if not history.has_changes():
                continue
            old = history.deleted[0] if history.deleted else None
            new = history.added[0] if history.added else None
            if old == new:
                continue
            redact = key in obj.__audit_redact__
            yield {**_base_row(obj, "update"), "field": name,
                   "old_value": REDACTED if redact else as_text(old),
                   "new_value": REDACTED if redact else as_text(new)}
