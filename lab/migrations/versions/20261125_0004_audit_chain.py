"""Hash-chained, append-only audit trail (issue: audit trail and batch record)

Chains the entries already recorded (in id order), adds the chain head and the indexes
the audit screens page with, and makes the database refuse
UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) of audit entries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

"""
import hashlib
import json
from datetime import UTC

import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

GENESIS = "0" * 64
# A frozen copy of lab.audit_chain's canonical form as of this revision.
HASHED_FIELDS = ("id", "prev_hash", "occurred_at", "actor_id", "actor_username", "action", "operation",
                 "table_name", "row_id", "field", "old_value", "new_value", "reason", "batch_id")
OLD_INDEXES = ("action", "actor_id", "batch_id", "occurred_at")
NEW_INDEXES = {
    "ix_audit_events_occurred_at_id": ["occurred_at", "id"],
    "ix_audit_events_batch_id_occurred_at": ["batch_id", "occurred_at", "id"],
    "ix_audit_events_actor_id_occurred_at": ["actor_id", "occurred_at", "id"],
    "ix_audit_events_action_occurred_at": ["action", "occurred_at", "id"],
    "ix_audit_events_table_name_occurred_at": ["table_name", "occurred_at", "id"],
}
TRIGGERS = {
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
DROP_TRIGGERS = {
    "postgresql": ("DROP TRIGGER audit_events_no_truncate ON audit_events",
                   "DROP TRIGGER audit_events_append_only ON audit_events",
                   "DROP FUNCTION audit_events_refuse_change()"),
    "sqlite": ("DROP TRIGGER audit_events_no_update", "DROP TRIGGER audit_events_no_delete"),
}


def _entry_hash(entry):
    content = {name: entry[name] for name in HASHED_FIELDS}
    content["occurred_at"] = content["occurred_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _chain_existing_entries():
    """Hash every entry recorded before this revision, oldest first; return the head."""
    events = sa.table(
        "audit_events", *(sa.column(name) for name in HASHED_FIELDS if name != "occurred_at"),
        sa.column("occurred_at", lab.extensions.UTCDateTime()), sa.column("hash"))
    connection = op.get_bind()
    last_id, last_hash = 0, GENESIS
    while True:
        rows = connection.execute(sa.select(events).where(events.c.id > last_id)
                                  .order_by(events.c.id).limit(1000)).mappings().all()
        if not rows:
            return last_id, last_hash
        changes = []
        for row in rows:
            entry = {**row, "prev_hash": last_hash}
            last_id, last_hash = row["id"], _entry_hash(entry)
            changes.append({"key": last_id, "prev": entry["prev_hash"], "hash": last_hash})
        connection.execute(events.update().where(events.c.id == sa.bindparam("key"))
                           .values(prev_hash=sa.bindparam("prev"), hash=sa.bindparam("hash")), changes)


def upgrade():
    op.create_table('audit_chain_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))

    last_id, last_hash = _chain_existing_entries()
    op.bulk_insert(sa.table("audit_chain_head", sa.column("id"), sa.column("last_id"), sa.column("last_hash")),
                   [{"id": 1, "last_id": last_id, "last_hash": last_hash}])

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        for column in OLD_INDEXES:
            batch_op.drop_index(f'ix_audit_events_{column}')
        for name, columns in NEW_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)

    for statement in TRIGGERS.get(op.get_bind().dialect.name, ()):
        op.execute(statement)


def downgrade():
    for statement in DROP_TRIGGERS.get(op.get_bind().dialect.name, ()):
        op.execute(statement)
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        for name in NEW_INDEXES:
            batch_op.drop_index(name)
        for column in OLD_INDEXES:
            batch_op.create_index(f'ix_audit_events_{column}', [column], unique=False)
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')
    op.drop_table('audit_chain_head')
