"""The audit trail: one row per inserted row or changed field, hash-chained, never updated or deleted.

The database refuses UPDATE and DELETE on ``audit_events`` (and TRUNCATE on PostgreSQL) by
trigger: the migration creates the triggers, and so does ``db.create_all()`` (the DDL below).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DDL, BigInteger, Index, Integer, String, Text, event, text
from sqlalchemy.orm import Mapped, mapped_column

from lab.extensions import Model

#: Entries that change a batch's record: all but the copies taken out (lab.services.record_marks.COPY_TABLES).
CHANGES = "table_name NOT IN ('downloads', 'issued_records')"


class AuditEvent(Model):
    """One entry of the trail. ``hash`` is the SHA-256 of the entry's content and
    ``prev_hash`` (lab.audit_chain documents the exact form); ids are handed out under the
    chain-head lock, so id order is chain order."""

    __tablename__ = "audit_events"
    # Every listing filters on one column and pages newest first by (occurred_at, id):
    # each index serves one filter and the ordering, so no page sorts or skips rows.
    __table_args__ = (
        Index("ix_audit_events_occurred_at_id", "occurred_at", "id"),
        Index("ix_audit_events_batch_id_occurred_at", "batch_id", "occurred_at", "id"),
        # A batch's newest entry that is not a copy taken out marks its record's version
        # (lab.services.record_marks), read from this index alone.
        Index("ix_audit_events_batch_id_id", "batch_id", "id", sqlite_where=text(CHANGES),
              postgresql_where=text(CHANGES)),
        Index("ix_audit_events_actor_id_occurred_at", "actor_id", "occurred_at", "id"),
        Index("ix_audit_events_action_occurred_at", "action", "occurred_at", "id"),
        Index("ix_audit_events_table_name_occurred_at", "table_name", "occurred_at", "id"),
    )

    # SQLite only auto-increments an INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    occurred_at: Mapped[datetime]
    actor_id: Mapped[int | None]
    #: Username at the time, kept even if the account is later renamed.
    actor_username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(8))  # insert / update
    table_name: Mapped[str] = mapped_column(String(64))
    row_id: Mapped[str] = mapped_column(String(64))
    field: Mapped[str | None] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    #: The API token the action came through (its label), None for the pages and the command line.
    via: Mapped[str | None] = mapped_column(String(128))
    batch_id: Mapped[int | None]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Model):
    """The one row (id 1) naming the newest entry of the trail. Appending locks it until
    the transaction ends, so concurrent writers queue instead of forking the chain; it also
    lets verify-audit notice entries deleted from, or added to, the end of the trail."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))


#: The triggers that make the database refuse to rewrite the trail, per dialect. The
#: migration 0004 creates the same ones (migrations keep their own frozen copy).
APPEND_ONLY_DDL = {
    "postgresql": (
        ("CREATE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
         "BEGIN RAISE EXCEPTION USING MESSAGE = 'audit_events is append-only: ' || TG_OP || ' refused'; END $$"),
        ("CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
         "FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()"),
        ("CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
         "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()"),
    ),
    "sqlite": (
        ("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
         "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END"),
        ("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
         "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END"),
    ),
}


def _create_triggers_with_the_table() -> None:
    for dialect, statements in APPEND_ONLY_DDL.items():
        for statement in statements:
            event.listen(AuditEvent.__table__, "after_create", DDL(statement).execute_if(dialect=dialect))


_create_triggers_with_the_table()
